"""The admission webhook: real AdmissionReview v1 requests over TLS to a real uvicorn server on 127.0.0.1,
verified with the CA the webhook made, against Gatekeeper's library templates (../shared/testdata)."""

from __future__ import annotations

import asyncio
import copy
import os
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509

from rheostat.gitops.gate import PolicyGate
from rheostat.plugins.kube.api import KubeAPI
from rheostat.plugins.kube.client import LightkubeAPI
from rheostat.reactor.settings import WebhookSettings
from rheostat.server.certs import service_names
from rheostat.server.webhook import WebhookServer
from rheostat.server.webhook_tls import FileKeeper, WebhookTLS
from rheostat.store import Store
from tests import kubeapi
from tests.kube_e2e_world import RHEOSTAT
from tests.kubeapi import KubeServer
from tests.processes import stop
from tests.servers import free_port

kube_server = kubeapi.kube_server
kubeconfig = kubeapi.kubeconfig

LIBRARY = Path("testdata") / "gatekeeper-library" / "general"
SOURCE = "Kustomization flux-system/flux-system@0123abc"


def library_template(shared: Path, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((shared / LIBRARY / name / "template.yaml").read_text())
    return doc


def constraint(
    kind: str, name: str, match: dict[str, Any], parameters: dict[str, Any], action: str = "deny"
) -> Any:
    return {
        "apiVersion": "constraints.gatekeeper.sh/v1beta1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": {"enforcementAction": action, "match": match, "parameters": parameters},
    }


DEPLOYMENTS = {"kinds": [{"apiGroups": ["apps"], "kinds": ["Deployment"]}], "excludedNamespaces": ["kube-*"]}
PODS = {"kinds": [{"apiGroups": [""], "kinds": ["Pod"]}]}

# Rego that reads the AdmissionRequest's own fields, as Gatekeeper passes them in input.review.
WHO_TEMPLATE = {
    "apiVersion": "templates.gatekeeper.sh/v1",
    "kind": "ConstraintTemplate",
    "metadata": {"name": "k8snomallory"},
    "spec": {
        "crd": {"spec": {"names": {"kind": "K8sNoMallory"}}},
        "targets": [
            {
                "target": "admission.k8s.gatekeeper.sh",
                "rego": """package k8snomallory
violation[{"msg": msg}] {
  input.review.userInfo.username == "mallory"
  msg := sprintf("%v by mallory refused (uid %v, dryRun %v, resource %v, subResource %v, namespace %v)", [
    input.review.operation, input.review.uid, input.review.dryRun, input.review.resource.resource,
    object.get(input.review, "subResource", "none"), input.review.namespace])
}
violation[{"msg": msg}] {
  input.review.operation == "DELETE"
  input.review.object.metadata.labels.protected == "true"
  msg := sprintf("%v is protected", [input.review.object.metadata.name])
}
""",
            }
        ],
    },
}

# A ValidatingAdmissionPolicy on UPDATE, through CEL: replicas may only grow.
GROW_ONLY = [
    {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "replicas-only-grow"},
        "spec": {
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["apps"],
                        "apiVersions": ["v1"],
                        "operations": ["UPDATE"],
                        "resources": ["deployments"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": "object.spec.replicas >= oldObject.spec.replicas",
                    "messageExpression": "'replicas may not shrink from ' + string(oldObject.spec.replicas)",
                }
            ],
        },
    },
    {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "replicas-only-grow"},
        "spec": {"policyName": "replicas-only-grow", "validationActions": ["Deny"]},
    },
]

# A policy that cannot decide: the field it reads is absent from every Service.
BROKEN = [
    {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "broken"},
        "spec": {
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["services"],
                    }
                ]
            },
            "validations": [{"expression": "object.spec.noSuchField == 'x'"}],
        },
    },
    {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "broken"},
        "spec": {"policyName": "broken", "validationActions": ["Deny"]},
    },
]


def policies(shared: Path) -> list[dict[str, Any]]:
    return [
        library_template(shared, "requiredlabels"),
        library_template(shared, "disallowedrepos"),
        library_template(shared, "allowedrepos"),
        WHO_TEMPLATE,
        constraint(
            "K8sRequiredLabels", "deployments-need-owner", DEPLOYMENTS, {"labels": [{"key": "owner"}]}
        ),
        constraint(
            "K8sRequiredLabels",
            "deployments-should-say-team",
            DEPLOYMENTS,
            {"labels": [{"key": "team"}]},
            "warn",
        ),
        constraint("K8sDisallowedRepos", "no-untrusted-repos", PODS, {"repos": ["evil.example/"]}),
        constraint(
            "K8sAllowedRepos", "prefer-our-registry", PODS, {"repos": ["registry.example/"]}, "dryrun"
        ),
        constraint("K8sNoMallory", "no-mallory", {}, {}),
        *GROW_ONLY,
        *BROKEN,
    ]


