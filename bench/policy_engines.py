"""Benchmark: which Rego engine runs Gatekeeper's general library, how many cases pass, how fast.

Every case of every `suite.yaml` under ../shared/testdata/gatekeeper-library/general/ runs through the same
PolicySet (matching, input building, CEL for templates that have it), once per Rego engine:

- `regorus`: Microsoft's Rust engine through PyPI `gordon-to-regorus` (imported as `regorus`), in v0 mode;
- `regopy`: rego-cpp's Python binding (PyPI `regopy`), which parses Rego v1 only; skipped if not installed.

Time per evaluation is one `PolicySet.evaluate([object])` of a compiled case (one constraint), repeated.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rheostat.policy.engine import PolicySet
from rheostat.policy.inventory import Inventory
from rheostat.policy.rego import RegoCompiler, RegoError, RegoProgram, Regorus
from rheostat.policy.suites import Case, build, find_cases, run_case
from rheostat.policy.violation import PolicyError

LIBRARY = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "gatekeeper-library" / "general"
REPEAT = 50


class RegopyProgram:
    def __init__(self, interpreter: Any, query: str) -> None:
        self._interpreter = interpreter
        self._query = query
        self._data_json: str | None = None

    def violations(self, input_json: str, data_json: str) -> list[Any]:
        if data_json != self._data_json:
            self._interpreter.add_data_json(data_json)
            self._data_json = data_json
        self._interpreter.set_input_term(input_json)
        try:
            output = self._interpreter.query(self._query)
        except Exception as exc:  # regopy raises RegoError for engine errors
            raise RegoError(str(exc)) from exc
        text = str(output)
        if not output.ok():
            raise RegoError(text)
        if text == "undefined":
            return []
        value = json.loads(text)["expressions"][0]
        if not isinstance(value, list):
            raise RegoError(f"violation is not a set: {text:.200}")
        return value


class Regopy:
    name = "regopy"

    def __init__(self, module: Any) -> None:
        self._module = module

    def compile(self, label: str, rego: str, libs: list[str]) -> RegoProgram:
        found = re.search(r"^\s*package\s+([\w.]+)", rego, re.MULTILINE)
        if found is None:
            raise RegoError("no package")
        interpreter = self._module.Interpreter()
        try:
            interpreter.add_module(label, rego)
            for i, lib in enumerate(libs):
                interpreter.add_module(f"{label}.lib{i}", lib)
        except Exception as exc:
            raise RegoError(str(exc)) from exc
        return RegopyProgram(interpreter, f"data.{found.group(1)}.violation")


def _compilers() -> list[tuple[str, RegoCompiler | None]]:
    out: list[tuple[str, RegoCompiler | None]] = [("regorus (gordon-to-regorus, v0)", Regorus())]
    try:
        out.append(("regopy (rego-cpp)", Regopy(importlib.import_module("regopy"))))
    except ImportError:
        out.append(("regopy (rego-cpp)", None))
    return out


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _time_case(case: Case, policies: PolicySet) -> list[float]:
    objects = [json.loads(json.dumps(_load_one(case)))]
    inventory = Inventory(_load_inventory(case))
    times = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        policies.evaluate(objects, inventory=inventory)
        times.append(time.perf_counter() - start)
    return times


def _load_one(case: Case) -> dict[str, Any]:
    import yaml

    docs = [d for d in yaml.safe_load_all(case.object.read_text(encoding="utf-8")) if d is not None]
    return dict(docs[0])


def _load_inventory(case: Case) -> list[dict[str, Any]]:
    import yaml

    return [
        d for p in case.inventory for d in yaml.safe_load_all(p.read_text(encoding="utf-8")) if d is not None
    ]


def measure(compiler: RegoCompiler) -> dict[str, Any]:
    cases = list(find_cases(LIBRARY))
    passed = refused = errors = 0
    times: list[float] = []
    cel_times: list[float] = []
    failing: list[str] = []
    compile_s: list[float] = []
    for case in cases:
        start = time.perf_counter()
        try:
            policies = build(case, compiler)
        except PolicyError:
            refused += 1
            failing.append(case.id)
            continue
        compile_s.append(time.perf_counter() - start)
        result = run_case(case, policies)
        if result.passed:
            passed += 1
            uses_cel = any(t.engine == "CEL" for t in policies.templates.values())
            (cel_times if uses_cel else times).extend(_time_case(case, policies))
        else:
            failing.append(case.id)
            errors += any(v.kind == "error" for v in result.violations)
    ordered = sorted(times)
    return {
        "cases": len(cases),
        "passed": passed,
        "refused": refused,
        "errors": errors,
        "failing": failing,
        "mean_ms": statistics.fmean(times) * 1000 if times else float("nan"),
        "p50_ms": ordered[len(ordered) // 2] * 1000 if ordered else float("nan"),
        "p99_ms": ordered[int(len(ordered) * 0.99)] * 1000 if ordered else float("nan"),
        "compile_ms": statistics.fmean(compile_s) * 1000 if compile_s else float("nan"),
        "cel_mean_ms": statistics.fmean(cel_times) * 1000 if cel_times else float("nan"),
    }


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """regopy prints its parse errors from C++ to the process's stdout; keep them out of the table."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def main() -> None:
    if not LIBRARY.is_dir():
        print(f"gatekeeper library not found at {LIBRARY}")
        return
    print(f"gordon-to-regorus {_version('gordon-to-regorus')}, regopy {_version('regopy')}, ")
    print(f"cel-python {_version('cel-python')}; {REPEAT} evaluations of each passing case\n")
    print(
        "| Rego engine | cases passed | template refused | evaluation errors "
        "| per evaluation, Rego cases: mean / p50 / p99 | compile per case |"
    )
    print("|---|---|---|---|---|---|")
    details: list[tuple[str, list[str]]] = []
    cel_ms = float("nan")
    for label, compiler in _compilers():
        if compiler is None:
            print(f"| {label} | not installed | | | | |")
            continue
        with _quiet():
            m = measure(compiler)
        print(
            f"| {label} | {m['passed']}/{m['cases']} | {m['refused']} | {m['errors']} | "
            f"{m['mean_ms']:.3f} / {m['p50_ms']:.3f} / {m['p99_ms']:.3f} ms | {m['compile_ms']:.2f} ms |"
        )
        details.append((label, m["failing"]))
        if compiler.name == "regorus":
            cel_ms = m["cel_mean_ms"]
    print(f"\nCEL (cel-python, the requiredlabels cases): {cel_ms:.3f} ms mean per evaluation")
    for label, failing in details:
        print(f"\nfailing with {label} ({len(failing)}):")
        suites: dict[str, int] = {}
        for case_id in failing:
            suite = case_id.split("/")[0]
            suites[suite] = suites.get(suite, 0) + 1
        print(", ".join(f"{s} ({n})" for s, n in sorted(suites.items())) or "none")


if __name__ == "__main__":
    main()
