"""Property-based tests (hypothesis, bounded and derandomized so CI is reproducible).

- every manifest kind, valid and broken (fields deleted, wrong types, unknown fields), and random YAML: the
  model answers with objects or a ManifestError naming the file, the object and the field, nothing else;
- Envoy stats payloads: parse_stats and the window arithmetic raise only the family's errors, and a success
  rate is always within [0, 100];
- Prometheus answers of any JSON shape: only ProviderError or NoData, never another exception.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
from typing import Any

import httpx
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rheostat.model.base import ObjectKey
from rheostat.model.load import ManifestError, parse_text
from rheostat.plugins.metrics.base import MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.envoy_stats import EnvoyStatsProvider, Scrape, parse_stats, quantile
from rheostat.plugins.metrics.prometheus import PrometheusProvider
from rheostat.policy.starter import starter_documents
from tests.rig import canary, workload
from tests.test_policy_engine import binding, vap

BOUNDED = settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- manifests ------------------------------------------------------------------------------------------

FLAGD = {
    "$schema": "https://flagd.dev/schema/v0/flags.json",
    "metadata": {"flagSetId": "checkout"},
    "flags": {
        "new-cart": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off"}
    },
}


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


VALID: list[dict[str, Any]] = [
    *_docs(workload("1.0.0")),
    *_docs(canary(9898, "interval: 10s\nthreshold: 2\nstepWeight: 20\nmaxWeight: 60\n")),
    {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "MetricTemplate",
        "metadata": {"name": "m", "namespace": "default"},
        "spec": {"provider": {"type": "prometheus", "address": "http://127.0.0.1:9090"}, "query": "up"},
    },
    {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "AlertProvider",
        "metadata": {"name": "chat", "namespace": "default"},
        "spec": {"type": "slack", "channel": "releases", "address": "http://127.0.0.1:1/hook"},
    },
    {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": "app", "namespace": "flux-system"},
        "spec": {"url": "/srv/app", "interval": "1m", "ref": {"branch": "main"}},
    },
    {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": "app", "namespace": "flux-system"},
        "spec": {
            "sourceRef": {"kind": "GitRepository", "name": "app"},
            "path": "./",
            "interval": "10m",
            "prune": True,
        },
    },
    {
        "apiVersion": "notification.toolkit.fluxcd.io/v1",
        "kind": "Receiver",
        "metadata": {"name": "r", "namespace": "flux-system"},
        "spec": {
            "type": "github",
            "secretRef": {"name": "t"},
            "resources": [{"kind": "GitRepository", "name": "app"}],
        },
    },
    *starter_documents(),  # ConstraintTemplates and their Constraints
    vap(),
    binding(["Deny"]),
    FLAGD,
    {
        "apiVersion": "core.openfeature.dev/v1beta1",
        "kind": "FeatureFlag",
        "metadata": {"name": "sample", "namespace": "shop"},
        "spec": {
            "flagSpec": {
                "flags": {
                    "banner": {"state": "ENABLED", "variants": {"red": "#f00"}, "defaultVariant": "red"}
                }
            }
        },
    },
]

SOURCE = "deploy/app.yaml"
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def broken(draw: st.DrawFn) -> dict[str, Any]:
    """A valid document with a few random edits: a field deleted, replaced by any value, or one added."""
    doc: dict[str, Any] = copy.deepcopy(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = doc
        for part in path[:-1]:
            parent = parent[part]
        edit = draw(st.sampled_from(["delete", "replace", "add"]))
        if edit == "delete":
            del parent[path[-1]]
        elif edit == "replace":
            parent[path[-1]] = draw(values)
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(values)
    return doc


def _refusal(text: str) -> ManifestError | None:
    """None when the text loads; else its ManifestError, checked to name the file and the object."""
    try:
        parse_text(text, SOURCE)
    except ManifestError as exc:
        refusal = exc
    else:
        return None
    assert refusal.source == SOURCE and str(refusal).startswith(f"{SOURCE}: ")
    assert refusal.obj, "the refusal names the object (or the document / line)"
    assert refusal.errors and all(e.message for e in refusal.errors)
    return refusal


def _dump(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


@BOUNDED
@given(broken())
def test_broken_manifests_are_refused_naming_file_object_and_field(doc: dict[str, Any]) -> None:
    refusal = _refusal(_dump(doc))
    if refusal is not None and doc.get("kind") and isinstance(doc.get("metadata"), dict):
        assert all(e.path for e in refusal.errors), refusal  # a mapping with a kind: each error names a field


def test_every_valid_example_loads() -> None:
    for doc in VALID:
        assert parse_text(_dump(doc), SOURCE)


@BOUNDED
@given(st.text(alphabet=st.sampled_from(list("ab:- \n[]{}&*!|>'\"#%@`,?0.1")), max_size=200))
def test_random_yaml_is_objects_or_a_manifest_error(text: str) -> None:
    _refusal(text)


# -- Envoy stats ----------------------------------------------------------------------------------------

CLUSTER = "cluster.t-web-canary"
counter_names = st.sampled_from(
    ["server.uptime", f"{CLUSTER}.upstream_rq_completed", f"{CLUSTER}.upstream_rq_5xx", "other"]
)
entry = st.one_of(
    st.fixed_dictionaries({"name": counter_names, "value": st.one_of(st.integers(-5, 10**6), values)}),
    st.fixed_dictionaries(
        {
            "histograms": st.one_of(
                values,
                st.lists(
                    st.fixed_dictionaries(
                        {
                            "name": st.one_of(st.just(f"{CLUSTER}.upstream_rq_time"), values),
                            "buckets": st.one_of(
                                values,
                                st.lists(
                                    st.fixed_dictionaries(
                                        {
                                            "upper_bound": st.one_of(st.floats(0, 1e6), values),
                                            "cumulative": st.one_of(st.integers(-3, 10**6), values),
                                        }
                                    ),
                                    max_size=4,
                                ),
                            ),
                        }
                    ),
                    max_size=2,
                ),
            )
        }
    ),
    values,
)
payloads = st.one_of(values, st.fixed_dictionaries({"stats": st.one_of(values, st.lists(entry, max_size=6))}))


@BOUNDED
@given(payloads)
def test_parse_stats_takes_any_payload(payload: Any) -> None:
    try:
        scrape = parse_stats(payload, 0.0)
    except ProviderError:
        return
    assert all(isinstance(v, int) and v >= 0 for v in scrape.counters.values())
    for h in scrape.histograms.values():
        assert len(h.bounds) == len(h.cumulative)
        assert all(c >= 0 for c in h.cumulative)
        try:
            q = quantile(0.99, h)
        except NoData:
            continue
        assert math.isfinite(q) or q == h.bounds[-1]


class _Replayed(EnvoyStatsProvider):
    """The real provider's window arithmetic over scrapes a test hands it (no Envoy needed)."""

    def __init__(self, scrapes: list[Scrape]) -> None:
        super().__init__(admin_socket=__import__("pathlib").Path("/nonexistent"))
        self._queue = scrapes

    async def scrape(self) -> Scrape:
        scrape = self._queue.pop(0)
        self.history.append(scrape)
        return scrape