def deployment(name: str, ns: str = "apps", labels: dict[str, str] | None = None, replicas: int = 2) -> Any:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
            },
        },
    }


def pod(name: str, image: str) -> Any:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {"containers": [{"name": "app", "image": image}]},
    }


GVR = {
    "Deployment": ({"group": "apps", "version": "v1", "kind": "Deployment"}, "deployments"),
    "Pod": ({"group": "", "version": "v1", "kind": "Pod"}, "pods"),
    "Service": ({"group": "", "version": "v1", "kind": "Service"}, "services"),
}


def review(
    operation: str,
    obj: Any = None,
    old: Any = None,
    *,
    user: str = "alice",
    dry_run: bool = False,
    sub_resource: str | None = None,
) -> dict[str, Any]:
    """An AdmissionReview v1 as the API server sends it."""
    target = obj if obj is not None else old
    gvk, resource = GVR[target["kind"]]
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": gvk,
        "resource": {"group": gvk["group"], "version": gvk["version"], "resource": resource},
        "requestKind": gvk,
        "requestResource": {"group": gvk["group"], "version": gvk["version"], "resource": resource},
        "name": target["metadata"]["name"],
        "namespace": target["metadata"].get("namespace", ""),
        "operation": operation,
        "userInfo": {"username": user, "groups": ["system:authenticated"]},
        "object": obj,
        "oldObject": old,
        "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": f"{operation.title()}Options"},
    }
    if sub_resource:
        request["subResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


@dataclass
class Webhook:
    url: str
    server: WebhookServer
    gate: PolicyGate
    store: Store
    client: httpx.AsyncClient
    ca: ssl.SSLContext

    async def send(self, doc: dict[str, Any]) -> dict[str, Any]:
        r = await self.client.post(self.url, json=doc)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
        assert body["response"]["uid"] == doc["request"]["uid"]
        response: dict[str, Any] = body["response"]
        return response


def client_context(ca_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    return ctx


async def start_webhook(
    tmp_path: Path, docs: list[dict[str, Any]], *, fail_closed: bool = True, kube: KubeAPI | None = None
) -> Webhook:
    store = Store(tmp_path / "state.db")
    with store.transaction():
        for d in docs:
            meta = d["metadata"]
            key = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]
            store.put_object(d["kind"], key, d, source=SOURCE)
    gate = PolicyGate(store)
    settings = WebhookSettings(port=free_port(), namespace="rheostat-system", fail_closed=fail_closed)
    tls = WebhookTLS(
        FileKeeper(tmp_path / "webhook-tls"),
        managed=True,
        names=service_names("rheostat-webhook", "rheostat-system"),
        ips=["127.0.0.1"],
    )
    server = WebhookServer(settings, store, gate, tls, kube)
    await server.start()
    assert tls.bundle is not None
    ca = client_context(tls.bundle.ca_crt)
    client = httpx.AsyncClient(verify=ca, timeout=10)
    return Webhook(f"https://127.0.0.1:{settings.port}/admission/validate", server, gate, store, client, ca)


@pytest.fixture
async def webhook(tmp_path: Path, shared: Path) -> AsyncIterator[Webhook]:
    hook = await start_webhook(tmp_path, policies(shared))
    try:
        yield hook
    finally:
        await hook.client.aclose()
        await hook.server.stop()
        hook.store.close()


async def test_a_deployment_without_the_required_label_is_denied_with_gatekeepers_message(
    webhook: Webhook,
) -> None:
    response = await webhook.send(review("CREATE", deployment("web", labels={"team": "a"})))
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    message = response["status"]["message"]
    assert message.startswith("[deployments-need-owner] you must provide labels")
    assert "owner" in message
    assert "warnings" not in response


async def test_a_compliant_deployment_is_allowed_without_warnings(webhook: Webhook) -> None:
    response = await webhook.send(review("CREATE", deployment("web", labels={"owner": "me", "team": "a"})))
    assert response == {"uid": response["uid"], "allowed": True}


async def test_a_warn_constraint_allows_with_a_warning(webhook: Webhook) -> None:
    response = await webhook.send(review("CREATE", deployment("web", labels={"owner": "me"})))
    assert response["allowed"] is True
    assert len(response["warnings"]) == 1
    assert response["warnings"][0].startswith("[deployments-should-say-team] you must provide labels")


async def test_a_disallowed_repo_is_denied_and_a_dryrun_only_recorded(webhook: Webhook) -> None:
    response = await webhook.send(review("CREATE", pod("bad", "evil.example/miner:1")))
    assert response["allowed"] is False
    lines = response["status"]["message"].split("\n")
    assert lines == [
        "[no-untrusted-repos] container <app> has an invalid image repo <evil.example/miner:1>, disallowed repos "
        'are ["evil.example/"]'
    ]  # the dryrun constraint also found it (not registry.example/) and says nothing
    quiet = await webhook.send(review("CREATE", pod("elsewhere", "docker.io/nginx:1")))
    assert quiet == {"uid": quiet["uid"], "allowed": True}
    webhook.server.recorder.flush()  # as it does every half second
    found = {
        (f["policy"], f["object"], f["action"])
        for f in webhook.gate.findings()
        if f["found_by"] == "admission"
    }
    assert ("prefer-our-registry", "Pod apps/elsewhere", "dryrun") in found
    assert ("no-untrusted-repos", "Pod apps/bad", "deny") in found


async def test_findings_are_recorded_with_who_asked_and_an_event(webhook: Webhook) -> None:
    await webhook.send(review("CREATE", deployment("web"), user="bob"))
    for _ in range(100):  # written in the background within half a second, not on the request's time
        findings = [f for f in webhook.gate.findings() if f["policy"] == "deployments-need-owner"]
        if findings:
            break
        await asyncio.sleep(0.05)
    assert [(f["object"], f["owner"], f["found_by"]) for f in findings] == [
        ("Deployment apps/web", "bob", "admission")
    ]
    events = [e for e in webhook.store.events(limit=50) if e.reason == "PolicyViolation"]
    assert any("deployments-need-owner" in e.message for e in events)


async def test_an_excluded_namespace_is_not_checked(webhook: Webhook) -> None:
    response = await webhook.send(review("CREATE", deployment("dns", ns="kube-system")))
    assert response == {"uid": response["uid"], "allowed": True}


async def test_an_update_is_judged_with_its_old_object(webhook: Webhook) -> None:
    labels = {"owner": "me", "team": "a"}
    shrink = review(
        "UPDATE", deployment("web", labels=labels, replicas=1), deployment("web", labels=labels, replicas=3)
    )
    response = await webhook.send(shrink)
    assert response["allowed"] is False
    assert response["status"]["message"] == "[replicas-only-grow] replicas may not shrink from 3"
    grow = review(
        "UPDATE", deployment("web", labels=labels, replicas=4), deployment("web", labels=labels, replicas=3)
    )
    assert (await webhook.send(grow))["allowed"] is True


async def test_input_review_carries_the_requests_own_fields(webhook: Webhook) -> None:
    web = deployment("web", labels={"owner": "me", "team": "a"})
    doc = review("CREATE", web, user="mallory", dry_run=True)
    response = await webhook.send(doc)
    uid = doc["request"]["uid"]
    assert response["status"]["message"] == (
        f"[no-mallory] CREATE by mallory refused (uid {uid}, dryRun true, resource deployments, "
        "subResource none, namespace apps)"
    )
    doc = review("UPDATE", web, web, user="mallory", sub_resource="status")
    response = await webhook.send(doc)
    assert (
        "(uid " + doc["request"]["uid"] + ", dryRun false, resource deployments, subResource status"
        in (response["status"]["message"])
    )


async def test_a_delete_reviews_the_old_object(webhook: Webhook) -> None:
    kept = deployment("db", labels={"owner": "me", "team": "a", "protected": "true"})
    response = await webhook.send(review("DELETE", None, kept))
    assert response["allowed"] is False
    assert response["status"]["message"] == "[no-mallory] db is protected"
    free = deployment("tmp", labels={"owner": "me", "team": "a"})
    assert (await webhook.send(review("DELETE", None, free)))["allowed"] is True


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "the body is not JSON"),
        (
            b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}',
            "expected apiVersion admission.k8s.io/v1",
        ),
        (
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}',
            "AdmissionReview has no request",
        ),
        (
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"operation": "CREATE"}}',
            "request.uid: missing",
        ),
        (
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "1", '
            b'"operation": "PATCH", "kind": {"kind": "Pod"}}}',
            "request.operation: 'PATCH' is not one of CREATE, UPDATE, DELETE, CONNECT",
        ),
        (
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "1", '
            b'"operation": "DELETE", "kind": {"kind": "Pod"}, "object": null}}',
            'neither "object" nor "oldObject"',
        ),
    ],
)
async def test_a_malformed_review_is_answered_400_with_what_is_wrong(
    webhook: Webhook, body: bytes, expected: str
) -> None:
    r = await webhook.client.post(webhook.url, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.text.startswith("malformed AdmissionReview: ")
    assert expected in r.text


async def test_an_evaluation_error_denies_with_the_reason(webhook: Webhook) -> None:
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "apps"},
        "spec": {},
    }
    response = await webhook.send(review("CREATE", svc))
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert message.startswith("[broken] error: CEL: ")
    assert "noSuchField" in message


