"""`rheostat install` and `uninstall`: every object valid for the Kubernetes versions the docs claim, the CRDs
structural and accepting the docs' examples, install then uninstall against the emulated API server through
the real CLI, the RBAC covering every call the controller makes, and the Dockerfile's pins."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import functools
import os
import re
import shutil
import sys
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from rheostat.cli.main import cli
from rheostat.model.load import KINDS
from rheostat.plugins.kube import kinds
from rheostat.plugins.kube.api import Kind, Obj, WatchType
from rheostat.plugins.kube.crds import crd_kinds
from rheostat.plugins.kube.install import (
    API_PORT,
    API_TOKEN,
    MANAGED_BY,
    MANAGED_BY_KEY,
    UID,
    WEBHOOK_PATH,
    WEBHOOK_TLS,
    Options,
    install,
    uninstall,
)
from rheostat.plugins.kube.memory import MemoryKube
from rheostat.plugins.kube.rbac import CLUSTER_RULES, NAMESPACE_RULES, WEBHOOK, rbac_table
from rheostat.reactor.controller import Controller
from rheostat.reactor.settings import ClusterSettings, Settings
from tests import kubeapi
from tests.kube_schemas import _to_jsonschema
from tests.kubeapi import KubeServer
from tests.kubelet import kubelet
from tests.servers import free_port
from tests.test_cluster_controller import NS, canary, deployment, until

kube_server = kubeapi.kube_server  # the fixtures, made visible here
kubeconfig = kubeapi.kubeconfig

ROOT = Path(__file__).resolve().parent.parent
K8S_VERSIONS = [f"1.{minor}" for minor in range(29, 38)]  # docs/kubernetes.md#install claims 1.29 and later
RHEOSTAT = shutil.which("rheostat", path=os.path.dirname(sys.executable))


def dry_run(*args: str) -> list[Obj]:
    return copy.deepcopy(_dry_run(args))


@functools.cache
def _dry_run(args: tuple[str, ...]) -> list[Obj]:
    result = CliRunner().invoke(cli, ["install", "--dry-run", *args])
    assert result.exit_code == 0, result.output
    return [d for d in yaml.safe_load_all(result.output) if d]


def by_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[Obj], kind: str, name: str) -> Obj:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


# -- what install writes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_of_the_dry_run_validates_strictly(version: str) -> None:
    objs = dry_run()
    assert len(objs) > 10
    for obj in objs:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} on {version}: {path}: {exc.message}")


def test_the_dry_run_has_every_object_labelled_and_in_the_namespace_asked() -> None:
    objs = dry_run("--namespace", "delivery")
    assert {o["kind"] for o in objs} == {
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "ValidatingWebhookConfiguration",
    }
    assert all(o["metadata"]["labels"][MANAGED_BY_KEY] == MANAGED_BY for o in objs)
    assert one(objs, "Namespace", "delivery")
    namespaced = [o for o in objs if "namespace" in o["metadata"]]
    assert namespaced and {o["metadata"]["namespace"] for o in namespaced} == {"delivery"}
    binding = one(objs, "ClusterRoleBinding", "rheostat")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rheostat", "namespace": "delivery"}]


def test_the_deployment_is_two_hardened_replicas_with_probes_and_a_data_volume() -> None:
    dep = one(dry_run(), "Deployment", "rheostat")
    spec = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 2
    (c,) = spec["containers"]
    assert c["livenessProbe"]["httpGet"]["path"] == c["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True and sc["runAsUser"] == UID
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/data"]] and "--data-dir" in c["args"]
    assert spec["serviceAccountName"] == "rheostat"
    args = one(dry_run("--metrics-server", "http://prometheus.monitoring:9090"), "Deployment", "rheostat")
    assert args["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == [
        "--metrics-server",
        "http://prometheus.monitoring:9090",
    ]
    pdb = one(dry_run(), "PodDisruptionBudget", "rheostat")
    assert pdb["spec"]["minAvailable"] == 1
    assert (
        pdb["spec"]["selector"]["matchLabels"].items()
        <= dep["spec"]["template"]["metadata"]["labels"].items()
    )


def test_the_webhook_service_and_configuration_follow_the_servers_contract() -> None:
    objs = dry_run()
    svc = one(objs, "Service", WEBHOOK)
    (port,) = svc["spec"]["ports"]
    dep = one(objs, "Deployment", "rheostat")
    container_ports = {
        p["name"]: p["containerPort"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert port["port"] == 443 and container_ports[port["targetPort"]] == 9443
    (hook,) = one(objs, "ValidatingWebhookConfiguration", WEBHOOK)["webhooks"]
    assert hook["clientConfig"]["service"] == {
        "name": WEBHOOK,
        "namespace": "rheostat-system",
        "path": WEBHOOK_PATH,
        "port": 443,
    }
    assert hook["failurePolicy"] == "Fail"
    (expr,) = hook["namespaceSelector"]["matchExpressions"]
    assert expr["operator"] == "NotIn" and set(expr["values"]) == {
        "rheostat-system",
        "kube-system",
        "kube-node-lease",
    }
    assert [c["name"] for c in hook["matchConditions"]] == ["not-events-nor-leases", "not-kubelets"]
    names = {s["metadata"]["name"] for s in by_kind(objs, "Service")}
    assert names == {"rheostat", "rheostat-ofrep", WEBHOOK}


# -- the CRDs ---------------------------------------------------------------------------------------------


def structural_problems(node: Any, path: str = "") -> Iterator[str]:
    """What breaks Kubernetes' rules for a structural schema (the ones a schema we generate could break)."""
    if not isinstance(node, dict):
        yield f"{path}: not an object"
        return
    for bad in ("$ref", "anyOf", "oneOf", "allOf", "not", "const", "$defs", "default", "title"):
        if bad in node:
            yield f"{path}: {bad}"
    open_ = node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string")
    if "type" not in node and not open_:
        yield f"{path}: no type"
    if "properties" in node and "additionalProperties" in node:
        yield f"{path}: properties and additionalProperties"
    if node.get("nullable") and "type" not in node:
        yield f"{path}: nullable without a type"
    if node.get("type") == "array" and "items" not in node:
        yield f"{path}: an array without items"
    for name, child in (node.get("properties") or {}).items():
        yield from structural_problems(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from structural_problems(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        yield from structural_problems(node["items"], f"{path}[]")


def test_the_crds_are_structural_with_the_status_subresource() -> None:
    crds = by_kind(dry_run(), "CustomResourceDefinition")
    names = {c["metadata"]["name"] for c in crds}
    assert {"workloads.rheostat.dev", "flagsets.rheostat.dev", "featureflags.core.openfeature.dev"} <= names
    assert {"canaries.flagger.app", "kustomizations.kustomize.toolkit.fluxcd.io"} <= names
    for c in crds:
        versions = c["spec"]["versions"]
        assert sum(v["storage"] for v in versions) == 1, c["metadata"]["name"]
        for v in versions:
            schema = v["schema"]["openAPIV3Schema"]
            assert list(structural_problems(schema)) == [], (c["metadata"]["name"], v["name"])
            assert schema["properties"]["metadata"] == {"type": "object"}
            assert v["subresources"] == {"status": {}}


def draft7(node: Any) -> Any:
    """OpenAPI 3.0's boolean exclusiveMinimum/Maximum as JSON Schema draft 7's numbers."""
    if isinstance(node, list):
        return [draft7(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: draft7(v) for k, v in node.items()}
    for flag, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if out.get(flag) is True:
            out[flag] = out.pop(bound)
        elif out.get(flag) is False:
            del out[flag]
    return out


def crd_validators() -> dict[tuple[str, str], jsonschema.Draft7Validator]:
    out = {}
    for c in by_kind(dry_run(), "CustomResourceDefinition"):
        for v in c["spec"]["versions"]:
            schema = _to_jsonschema(draft7(copy.deepcopy(v["schema"]["openAPIV3Schema"])))
            out[(f"{c['spec']['group']}/{v['name']}", c["spec"]["names"]["kind"])] = (
                jsonschema.Draft7Validator(schema)
            )
    return out


def doc_examples() -> Iterator[tuple[str, Obj]]:
    """Every object of a ```yaml block of README.md and docs/ (the examples users copy)."""
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```ya?ml\n(.*?)```", path.read_text(), re.S):
            try:
                docs = list(yaml.safe_load_all(block))
            except yaml.YAMLError:
                continue
            for doc in docs:
                if isinstance(doc, dict) and "kind" in doc:
                    yield path.name, doc


def test_the_crd_schemas_accept_the_examples_of_the_docs_and_refuse_an_unknown_field() -> None:
    validators = crd_validators()
    checked: set[str] = set()
    for where, doc in doc_examples():
        validator = validators.get((str(doc.get("apiVersion")), str(doc["kind"])))
        if validator is None:
            continue
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
        assert errors == [], f"{where}: {doc['kind']} {doc['metadata'].get('name')}: {errors}"
        checked.add(doc["kind"])
        wrong = copy.deepcopy(doc)
        wrong["spec"]["unknownField"] = 1
        assert list(validator.iter_errors(wrong)), f"{where}: {doc['kind']} with an unknown field passed"
    assert {"Canary", "Workload", "FeatureFlag", "Kustomization", "GitRepository"} <= checked


def safe_docs(text: str) -> list[Any]:
    try:
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        return []


def test_what_rheostat_loads_of_flaggers_and_fluxs_examples_the_generated_crds_accept(shared: Path) -> None:
    """The generated schema is never stricter than the model: an upstream example Rheostat reads is one the
    API server takes with Rheostat's CRD."""
    validators = crd_validators()
    checked = 0
    data = shared / "testdata"
    files = [*(data / "flagger").rglob("*.yaml"), *(data / "flux-examples").rglob("*.yaml")]
    tutorials = sorted((data / "flagger" / "tutorials").glob("*.md"))
    for path in sorted(files) + tutorials:
        text = path.read_text()
        blocks = re.findall(r"```ya?ml\n(.*?)```", text, re.S) if path.suffix == ".md" else [text]
        for doc in (d for block in blocks for d in safe_docs(block)):
            if not isinstance(doc, dict):
                continue
            key = (str(doc.get("apiVersion")), str(doc.get("kind")))
            validator, model = validators.get(key), KINDS.get(key)
            if validator is None or model is None:
                continue
            try:
                model.model_validate(doc)
            except ValueError:
                continue  # Rheostat refuses it too, by name, when it loads it
            errors = [
                f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
            ]
            assert errors == [], f"{path.relative_to(shared)}: {key[1]} {doc['metadata']['name']}: {errors}"
            checked += 1
    assert checked >= 10


# -- against the emulated cluster, through the real CLI ---------------------------------------------------


def user_canary() -> Obj:
    return {**canary(), "metadata": {"name": "podinfo", "namespace": "apps"}}


def flaggers_crd() -> Obj:
    """Flagger's own Canary CRD as `kubectl apply` left it: not install's to change or delete."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "canaries.flagger.app", "labels": {"app.kubernetes.io/name": "flagger"}},
        "spec": {
            "group": "flagger.app",
            "names": {"kind": "Canary", "plural": "canaries"},
            "scope": "Namespaced",
        },
    }


async def rheostat(config: Path, *args: str) -> tuple[int, str]:
    assert RHEOSTAT, "the rheostat command is installed in the virtualenv"
    proc = await asyncio.create_subprocess_exec(
        RHEOSTAT,
        *args,
        "--kubeconfig",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


@pytest.fixture
def cluster(kube_server: KubeServer) -> KubeServer:
    for kind in kinds.INSTALLED:
        kube_server.install(kind)
    return kube_server


async def test_install_twice_then_uninstall_leaves_the_users_objects(
    cluster: KubeServer, kubeconfig: Path
) -> None:
    cluster.add(user_canary())
    cluster.add(flaggers_crd())
    code, out = await rheostat(kubeconfig, "install")
    assert code == 0, out
    expected = [o for o in dry_run() if o["metadata"]["name"] != "canaries.flagger.app"]
    for obj in expected:
        kind = kinds.kind_of(obj["apiVersion"], obj["kind"])
        live = cluster.object(kind, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        assert live is not None, f"{obj['kind']} {obj['metadata']['name']} was not applied"
    assert {(a.field_manager, a.content_type) for a in cluster.applies} == {
        ("rheostat", "application/apply-patch+yaml")
    }
    assert "customresourcedefinition/canaries.flagger.app kept (Flagger's, left as it is)" in out
    flagger = cluster.object(kinds.CRD, "", "canaries.flagger.app")
    assert flagger is not None and MANAGED_BY_KEY not in flagger["metadata"]["labels"]

    token = cluster.object(kinds.SECRET, "rheostat-system", API_TOKEN)
    assert token is not None and "secret/rheostat-system/rheostat-api-token created" in out
    value = base64.b64decode(token["data"]["token"]).decode()
    assert len(value) >= 32 and value not in out and token["data"]["token"] not in out

    version = cluster.version
    code, out = await rheostat(kubeconfig, "install")
    assert code == 0 and "0 object(s) changed" in out, out
    assert cluster.version == version  # nothing written: every apply was a no-op

    code, out = await rheostat(kubeconfig, "uninstall")
    assert code == 0, out
    for obj in expected:
        kind = kinds.kind_of(obj["apiVersion"], obj["kind"])
        live = cluster.object(kind, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if kind == kinds.CRD:
            assert live is not None, f"CRD {obj['metadata']['name']} deleted without --crds"
        else:
            assert live is None, f"{obj['kind']} {obj['metadata']['name']} left behind"
    assert cluster.object(kinds.CANARY, "apps", "podinfo") is not None
    assert cluster.object(kinds.SECRET, "rheostat-system", API_TOKEN) is None

    code, out = await rheostat(kubeconfig, "uninstall", "--crds")
    assert code == 0, out
    assert not [
        k for k in crd_kinds() if k.name != "canaries.flagger.app" and cluster.object(kinds.CRD, "", k.name)
    ]
    assert cluster.object(kinds.CRD, "", "canaries.flagger.app") is not None  # Flagger's stays
    assert cluster.object(kinds.CANARY, "apps", "podinfo") is not None


async def test_uninstall_leaves_an_object_of_the_same_name_that_install_did_not_make(
    cluster: KubeServer,
    kubeconfig: Path,
) -> None:
    mine = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "rheostat-ofrep", "namespace": "rheostat-system"},
        "spec": {"ports": [{"port": 1}]},
    }
    cluster.add(mine)
    code, out = await rheostat(kubeconfig, "uninstall")
    assert code == 0 and "service/rheostat-system/rheostat-ofrep kept" in out, out
    assert cluster.object(kinds.SERVICE, "rheostat-system", "rheostat-ofrep") is not None


async def test_a_refused_object_is_named_and_a_second_run_finishes_the_job(
    cluster: KubeServer, kubeconfig: Path
) -> None:
    cluster.fail(403, verb="patch", kind=kinds.CLUSTER_ROLE)  # a user who may not grant cluster-wide RBAC
    code, out = await rheostat(kubeconfig, "install")
    assert code == 1, out
    assert (
        "error: ClusterRole rheostat: forbidden: cannot patch clusterroles.rbac.authorization.k8s.io" in out
    )
    assert "install stopped there" in out and "safe to run again" in out
    assert "serviceaccount/rheostat-system/rheostat created" in out
    assert cluster.object(kinds.DEPLOYMENT, "rheostat-system", "rheostat") is None  # nothing after it
    assert (
        cluster.object(kinds.VALIDATING_WEBHOOK_CONFIGURATION, "", WEBHOOK) is None
    )  # no fail-closed webhook without a server
    code, out = await rheostat(kubeconfig, "install")
    assert code == 0, out
    assert (
        "clusterrole/rheostat created" in out and "serviceaccount/rheostat-system/rheostat unchanged" in out
    )
    assert cluster.object(kinds.VALIDATING_WEBHOOK_CONFIGURATION, "", WEBHOOK) is not None


async def test_the_deployments_command_serves_its_probes_and_answers_to_the_secrets_token(
    cluster: KubeServer, kubeconfig: Path, tmp_path: Path
) -> None:
    """The container's args run as they are (but on loopback, and the emulated cluster for the pod's service
    account), with the API token as the Secret's read-only file in the data dir."""
    (c,) = one(dry_run(), "Deployment", "rheostat")["spec"]["template"]["spec"]["containers"]
    data = tmp_path / "data"
    data.mkdir()
    token = "from-the-secret-" + base64.b32encode(os.urandom(20)).decode()
    (data / "token").write_text(token + "\n")
    (data / "token").chmod(0o440)
    port = free_port()
    listen = {f"0.0.0.0:{API_PORT}": f"127.0.0.1:{port}", "/data": str(data)}
    args = [listen.get(a, a) for a in c["args"]]
    assert RHEOSTAT and args != c["args"]
    logs = tmp_path / "run.log"
    with logs.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            RHEOSTAT, *args, "--kubeconfig", str(kubeconfig), stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            for _ in range(600):
                assert proc.returncode is None, logs.read_text()
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(base + c["readinessProbe"]["httpGet"]["path"])).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            assert (await http.get(base + c["livenessProbe"]["httpGet"]["path"])).status_code == 200
            action = f"{base}/api/v1/canaries/apps/nothing/promote"
            wrong = await http.post(action, headers={"Authorization": "Bearer not-the-token"})
            right = await http.post(action, headers={"Authorization": f"Bearer {token}"})
            assert (wrong.status_code, right.status_code) == (403, 404), right.text
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
    assert token not in logs.read_text()
    assert (data / "token").read_text().strip() == token


def test_a_bad_namespace_is_refused_by_name() -> None:
    result = CliRunner().invoke(cli, ["install", "--dry-run", "--namespace", "Rheostat_System"])
    assert (
        result.exit_code == 1 and "--namespace 'Rheostat_System': not a valid namespace name" in result.output
    )
    assert "kind:" not in result.output


async def test_an_unreachable_cluster_is_one_line_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    code, out = await rheostat(config, "install", "--context", "nowhere")
    assert code == 1 and out.startswith("error:") and str(config) in out, out


# -- the webhook's CA -------------------------------------------------------------------------------------


async def test_the_ca_bundle_is_the_secrets_and_a_reinstall_keeps_the_one_the_controller_wrote() -> None:
    kube = MemoryKube()
    await install(kube, Options())
    vwc = await kube.get(kinds.VALIDATING_WEBHOOK_CONFIGURATION, "", WEBHOOK)
    assert vwc is not None and "caBundle" not in vwc["webhooks"][0]["clientConfig"]

    written = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nby the controller\n").decode()
    vwc["webhooks"][0]["clientConfig"]["caBundle"] = written
    await kube.replace(vwc)
    await install(kube, Options())
    vwc = await kube.get(kinds.VALIDATING_WEBHOOK_CONFIGURATION, "", WEBHOOK)
    assert vwc is not None and vwc["webhooks"][0]["clientConfig"]["caBundle"] == written

    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nfrom the secret\n").decode()
    await kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": WEBHOOK_TLS, "namespace": "rheostat-system"},
            "data": {"ca.crt": ca},
        }
    )
    await install(kube, Options())
    vwc = await kube.get(kinds.VALIDATING_WEBHOOK_CONFIGURATION, "", WEBHOOK)
    assert vwc is not None and vwc["webhooks"][0]["clientConfig"]["caBundle"] == ca


