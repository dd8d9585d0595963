"""Benchmark: admission latency per object with Gatekeeper's whole general library loaded, and audit throughput
over 10,000 objects. Reads the library from ../shared/testdata (as the tests do)."""

from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from rheostat.policy import Inventory, PolicyError, PolicySet
from rheostat.policy.suites import find_cases

LIBRARY = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "gatekeeper-library" / "general"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def load() -> tuple[PolicySet, list[dict[str, Any]], list[str]]:
    """Every template and constraint of the library in one PolicySet (templates the engine refuses are left
    out and named), and every sample object."""
    templates: dict[str, dict[str, Any]] = {}
    constraints: dict[tuple[str, str], dict[str, Any]] = {}
    objects: dict[str, dict[str, Any]] = {}
    for case in find_cases(LIBRARY):
        for d in _docs(case.template):
            templates[d["metadata"]["name"]] = d
        for d in _docs(case.constraint):
            constraints[(d["kind"], d["metadata"]["name"])] = d
        for d in _docs(case.object):
            objects[str(case.object)] = d
    refused: list[str] = []
    while True:
        try:
            policies = PolicySet.from_documents([*templates.values(), *constraints.values()])
            return policies, list(objects.values()), refused
        except PolicyError as exc:
            name = exc.source.split()[-1]
            if name not in templates:
                raise
            kind = templates.pop(name)["spec"]["crd"]["spec"]["names"]["kind"]
            constraints = {k: v for k, v in constraints.items() if k[0] != kind}
            refused.append(name)


def run(audit_objects: int = 10_000, rounds: int = 20) -> dict[str, Any]:
    policies, objects, refused = load()
    latencies: list[float] = []
    for _ in range(rounds):
        for obj in objects:
            t0 = time.perf_counter()
            policies.evaluate([obj])
            latencies.append((time.perf_counter() - t0) * 1000)
    latencies.sort()
    many = []
    for i in range(audit_objects):
        obj = copy.deepcopy(objects[i % len(objects)])
        obj.setdefault("metadata", {})["name"] = f"{obj.get('metadata', {}).get('name', 'obj')}-{i}"
        many.append(obj)
    t0 = time.perf_counter()
    found = policies.evaluate(many, inventory=Inventory(many))
    audit_s = time.perf_counter() - t0
    return {
        "constraints": len(policies.constraints) if hasattr(policies, "constraints") else None,
        "objects": len(objects),
        "refused": refused,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))],
        "mean_ms": statistics.fmean(latencies),
        "audit_objects": audit_objects,
        "audit_s": audit_s,
        "audit_findings": len(found),
    }


def main() -> dict[str, Any] | None:
    if not LIBRARY.is_dir():
        print(f"(skipped: the Gatekeeper library is not at {LIBRARY})")
        return None
    r = run()
    print(
        f"library: {r['objects']} sample objects; templates the engine refuses, left out: "
        f"{', '.join(r['refused']) or 'none'}\n"
    )
    print("| admission, per object (whole library) p50 | p99 | mean | audit of 10,000 objects | findings |")
    print("|---|---|---|---|---|")
    print(
        f"| {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | {r['mean_ms']:.2f} ms | {r['audit_s']:.1f} s "
        f"({r['audit_objects'] / r['audit_s']:,.0f} objects/s) | {r['audit_findings']:,} |"
    )
    return r


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