async def test_failing_open_allows_an_evaluation_error_with_a_warning(tmp_path: Path, shared: Path) -> None:
    hook = await start_webhook(tmp_path, policies(shared), fail_closed=False)
    try:
        svc = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "apps"},
            "spec": {},
        }
        response = await hook.send(review("CREATE", svc))
        assert response["allowed"] is True
        assert response["warnings"][0].startswith("[broken] error: CEL: ")
    finally:
        await hook.client.aclose()
        await hook.server.stop()
        hook.store.close()


async def test_a_policy_that_does_not_compile_denies_everything_it_could_judge(
    tmp_path: Path, shared: Path
) -> None:
    bad = constraint("K8sRequiredLabels", "bad-params", DEPLOYMENTS, {"labels": "not a list"})
    hook = await start_webhook(tmp_path, [library_template(shared, "requiredlabels"), bad])
    try:
        response = await hook.send(review("CREATE", deployment("web", labels={"owner": "me"})))
        assert response["allowed"] is False
        assert response["status"]["message"].startswith(
            "[K8sRequiredLabels bad-params] error: policy cannot be used"
        )
    finally:
        await hook.client.aclose()
        await hook.server.stop()
        hook.store.close()


async def test_a_new_policy_in_the_store_is_enforced_at_the_next_request(webhook: Webhook) -> None:
    web = deployment("web", labels={"owner": "me", "team": "a"})
    assert (await webhook.send(review("CREATE", web)))["allowed"] is True
    tighter = constraint(
        "K8sRequiredLabels", "deployments-need-tier", DEPLOYMENTS, {"labels": [{"key": "tier"}]}
    )
    with webhook.store.transaction():
        webhook.store.put_object("K8sRequiredLabels", "deployments-need-tier", tighter, source=SOURCE)
    response = await webhook.send(review("CREATE", web))
    assert response["allowed"] is False
    assert response["status"]["message"].startswith("[deployments-need-tier] ")