async def test_uninstall_crds_keeps_a_crd_its_own_project_has_since_replaced() -> None:
    kube = MemoryKube()
    await install(kube, Options())
    live = await kube.get(kinds.CRD, "", "canaries.flagger.app")
    assert live is not None and live["metadata"]["labels"][MANAGED_BY_KEY] == MANAGED_BY
    # `kubectl apply -f flagger/crd.yaml`: Flagger's schema, our labels merged in and kept
    live["spec"]["versions"][0]["schema"] = {
        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    }
    await kube.replace(live)
    done = {str(o) for o in await uninstall(kube, Options(), crds=True)}
    assert "customresourcedefinition/canaries.flagger.app kept (Flagger's schema now)" in done
    assert await kube.get(kinds.CRD, "", "canaries.flagger.app") is not None
    assert await kube.get(kinds.CRD, "", "metrictemplates.flagger.app") is None
    assert await kube.get(kinds.CRD, "", "workloads.rheostat.dev") is None


# -- RBAC -------------------------------------------------------------------------------------------------

RULES = (*CLUSTER_RULES, *NAMESPACE_RULES)


def allowed(kind: Kind, verb: str, sub: str = "") -> bool:
    resource = kind.plural + (f"/{sub}" if sub else "")
    return any(r.allows(kind.group, resource, verb) or r.allows(kind.group, "*", verb) for r in RULES)


