"""The kinds `get` lists: where the API serves each, its names (kubectl's aliases), its columns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rheostat.cli.output import age

Item = dict[str, Any]
Row = Callable[[Item], list[str]]


@dataclass(frozen=True)
class Kind:
    name: str  # singular, as `-o name` prints it
    plural: str
    aliases: tuple[str, ...]
    path: str | None  # the list endpoint under /api/v1; None: not served by this server
    namespaced: bool
    columns: tuple[str, ...]
    row: Row
    wide_columns: tuple[str, ...] = ()
    wide_row: Row = lambda _: []
    not_served: str = ""  # why, when path is None

    def names(self) -> tuple[str, ...]:
        return (self.name, self.plural, *self.aliases)

    def key(self, item: Item) -> str:
        if self.namespaced:
            return f"{item['metadata']['namespace']}/{item['metadata']['name']}"
        return str(item.get("key") or item.get("policy") or "")

    def short_name(self, item: Item) -> str:
        return str(item["metadata"]["name"]) if self.namespaced else self.key(item)

    def namespace(self, item: Item) -> str | None:
        return str(item["metadata"]["namespace"]) if self.namespaced else None


# -- canaries --------------------------------------------------------------------------------------------


def canary_row(it: Item) -> list[str]:
    st = it["status"]
    return [
        it["metadata"]["name"],
        it["strategy"],
        st["phase"],
        str(st["canaryWeight"]),
        str(st["failedChecks"]),
        str(st["iterations"]),
        st["message"],
    ]


def canary_wide(it: Item) -> list[str]:
    spec, st = it["spec"], it["status"]
    target = spec.get("targetRef", {})
    analysis = spec.get("analysis") or spec.get("canaryAnalysis") or {}
    return [
        f"{target.get('kind', '')}/{target.get('name', '')}",
        spec.get("provider") or "default",
        str(st["primaryWeight"]),
        analysis.get("interval", "60s"),
        age(st.get("lastTransitionTime")),
    ]


# -- workloads -------------------------------------------------------------------------------------------


def ready_count(group: Item | None) -> str:
    if not group:
        return "-"
    ready = sum(1 for r in group.get("replicas") or [] if r.get("ready"))
    return f"{ready}/{group.get('desired', 0)}"


def workload_row(it: Item) -> list[str]:
    st = it.get("status", {})
    return [
        it["metadata"]["name"],
        ", ".join(it.get("canaries", [])),
        ready_count(st.get("primary")),
        ready_count(st.get("canary")),
        str(st.get("revision", "-")),
    ]


def workload_wide(it: Item) -> list[str]:
    st = it.get("status", {})
    template = it.get("spec", {}).get("template", {})
    return [
        str(it.get("spec", {}).get("replicas", 1)),
        " ".join(str(a) for a in template.get("command", [])),
        "True" if st.get("managed") else "False",
        st.get("error", ""),
    ]


# -- sources and Kustomizations (Flux's columns) ---------------------------------------------------------


def ready_of(item: Item) -> Item:
    for c in item.get("status", {}).get("conditions", []):
        if c["type"] == "Ready":
            return dict(c)
    return {"status": "Unknown", "message": ""}


def gitops_row(revision: Callable[[Item], str]) -> Row:
    def row(it: Item) -> list[str]:
        st = it.get("status", {})
        suspended = it["spec"].get("suspend", False) or st.get("suspended", False)
        ready = ready_of(it)
        return [it["metadata"]["name"], ready["status"], revision(st), str(suspended), ready["message"]]

    return row


GITOPS_COLUMNS = ("NAME", "READY", "REVISION", "SUSPENDED", "MESSAGE")


def source_wide(it: Item) -> list[str]:
    spec = it.get("spec", {})
    ref = spec.get("ref") or {}
    return [
        spec.get("url", ""),
        ref.get("branch") or ref.get("tag") or ref.get("commit") or "",
        spec.get("interval", ""),
        age(it.get("status", {}).get("lastHandledReconcileAt")),
    ]


def kustomization_wide(it: Item) -> list[str]:
    spec = it.get("spec", {})
    src = spec.get("sourceRef") or {}
    return [
        f"{src.get('kind', '')}/{src.get('name', '')}",
        spec.get("path", "./"),
        spec.get("interval", ""),
        str(spec.get("prune", False)),
    ]


# -- flags and violations --------------------------------------------------------------------------------


def flag_row(it: Item) -> list[str]:
    rollout = it.get("rollout") or {}
    if rollout.get("active"):
        split = f"{rollout['share']}% new ({rollout.get('canary') or 'no canary'})"
    else:
        split = "-"
    return [
        it["key"],
        it["state"],
        str(it.get("defaultVariant") or "-"),
        ", ".join(it["variants"]),
        split,
        it["revision"][:24],
        it.get("drift") or "",
    ]


def flag_wide(it: Item) -> list[str]:
    return [it.get("flagSet", ""), it.get("type", ""), it.get("gitState", ""), it.get("definition", "")]


def violation_row(it: Item) -> list[str]:
    return [
        it["action"] if it["kind"] == "violation" else "error",
        it["policy"],
        it["object"],
        it["commit"][:24],
        it["found_by"],
        it["message"],
    ]


def violation_wide(it: Item) -> list[str]:
    return [it.get("file", ""), it.get("template", ""), age(it.get("time"))]


KINDS = (
    Kind(
        "canary",
        "canaries",
        ("cd", "canary.flagger.app"),
        "/canaries",
        True,
        ("NAME", "STRATEGY", "PHASE", "WEIGHT", "FAILED", "ITERATIONS", "MESSAGE"),
        canary_row,
        ("TARGET", "PROVIDER", "PRIMARY", "INTERVAL", "LAST TRANSITION"),
        canary_wide,
    ),
    Kind(
        "workload",
        "workloads",
        ("wl",),
        "/workloads",
        True,
        ("NAME", "CANARIES", "PRIMARY", "CANARY", "REVISION"),
        workload_row,
        ("REPLICAS", "COMMAND", "MANAGED", "ERROR"),
        workload_wide,
    ),
    Kind(
        "source",
        "sources",
        ("gitrepository", "gitrepositories", "gitrepo", "src"),
        "/sources",
        True,
        GITOPS_COLUMNS,
        gitops_row(lambda st: (st.get("artifact") or {}).get("revision", "")),
        ("URL", "REF", "INTERVAL", "LAST RECONCILE"),
        source_wide,
    ),
    Kind(
        "kustomization",
        "kustomizations",
        ("ks",),
        "/kustomizations",
        True,
        GITOPS_COLUMNS,
        gitops_row(lambda st: st.get("lastAppliedRevision", "")),
        ("SOURCE", "PATH", "INTERVAL", "PRUNE"),
        kustomization_wide,
    ),
    Kind(
        "helmrelease",
        "helmreleases",
        ("hr",),
        "/helmreleases",
        True,
        ("NAME", "READY", "CHART", "SUSPENDED", "MESSAGE"),
        gitops_row(lambda st: st.get("helmChart", "")),
        ("RELEASE", "REVISION", "CONFIG DIGEST", "INTERVAL"),
        lambda it: [
            f"{h['namespace']}/{h['name']}.v{h['version']}"
            if (h := (it["status"].get("history") or [{}])[0]) and "name" in h
            else "",
            it["status"].get("lastAttemptedRevision", ""),
            it["status"].get("lastAttemptedConfigDigest", "")[:19],
            it["spec"].get("interval", ""),
        ],
    ),
    Kind(
        "helmrepository",
        "helmrepositories",
        ("helmrepo",),
        "/helmrepositories",
        True,
        GITOPS_COLUMNS,
        gitops_row(lambda st: (st.get("artifact") or {}).get("revision", "")[:19]),
    ),
    Kind(
        "helmchart",
        "helmcharts",
        ("hc",),
        "/helmcharts",
        True,
        GITOPS_COLUMNS,
        gitops_row(lambda st: (st.get("artifact") or {}).get("revision", "")),
    ),
    Kind(
        "flag",
        "flags",
        ("featureflag", "featureflags", "ff"),
        "/flags",
        False,
        ("FLAG", "STATE", "DEFAULT", "VARIANTS", "ROLLOUT", "REVISION", "MESSAGE"),
        flag_row,
        ("FLAG SET", "TYPE", "GIT STATE", "DEFINITION"),
        flag_wide,
    ),
    Kind(
        "violation",
        "violations",
        ("policyviolation", "policyviolations", "pv"),
        "/violations",
        False,
        ("ACTION", "POLICY", "OBJECT", "COMMIT", "FOUND BY", "MESSAGE"),
        violation_row,
        ("FILE", "TEMPLATE", "AGE"),
        violation_wide,
    ),
)
BY_NAME = {n: k for k in KINDS for n in k.names()}


def find_kind(name: str) -> Kind:
    """A kind by any of its names, case-insensitive; an unknown name is a ValueError that lists the known."""
    try:
        return BY_NAME[name.lower()]
    except KeyError:
        known = ", ".join(k.plural for k in KINDS)
        raise ValueError(f"unknown kind {name!r}; known: {known}") from None