def served_serial(port: int, ca: ssl.SSLContext) -> int:
    import socket

    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        ca.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_the_certificate_rotates_while_requests_flow_and_none_fails(webhook: Webhook) -> None:
    tls = webhook.server.tls
    port = webhook.server.settings.port
    assert tls.bundle is not None
    first = tls.bundle.serial()
    ca_before = tls.bundle.ca_crt
    assert await asyncio.to_thread(served_serial, port, webhook.ca) == first
    statuses: list[int] = []
    stop = asyncio.Event()
    doc = review("CREATE", deployment("web", labels={"owner": "me", "team": "a"}))

    async def flow(keepalive: bool) -> None:
        limits = httpx.Limits(max_keepalive_connections=5 if keepalive else 0)
        async with httpx.AsyncClient(verify=webhook.ca, limits=limits, timeout=10) as client:
            while not stop.is_set():
                body = copy.deepcopy(doc)
                body["request"]["uid"] = str(uuid.uuid4())
                r = await client.post(webhook.url, json=body)
                statuses.append(r.status_code)
                assert r.json()["response"]["allowed"] is True

    flows = [asyncio.create_task(flow(True)), asyncio.create_task(flow(False))]
    serials = [first]

    async def some_requests() -> (
        None
    ):  # at least 5 answered since the last rotation, however slow the machine
        seen = len(statuses)
        for _ in range(600):
            if len(statuses) >= seen + 5 or any(f.done() for f in flows):
                return
            await asyncio.sleep(0.05)

    for _ in range(3):
        await some_requests()
        await tls.rotate()
        serials.append(await asyncio.to_thread(served_serial, port, webhook.ca))
    await some_requests()
    stop.set()
    await asyncio.gather(*flows)  # a failed request raises here
    assert len(set(serials)) == 4  # each rotation served a new certificate to new connections
    assert len(statuses) >= 20 and set(statuses) == {200}
    # the CA was kept (the client above trusts only it): the caBundle the API server holds stays right
    assert tls.bundle.ca_crt == ca_before


