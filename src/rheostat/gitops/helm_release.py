"""HelmRepositories, HelmCharts and HelmReleases on the store: Flux's helm-controller, with Helm's own renderer.

A release's chart is fetched (archives kept by digest), its values merged in Flux's order, the chart rendered,
and the rendered objects go through the same checks, policy gate, inventory and prune as a Kustomization's
(GitOps.compare and GitOps.apply_plan). Nothing is rendered again while neither the chart nor the values
changed. A release that fails changes nothing: the last good release keeps running."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from rheostat.gitops import conditions as cond
from rheostat.gitops import helm_render
from rheostat.gitops.build import BuildError, Built, kustomize
from rheostat.gitops.helm_chart import HELMREPOSITORY, Chart, ChartSources, Failure
from rheostat.gitops.helm_repo import ChartRepos, RepoError
from rheostat.gitops.helm_values import ReleaseValues
from rheostat.gitops.reconciler import SOURCE, Owner
from rheostat.gitops.sources import SecretLookup
from rheostat.model.helm import HelmChart, HelmRelease, HelmRepository
from rheostat.model.load import ManifestError, documents, parse_object, read_documents
from rheostat.util.durations import parse_duration

if TYPE_CHECKING:
    from rheostat.gitops.reconciler import GitOps

log = logging.getLogger(__name__)

HELMRELEASE = "HelmRelease"
HELMCHART = "HelmChart"
NOT_RUN_KINDS = ("Namespace",)  # charts that make their own namespace: the store has no namespaces to make


def _digest(data: Any) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


class HelmReleases:
    def __init__(
        self, gitops: GitOps, secrets: SecretLookup | None = None, cache_dir: Path | None = None
    ) -> None:
        self.gitops = gitops
        self.store = gitops.store
        self.repos = ChartRepos(secrets, cache_dir=cache_dir)
        self.charts = ChartSources(gitops, self.repos)
        self.values = ReleaseValues(self.store, secrets)
        self._rendered: dict[str, tuple[Built, list[str]]] = {}  # by release digest (drift repair)
        self._observed: dict[str, str] = {}  # release key -> digest of the object and its valuesFrom inputs
        self.renders = 0  # charts rendered (tests and the benchmark read it)

    @property
    def secrets(self) -> SecretLookup | None:
        return self.values.secrets

    def set_secrets(self, secrets: SecretLookup | None) -> None:
        self.values.secrets = secrets
        self.repos.secrets = secrets

    # -- the pass ---------------------------------------------------------------------------------------

    async def reconcile(self, requested: set[tuple[str, str]], now: float, *, force: bool) -> None:
        for repo in self._objects(HELMREPOSITORY, HelmRepository):
            await self._repository(repo, force or (HELMREPOSITORY, repo.metadata.key) in requested, now)
        for chart in self._objects(HELMCHART, HelmChart):
            await self._chart(chart, force or (HELMCHART, chart.metadata.key) in requested, now)
        for hr in self._ordered():
            await self._release(hr, force or (HELMRELEASE, hr.metadata.key) in requested, now)
        await self._uninstall_gone(now)

    def _objects(self, kind: str, model: type[Any]) -> list[Any]:
        out = []
        for stored in self.store.list_objects(kind):
            try:
                obj = parse_object(stored.body, stored.source)
            except ManifestError:
                log.warning("stored %s %s no longer parses", kind, stored.key)
                continue
            if isinstance(obj, model):
                out.append(obj)
        return out

    def _ordered(self) -> list[HelmRelease]:
        items: list[HelmRelease] = self._objects(HELMRELEASE, HelmRelease)
        by_key = {str(h.metadata.key): h for h in items}
        done: list[HelmRelease] = []
        seen: set[str] = set()

        def visit(key: str, path: tuple[str, ...]) -> None:
            if key in seen or key in path or key not in by_key:
                return
            hr = by_key[key]
            for d in hr.spec.dependsOn:
                visit(f"{d.namespace or hr.metadata.namespace}/{d.name}", (*path, key))
            seen.add(key)
            done.append(hr)

        for key in sorted(by_key):
            visit(key, ())
        return done

    def _save(
        self,
        kind: str,
        key: str,
        state: dict[str, Any],
        reason: str = "",
        message: str = "",
        *,
        warning: bool = False,
    ) -> None:
        with self.store.transaction():
            if reason and state.get("lastEvent") != f"{reason}: {message}":
                self.store.add_event(kind, key, reason, message, warning)
                state["lastEvent"] = f"{reason}: {message}"
            self.store.put_state(kind, key, state)

    # -- sources ----------------------------------------------------------------------------------------

    async def _repository(self, repo: HelmRepository, asked: bool, now: float) -> None:
        key = repo.metadata.key
        state = self.gitops.state(HELMREPOSITORY, key)
        if repo.spec.suspend or state.get("suspended") or (not asked and now < state.get("nextAt", 0)):
            return
        try:
            index = await self.repos.index(repo, now, refresh=True)
        except RepoError as exc:
            cond.failed(state, exc.reason, f"spec.{exc.field}: {exc}", now)
            state["nextAt"] = now + min(parse_duration(repo.spec.interval), 30.0)
            self._save(HELMREPOSITORY, key, state, exc.reason, f"spec.{exc.field}: {exc}", warning=True)
            return
        new = (state.get("artifact") or {}).get("revision") != index.revision
        state["artifact"] = {"revision": index.revision, "charts": len(index.entries)}
        msg = f"stored fetched index of size {len(index.entries)} chart(s) from '{repo.spec.url}'"
        cond.ready(state, "Succeeded", msg, now)
        state["nextAt"] = now + parse_duration(repo.spec.interval)
        self._save(HELMREPOSITORY, key, state, "NewArtifact" if new else "", msg if new else "")

    async def _chart(self, chart: HelmChart, asked: bool, now: float) -> None:
        key = chart.metadata.key
        state = self.gitops.state(HELMCHART, key)
        interval = parse_duration(chart.spec.interval or "10m")
        if chart.spec.suspend or state.get("suspended") or (not asked and now < state.get("nextAt", 0)):
            return
        try:
            got = await self.charts.resolve(chart.spec, chart.metadata.namespace, now, field="spec")
        except Failure as exc:
            msg = f"{exc.field}: {exc}"
            cond.failed(state, exc.reason, msg, now)
            state["nextAt"] = now + min(interval, 30.0)
            self._save(HELMCHART, key, state, exc.reason, msg, warning=True)
            return
        new = (state.get("artifact") or {}).get("digest") != got.digest
        state["artifact"] = {"revision": got.version, "digest": got.digest}
        msg = f"pulled '{got.name}' chart with version '{got.version}'"
        cond.ready(state, "ChartPullSucceeded", msg, now)
        state["nextAt"] = now + interval
        self._save(HELMCHART, key, state, "ChartPullSucceeded" if new else "", msg if new else "")

    async def _chart_of(self, hr: HelmRelease, now: float) -> Chart:
        if hr.spec.chart is not None:
            return await self.charts.resolve(
                hr.spec.chart.spec, hr.metadata.namespace, now, field="spec.chart.spec"
            )
        assert hr.spec.chartRef is not None
        ref = f"{hr.spec.chartRef.namespace or hr.metadata.namespace}/{hr.spec.chartRef.name}"
        stored = self.store.get_object(HELMCHART, ref)
        if stored is None:
            raise Failure("ArtifactFailed", "spec.chartRef", f"HelmChart {ref} not found")
        chart = parse_object(stored.body, stored.source)
        assert isinstance(chart, HelmChart)
        return await self.charts.resolve(
            chart.spec, chart.metadata.namespace, now, field=f"HelmChart {ref} spec"
        )

    async def _release(self, hr: HelmRelease, asked: bool, now: float) -> None:
        key = hr.metadata.key
        state = self.gitops.state(HELMRELEASE, key)
        if hr.spec.suspend or state.get("suspended"):
            return
        # the object and what its valuesFrom name: a changed ConfigMap or Secret is seen at once, not at the
        # next interval (Flux needs a label on them for that)
        spec_digest = _digest([hr.model_dump(mode="json", exclude_none=True), self.values.inputs(hr)])
        changed = self._observed.get(key) != spec_digest  # in memory: it hashes Secret values too
        src = self._source_revision(hr)
        if not (asked or changed or src != state.get("sourceRevision") or now >= state.get("nextAt", 0)):
            return
        interval = parse_duration(hr.spec.interval)
        for d in hr.spec.dependsOn:
            dep = f"{d.namespace or hr.metadata.namespace}/{d.name}"
            if not cond.is_ready(self.gitops.state(HELMRELEASE, dep)):
                msg = f"dependency '{dep}' is not ready"
                cond.failed(state, "DependencyNotReady", msg, now)
                state["nextAt"] = now + min(interval, 5.0)
                self._save(HELMRELEASE, key, state, "DependencyNotReady", msg)
                return
        self._observed[key] = spec_digest
        state["sourceRevision"] = src
        try:
            chart = await self._chart_of(hr, now)
            values = self.values.values_of(hr, chart.values)
        except Failure as exc:
            msg = self.values.redact(
                hr, f"{hr.kind} {key} {exc.field}: {exc}; the last good release keeps running"
            )
            cond.failed(state, exc.reason, msg, now)
            state["nextAt"] = now + min(interval, 2.0 * 2 ** min(int(state.get("failures", 0)), 5))
            state["failures"] = int(state.get("failures", 0)) + 1
            self._save(HELMRELEASE, key, state, exc.reason, msg, warning=True)
            return
        config = _digest(values)
        release = _digest(
            [
                chart.digest,
                config,
                hr.release_name,
                hr.release_namespace,
                [p.model_dump(mode="json") for p in hr.spec.postRenderers],
            ]
        )
        state["helmChart"] = f"{chart.name}@{chart.version}"
        if release == state.get("lastAppliedDigest") and cond.is_ready(state):
            await self._unchanged(hr, state, release, now)
            return
        if release == state.get("lastAttemptedDigest") and cond.condition(state, "Stalled") and not asked:
            return  # retries exhausted on this very chart and values: wait for a change
        await self._upgrade(hr, state, chart, values, config, release, now)

    def _source_revision(self, hr: HelmRelease) -> str:
        spec = hr.spec.chart.spec if hr.spec.chart is not None else None
        if spec is None or spec.sourceRef.kind != "GitRepository":
            return ""
        src = f"{spec.sourceRef.namespace or hr.metadata.namespace}/{spec.sourceRef.name}"
        return str((self.gitops.state(SOURCE, src).get("artifact") or {}).get("revision", ""))

    async def _unchanged(self, hr: HelmRelease, state: dict[str, Any], release: str, now: float) -> None:
        """Nothing to render; only drift of what the release applied is looked for (driftDetection)."""
        key = hr.metadata.key
        state["nextAt"] = now + parse_duration(hr.spec.interval)
        mode = hr.spec.driftDetection.mode
        drifted = [] if mode == "disabled" else self._drifted(state)
        if not drifted:
            self._save(HELMRELEASE, key, state)
            return
        msg = f"{len(drifted)} object(s) changed since the release: {', '.join(drifted)}"
        if mode == "warn" or release not in self._rendered:
            self._save(HELMRELEASE, key, state, "DriftDetected", msg, warning=True)
            if mode == "warn":
                return
            state.pop("lastAppliedDigest", None)  # rendered before a restart: render again next time
            return
        built, _ = self._rendered[release]
        plan = self.gitops.compare(Owner(HELMRELEASE, key, True), built)
        await self.gitops.apply_plan(
            Owner(HELMRELEASE, key, True),
            plan,
            built.objects,
            state,
            state.get("lastAppliedRevision", ""),
            now,
        )
        cond.ready(state, "UpgradeSucceeded", state["lastReadyMessage"], now)
        self._save(HELMRELEASE, key, state, "DriftCorrected", f"{msg}; set back to the release", warning=True)

    def _drifted(self, state: dict[str, Any]) -> list[str]:
        out = []
        for ident, digest in state.get("digests", {}).items():
            kind, _, okey = ident.partition(" ")
            stored = self.store.get_object_text(kind, okey)
            if stored is None or hashlib.sha256(stored[0].encode()).hexdigest()[:20] != digest:
                out.append(ident)
        return out

    async def _upgrade(
        self,
        hr: HelmRelease,
        state: dict[str, Any],
        chart: Chart,
        values: dict[str, Any],
        config: str,
        release: str,
        now: float,
    ) -> None:
        key = hr.metadata.key
        history: list[dict[str, Any]] = state.setdefault("history", [])
        last_good = next((h for h in history if h["status"] == "deployed"), None)
        install = last_good is None
        action = "install" if install else "upgrade"
        number = (history[0]["version"] + 1) if history else 1
        state.update(
            lastAttemptedRevision=chart.version,
            lastAttemptedConfigDigest=config,
            lastAttemptedDigest=release,
            lastAttemptedReleaseAction=action,
        )
        owner = Owner(HELMRELEASE, key, True)
        try:
            built, notes = await self._render(hr, chart, values, number, install)
            plan = self.gitops.compare(owner, built)
            if self.gitops.hooks.gate is not None and not plan.empty:
                verdict = await self.gitops.hooks.gate(built.objects, key, chart.version, plan.files)
                if not verdict.allowed:
                    raise Failure("PolicyViolation", "spec.values", f"blocked by policy: {verdict.message}")
        except (Failure, ManifestError, BuildError) as exc:
            self._failed(hr, state, chart, config, number, action, exc, now)
            return
        self.renders += 1
        self._rendered[release] = (built, notes)
        if len(self._rendered) > 4 * max(1, len(self.store.keys(HELMRELEASE))):
            self._rendered.pop(next(iter(self._rendered)))
        for h in history:
            if h["status"] == "deployed":
                h["status"] = "superseded"
        stamp = now
        history.insert(
            0,
            {
                "name": hr.release_name,
                "namespace": hr.release_namespace,
                "version": number,
                "chartName": chart.name,
                "chartVersion": chart.version,
                "appVersion": chart.app_version,
                "configDigest": config,
                "digest": release,
                "firstDeployed": (last_good or {}).get("firstDeployed", stamp),
                "lastDeployed": stamp,
                "status": "deployed",
            },
        )
        del history[max(1, hr.spec.maxHistory) if hr.spec.maxHistory > 0 else len(history) :]
        msg = (
            f"Helm {action} succeeded for release {hr.release_namespace}/{hr.release_name}.v{number} "
            f"with chart {chart.name}@{chart.version}"
        )
        state.update(
            failures=0,
            installFailures=0,
            upgradeFailures=0,
            lastAppliedDigest=release,
            lastReadyMessage=msg,
            nextAt=now + parse_duration(hr.spec.interval),
        )
        await self.gitops.apply_plan(owner, plan, built.objects, state, chart.version, now)
        reason = "InstallSucceeded" if install else "UpgradeSucceeded"
        cond.ready(state, reason, msg, now)
        cond.set_condition(state, "Released", "True", reason, msg, now)
        cond.drop_condition(state, "Remediated")
        if notes:
            self.store.add_event(HELMRELEASE, key, "NotRun", f"release v{number}: {'; '.join(notes)}")
        self._save(HELMRELEASE, key, state, reason, msg)

    def _failed(
        self,
        hr: HelmRelease,
        state: dict[str, Any],
        chart: Chart,
        config: str,
        number: int,
        action: str,
        exc: Exception,
        now: float,
    ) -> None:
        key = hr.metadata.key
        if isinstance(exc, Failure):
            why = f"{hr.kind} {key} {exc.field}: {exc}"
        elif isinstance(exc, ManifestError):
            why = f"{hr.kind} {key} rendered {exc}"
        else:
            why = f"{hr.kind} {key} spec.postRenderers: {exc}"
        why = self.values.redact(
            hr, why
        )  # Helm's schema errors quote the value at fault, which may be a Secret's
        reason = "InstallFailed" if action == "install" else "UpgradeFailed"
        counter = f"{action}Failures"
        state[counter] = int(state.get(counter, 0)) + 1
        state["failures"] = int(state.get("failures", 0)) + 1
        msg = (
            f"Helm {action} failed for release {hr.release_namespace}/{hr.release_name} with chart "
            f"{chart.name}@{chart.version}: {why}"
        )
        history: list[dict[str, Any]] = state.setdefault("history", [])
        last_good = next((h for h in history if h["status"] == "deployed"), None)
        cond.set_condition(state, "Released", "False", reason, msg, now)
        act = hr.spec.install if action == "install" else hr.spec.upgrade
        if act.strategy.name == "RetryOnFailure":  # no remediation, no limit: tried again after retryInterval
            cond.failed(state, reason, msg, now)
            state["nextAt"] = now + parse_duration(act.strategy.retryInterval or "5m")
            self._save(HELMRELEASE, key, state, reason, msg, warning=True)
            return
        exhausted = act.remediation.retries >= 0 and state[counter] > act.remediation.retries
        if last_good is not None:
            kept = f"release v{last_good['version']} (chart {last_good['chartName']}@{last_good['chartVersion']})"
            cond.set_condition(
                state,
                "Remediated",
                "True",
                "RollbackSucceeded",
                f"nothing of the failed {action} was applied: {kept} keeps running",
                now,
            )
        if exhausted:
            attempts = state[counter]
            cond.failed(
                state, reason, f"{msg} (failed {attempts} time(s), retries exhausted)", now, stalled=True
            )
            cond.set_condition(
                state,
                "Stalled",
                "True",
                "RetriesExceeded",
                f"Failed to {action} after {attempts} attempt(s)",
                now,
            )
            state["nextAt"] = now + parse_duration(hr.spec.interval)
        else:
            cond.failed(state, reason, msg, now)
            state["nextAt"] = now + min(parse_duration(hr.spec.interval), 2.0 * 2 ** min(state[counter], 5))
        self._save(HELMRELEASE, key, state, reason, msg, warning=True)

    async def _render(
        self, hr: HelmRelease, chart: Chart, values: dict[str, Any], number: int, install: bool
    ) -> tuple[Built, list[str]]:
        try:
            texts = await asyncio.to_thread(
                helm_render.render,
                chart.archive,
                values,
                name=hr.release_name,
                namespace=hr.release_namespace,
                revision=number,
                install=install,
            )
        except helm_render.RenderError as exc:
            field = "spec.values" if exc.field == "values" else "spec.chart"
            raise Failure("RenderFailed", field, f"chart {chart.name}@{chart.version}: {exc}") from None
        notes: list[str] = []
        docs: list[tuple[str, Any]] = []
        hooks: list[str] = []
        for path in sorted(texts):
            if not path.endswith((".yaml", ".yml")) or not texts[path].strip():
                continue
            for doc in documents(texts[path], f"chart {chart.name}@{chart.version} {path}"):
                if not isinstance(doc, dict):
                    continue
                meta = doc.setdefault("metadata", {})
                if isinstance(meta, dict):
                    if "helm.sh/hook" in (meta.get("annotations") or {}):
                        hooks.append(f"{doc.get('kind')} {meta.get('name')}")
                        continue
                    if doc.get("kind") not in NOT_RUN_KINDS:
                        meta.setdefault("namespace", hr.release_namespace)
                docs.append((path, doc))
        if hooks:
            notes.append(f"Helm hooks are not run on the local platform: {', '.join(hooks)}")
        if hr.spec.test.enable:
            notes.append("Helm tests (spec.test) are not run on the local platform")
        if hr.spec.postRenderers:
            docs = await self._post_render(hr, docs)
        objects, files, problems = [], {}, []
        for path, doc in docs:
            loaded = read_documents([doc], f"chart {chart.name}@{chart.version} {path}")
            problems += loaded.errors
            for obj in loaded.objects:
                ident = f"{obj.kind} {obj.metadata.key}"
                if ident in files:
                    continue
                files[ident] = f"chart {chart.name}@{chart.version} {path}"
                objects.append(obj)
        if problems:
            raise problems[0]
        bodies = [
            json.dumps(o.model_dump(mode="json", exclude_none=True, by_alias=True), sort_keys=True)
            for o in objects
        ]
        return Built(objects, files, bodies, notes), notes

    async def _post_render(self, hr: HelmRelease, docs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """Flux's kustomize post-renderer: the rendered objects through the real kustomize with the patches."""
        with tempfile.TemporaryDirectory(prefix="rheostat-postrender-") as scratch:
            d = Path(scratch)
            (d / "rendered.yaml").write_text(yaml.safe_dump_all([doc for _, doc in docs]))
            for i, post in enumerate(hr.spec.postRenderers):
                if post.kustomize is None:
                    continue
                k = post.kustomize
                recipe: dict[str, Any] = {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": ["rendered.yaml"],
                }
                if k.patches:
                    recipe["patches"] = [p.model_dump(mode="json", exclude_none=True) for p in k.patches]
                if k.patchesStrategicMerge:
                    recipe["patchesStrategicMerge"] = [yaml.safe_dump(p) for p in k.patchesStrategicMerge]
                if k.images:
                    recipe["images"] = k.images
                (d / "kustomization.yaml").write_text(yaml.safe_dump(recipe))
                try:
                    out = await kustomize(
                        d, parse_duration(hr.spec.timeout or "5m"), shown=f"postRenderers[{i}]"
                    )
                except BuildError as exc:
                    raise Failure(
                        "PostRenderFailed", f"spec.postRenderers[{i}].kustomize", str(exc)
                    ) from None
                (d / "rendered.yaml").write_text(out)
            text = (d / "rendered.yaml").read_text()
        where = {f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}": path for path, doc in docs}
        out_docs = [doc for doc in documents(text, "post-rendered") if isinstance(doc, dict)]
        return [
            (where.get(f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}", "post-rendered"), doc)
            for doc in out_docs
        ]

    async def _uninstall_gone(self, now: float) -> None:
        """A HelmRelease deleted (pruned from Git): its objects are removed, as `helm uninstall` does."""
        present = set(self.store.keys(HELMRELEASE))
        for key, state in self.store.list_states(HELMRELEASE).items():
            if key in present or not state.get("inventory"):
                continue
            removed = [tuple(i) for i in state["inventory"]]
            with self.store.transaction():
                for kind, okey in removed:
                    self.store.delete_object(kind, okey)
                    if kind == "Canary":
                        self.store.delete_status(okey)
                self.store.add_event(
                    HELMRELEASE,
                    key,
                    "UninstallSucceeded",
                    f"Helm uninstall succeeded: {len(removed)} object(s) removed",
                )
                self.store.delete_state(HELMRELEASE, key)
            self.gitops._index_cache = None
            if self.gitops.hooks.on_applied is not None:
                await self.gitops.hooks.on_applied([], [(k, o) for k, o in removed])