well_formed = st.builds(
    lambda uptime, completed, errors: {
        "stats": [
            {"name": "server.uptime", "value": uptime},
            {"name": f"{CLUSTER}.upstream_rq_completed", "value": completed},
            {"name": f"{CLUSTER}.upstream_rq_5xx", "value": errors},
        ]
    },
    st.integers(0, 10**4),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
)


@BOUNDED
@given(st.lists(st.one_of(well_formed, payloads), min_size=1, max_size=5), st.floats(0.5, 120))
def test_success_rate_is_always_within_0_and_100(series: list[Any], window_s: float) -> None:
    scrapes: list[Scrape] = []
    for i, payload in enumerate(series):
        try:
            scrapes.append(parse_stats(payload, float(i)))
        except ProviderError:
            continue
    if not scrapes:
        return
    provider = _Replayed(scrapes)
    provider.history.extend(scrapes[:-1])
    provider._queue = scrapes[-1:]
    q = MetricQuery(ObjectKey("t/web"), "request-success-rate", window_s)
    try:
        rate = asyncio.run(provider.query(q))
    except (NoData, ProviderError):
        return
    assert 0.0 <= rate <= 100.0


# -- Prometheus answers ---------------------------------------------------------------------------------

answers = st.one_of(
    values,
    st.fixed_dictionaries(
        {
            "status": st.one_of(st.just("success"), values),
            "data": st.one_of(
                values,
                st.fixed_dictionaries(
                    {
                        "resultType": st.one_of(st.sampled_from(["vector", "scalar", "matrix"]), values),
                        "result": st.one_of(
                            values,
                            st.lists(
                                st.one_of(
                                    values,
                                    st.fixed_dictionaries(
                                        {
                                            "metric": st.one_of(
                                                st.dictionaries(
                                                    st.sampled_from(["le", "envoy_cluster_name"]),
                                                    st.one_of(st.text(max_size=5), st.just("t-web-canary")),
                                                ),
                                                values,
                                            ),
                                            "value": st.one_of(
                                                st.tuples(
                                                    st.floats(),
                                                    st.one_of(
                                                        st.sampled_from(["1", "NaN", "+Inf", "x", "-3"]),
                                                        values,
                                                    ),
                                                ).map(list),
                                                values,
                                            ),
                                        }
                                    ),
                                ),
                                max_size=3,
                            ),
                            st.tuples(st.floats(), st.one_of(st.just("2"), values)).map(list),
                        ),
                    }
                ),
            ),
        }
    ),
)


@BOUNDED
@given(answers, st.sampled_from([200, 400, 422, 500, 503]))
def test_any_prometheus_answer_is_a_value_no_data_or_a_provider_error(answer: Any, status: int) -> None:
    body = json.dumps(answer, allow_nan=True).encode()
    transport = httpx.MockTransport(lambda request: httpx.Response(status, content=body))
    p = PrometheusProvider("http://prom.test", transport=transport)

    async def ask() -> None:
        for call in (p.value("up"), p.vector("up"), p.counts(ObjectKey("t/web"))):
            try:
                result = await call
            except (ProviderError, NoData):
                continue
            if isinstance(result, float):
                assert math.isfinite(result)

    asyncio.run(ask())