async def test_a_namespace_selector_reads_the_clusters_namespaces(
    tmp_path: Path, shared: Path, kube_server: KubeServer, kubeconfig: Path
) -> None:
    kube_server.add(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "strict", "labels": {"enforce": "yes"}},
        }
    )
    kube_server.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "lax"}})
    match = {**DEPLOYMENTS, "namespaceSelector": {"matchLabels": {"enforce": "yes"}}}
    docs = [
        library_template(shared, "requiredlabels"),
        constraint("K8sRequiredLabels", "owner-where-enforced", match, {"labels": [{"key": "owner"}]}),
    ]
    api = LightkubeAPI.from_kubeconfig(str(kubeconfig))
    hook = await start_webhook(tmp_path, docs, kube=api)
    try:
        for _ in range(200):
            if {"strict", "lax"} <= set(hook.server.policies.namespaces):
                break
            await asyncio.sleep(0.05)
        denied = await hook.send(review("CREATE", deployment("web", ns="strict")))
        assert denied["allowed"] is False
        assert denied["status"]["message"].startswith("[owner-where-enforced] you must provide labels")
        assert (await hook.send(review("CREATE", deployment("web", ns="lax"))))["allowed"] is True
        # a namespace labelled later is enforced from then on
        kube_server.add(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": "late", "labels": {"enforce": "yes"}},
            }
        )
        for _ in range(200):
            if "late" in hook.server.policies.namespaces:
                break
            await asyncio.sleep(0.05)
        assert (await hook.send(review("CREATE", deployment("web", ns="late"))))["allowed"] is False
    finally:
        await hook.client.aclose()
        await hook.server.stop()
        hook.store.close()
        await api.close()


async def test_a_review_larger_than_any_object_could_make_is_refused_unread(webhook: Webhook) -> None:
    doc = review("CREATE", deployment("web", labels={"owner": "me", "team": "a"}))
    doc["request"]["object"]["metadata"]["annotations"] = {"blob": "x" * (9 * 1024 * 1024)}
    r = await webhook.client.post(webhook.url, json=doc)
    assert r.status_code == 413
    assert "larger than" in r.text


async def test_rheostat_run_denies_what_the_repositorys_policies_forbid(tmp_path: Path, shared: Path) -> None:
    """The real `rheostat run --repo DIR --webhook`: the policies applied from the folder are enforced at
    admission, with the certificate made in the data dir."""
    repo = tmp_path / "repo"
    repo.mkdir()
    docs = [
        library_template(shared, "requiredlabels"),
        constraint(
            "K8sRequiredLabels", "deployments-need-owner", DEPLOYMENTS, {"labels": [{"key": "owner"}]}
        ),
    ]
    (repo / "policies.yaml").write_text(yaml.safe_dump_all(docs))
    data, hook_port = tmp_path / "data", free_port()
    err = tmp_path / "run.err"
    proc = spawn_embedded_run(repo, data, hook_port, err)
    try:
        deadline = time.monotonic() + 60
        while "serving" not in err.read_text(errors="replace"):
            assert proc.poll() is None, f"`rheostat run` exited: {err.read_text()}"
            assert time.monotonic() < deadline, f"`rheostat run` did not serve: {err.read_text()}"
            await asyncio.sleep(0.1)
        ca = client_context((data / "webhook-tls" / "ca.crt").read_bytes())
        url = f"https://127.0.0.1:{hook_port}/admission/validate"
        async with httpx.AsyncClient(verify=ca, timeout=10) as client:
            for _ in range(100):  # the folder is applied (and its policies stored) just after the start
                r = await client.post(url, json=review("CREATE", deployment("web")))
                if not r.json()["response"]["allowed"]:
                    break
                await asyncio.sleep(0.1)
        response = r.json()["response"]
        assert response["allowed"] is False
        assert response["status"]["message"].startswith("[deployments-need-owner] you must provide labels")
    finally:
        await asyncio.to_thread(stop, proc)
    assert proc.returncode == 0, err.read_text()


def spawn_embedded_run(repo: Path, data: Path, hook_port: int, err: Path) -> subprocess.Popen[bytes]:
    assert RHEOSTAT is not None, f"the `rheostat` console script is not installed beside {sys.executable}"
    with open(err, "wb") as err_file:
        return subprocess.Popen(
            [RHEOSTAT, "run", "--repo", str(repo), "--data-dir", str(data), "--listen", f"127.0.0.1:{free_port()}",
             "--stop-data-plane", "--webhook", "--webhook-port", str(hook_port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err_file, env={**os.environ},
        )  # fmt: skip