def test_every_kind_rheostat_reads_or_writes_has_rbac() -> None:
    missing = [str(k) for k in kinds.ALL if not allowed(k, "get") and not allowed(k, "create")]
    assert missing == [], f"kinds in plugins/kube/kinds.py without RBAC in plugins/kube/install.py: {missing}"
    cached = [str(k) for k in kinds.READ_CACHED if not (allowed(k, "list") and allowed(k, "watch"))]
    assert cached == [], f"kinds read through a watch-fed cache need list and watch: {cached}"


def test_the_rbac_table_of_the_docs_is_the_one_install_creates() -> None:
    docs = (ROOT / "docs" / "kubernetes.md").read_text()
    assert rbac_table() in docs, (
        "docs/kubernetes.md#rbac is stale: paste the output of "
        "python -c 'from rheostat.plugins.kube.rbac import rbac_table; print(rbac_table())'"
    )


class Recording:
    """The controller's view of the cluster: every call noted as the verb the API server authorizes."""

    def __init__(self, inner: MemoryKube) -> None:
        self.inner = inner
        self.calls: set[tuple[Kind, str, str]] = set()  # (kind, verb, subresource)

    async def get(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        self.calls.add((kind, "get", ""))
        return await self.inner.get(kind, namespace, name)

    async def list(self, kind: Kind, namespace: str | None = None, labels: Any = None) -> list[Obj]:
        self.calls.add((kind, "list", ""))
        return await self.inner.list(kind, namespace, labels)

    async def watch(self, kind: Kind, namespace: str | None = None) -> AsyncIterator[tuple[WatchType, Obj]]:
        self.calls.update({(kind, "list", ""), (kind, "watch", "")})
        async for event in self.inner.watch(kind, namespace):
            yield event

    async def apply(self, obj: Obj, *, force: bool = False) -> Obj:
        kind = kinds.kind_of(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        exists = await self.inner.get(kind, meta.get("namespace", ""), meta["name"]) is not None
        self.calls.add((kind, "patch", ""))
        if not exists:
            self.calls.add((kind, "create", ""))  # an apply that creates is authorized as a create too
        return await self.inner.apply(obj, force=force)

    async def create(self, obj: Obj) -> Obj:
        self.calls.add((kinds.kind_of(obj["apiVersion"], obj["kind"]), "create", ""))
        return await self.inner.create(obj)

    async def replace(self, obj: Obj) -> Obj:
        self.calls.add((kinds.kind_of(obj["apiVersion"], obj["kind"]), "update", ""))
        return await self.inner.replace(obj)

    async def patch_status(self, kind: Kind, namespace: str, name: str, status: Obj) -> Obj:
        self.calls.add((kind, "patch", "status"))
        return await self.inner.patch_status(kind, namespace, name, status)

    async def delete(self, kind: Kind, namespace: str, name: str) -> bool:
        self.calls.add((kind, "delete", ""))
        return await self.inner.delete(kind, namespace, name)

    async def event(self, regarding: Obj, reason: str, message: str, *, warning: bool = False) -> None:
        self.calls.add((kinds.EVENT, "create", ""))
        await self.inner.event(regarding, reason, message, warning=warning)

    async def close(self) -> None:
        await self.inner.close()


async def test_the_rbac_allows_every_call_of_a_rollout_and_a_release(tmp_path: Path) -> None:
    kube = MemoryKube()
    await kube.apply(deployment("6.0.0"))
    kube.add(canary(revertOnDeletion=True))
    seen = Recording(kube)
    settings = Settings(
        repo=None,
        data_dir=tmp_path / "data",
        sync_interval_s=0.05,
        cluster=ClusterSettings(mesh_provider="istio"),
    )
    ctl = Controller(settings, kube=seen)

    def phase() -> str:
        obj = kube.objects.get(("flagger.app/v1beta1", "Canary", NS, "podinfo")) or {}
        return str((obj.get("status") or {}).get("phase", ""))

    async with kubelet(kube, kube):
        await ctl.start()
        try:
            await until(lambda: phase() == "Initialized")
            await kube.apply(deployment("6.0.1"))
            await until(lambda: phase() == "Succeeded")
            await kube.delete(kinds.CANARY, NS, "podinfo")
            await until(lambda: not any(k[1] == "VirtualService" for k in kube.objects))
        finally:
            await ctl.stop()
    denied = sorted(
        f"{verb} {k}{'/' + sub if sub else ''}" for k, verb, sub in seen.calls if not allowed(k, verb, sub)
    )
    assert denied == [], f"calls the installed RBAC does not allow: {denied}"
    assert {(kinds.DEPLOYMENT, "create", ""), (kinds.CANARY, "patch", "status")} <= seen.calls


# -- the image --------------------------------------------------------------------------------------------


def test_the_dockerfile_pins_the_base_image_and_rheostats_version_and_runs_as_the_installs_user() -> None:
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms and all(
        re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", f) for f in froms
    )
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert re.search(rf"^ARG VERSION={re.escape(version)}$", text, re.M), "the image installs this version"
    assert "rheostat-${VERSION}-py3-none-any.whl" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] == f"{UID}:{UID}", "the last USER is the Deployment's runAsUser"
