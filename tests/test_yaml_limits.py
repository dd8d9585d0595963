"""YAML within bounds: an alias bomb or absurd nesting is refused with the file and line, wherever YAML is
read (a repository, a secret file, a policy test suite); anchors used normally keep working."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from rheostat.gitops import conditions as cond
from rheostat.model.load import ManifestError, parse_text
from rheostat.model.workload import Workload
from rheostat.model.yaml_limits import MAX_ALIASES, MAX_DEPTH
from rheostat.policy.suites import read_suite
from rheostat.reactor.alerts import Secrets
from tests.test_gitops_reconciler import engine, keys, workload

LEVELS = "abcdefg"


def bomb() -> str:
    """The billion laughs: 9 lists of 9 ... 7 levels, 9**7 (4.8 million) leaves once expanded."""
    lines = ['      a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in itertools.pairwise(LEVELS):
        lines.append(f"      {name}: &{name} [{','.join([f'*{prev}'] * 9)}]")
    return (
        "apiVersion: rheostat.dev/v1alpha1\nkind: Workload\nmetadata: {name: web, namespace: default}\n"
        'spec:\n  replicas: 1\n  template:\n    command: [app, "{port}"]\n    annotations:\n'
        + "\n".join(lines)
        + "\n"
    )


def test_an_alias_bomb_is_refused_with_the_file_and_line() -> None:
    text = bomb()
    assert len(text) < 700
    with pytest.raises(ManifestError) as info:
        parse_text(text, "deploy/web.yaml")
    message = str(info.value)
    assert message.startswith("deploy/web.yaml: line 14, column ")  # the alias that passes the bound
    assert "refused: aliases expand the file by more than 100,000 nodes" in message


def test_anchors_for_shared_labels_keep_working() -> None:
    text = """apiVersion: rheostat.dev/v1alpha1
kind: Workload
metadata:
  name: web
  namespace: default
  labels: &labels {app: web, team: checkout}
spec:
  replicas: 1
  template:
    command: &cmd [app, --port, "{port}"]
    annotations: *labels
---
apiVersion: rheostat.dev/v1alpha1
kind: Workload
metadata: {name: api, namespace: default}
spec:
  replicas: 1
  template: {command: [app, --port, "{port}"], annotations: {a: "1"}}
"""
    web, api = parse_text(text, "deploy/web.yaml")
    assert isinstance(web, Workload) and isinstance(api, Workload)
    assert web.spec.template.annotations == {"app": "web", "team": "checkout"}
    assert web.spec.template.command == ["app", "--port", "{port}"]


def test_many_small_aliases_pass_up_to_the_alias_bound() -> None:
    body = "base: &v x\nitems:\n" + "".join("- *v\n" for _ in range(MAX_ALIASES))
    # Within the bound: read, then refused for what it is (no apiVersion, no kind).
    with pytest.raises(ManifestError, match="apiVersion: is missing"):
        parse_text(body, "many.yaml")
    with pytest.raises(ManifestError, match=rf"line {MAX_ALIASES + 3}, column 3: refused: more than"):
        parse_text(body + "- *v\n", "many.yaml")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[" * 100_000 + "]" * 100_000, 1),  # libyaml's composer recursed in C and crashed the process
        ("x:\n" + "".join(" " * i + "- \n" for i in range(1, 2 * MAX_DEPTH)), MAX_DEPTH + 1),
        ("{a: " * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1), 1),
    ],
)
def test_absurd_nesting_is_refused_with_the_line(text: str, line: int) -> None:
    with pytest.raises(ManifestError) as info:
        parse_text(text, "deep.yaml")
    assert str(info.value).startswith(f"deep.yaml: line {line}, column ")
    assert f"refused: nesting deeper than {MAX_DEPTH} levels" in str(info.value)


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(ManifestError, match=r"line 1, column \d+: refused: alias \*a refers to a node"):
        parse_text("a: &a [1, *a]\n", "loop.yaml")


def test_malformed_yaml_still_says_so() -> None:
    with pytest.raises(ManifestError, match=r"bad.yaml: line 2, column 2: malformed YAML"):
        parse_text("a: [1\nb: 2\n", "bad.yaml")
    with pytest.raises(ManifestError, match="malformed YAML: found undefined alias"):
        parse_text("a: *nothing\n", "bad.yaml")


async def test_a_bomb_in_the_repository_applies_nothing_and_names_file_and_line(tmp_path: Path) -> None:
    g, store, repo = engine(tmp_path)
    (repo / "a.yaml").write_text(workload("a"))
    await g.reconcile_once()
    assert keys(store) == ["apps/a"]
    (repo / "b.yaml").write_text(workload("b"))
    (repo / "web.yaml").write_text(bomb())
    await g.reconcile_once(force=True)
    ready = cond.condition(g.state("Kustomization", "flux-system/root"), "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "BuildFailed")
    assert "web.yaml: line 14" in ready["message"] and "aliases expand the file" in ready["message"]
    assert keys(store) == ["apps/a"]  # nothing of the revision applied, b included
    stored = sum(len(str(o.body)) for o in store.list_objects("Workload"))
    assert stored < 10_000


def test_a_bomb_in_a_secret_file_is_refused_with_the_line(tmp_path: Path) -> None:
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "slack.yaml").write_text(
        "token: abc\n" + "\n".join(bomb().splitlines()[8:]).replace("      ", "") + "\n"
    )
    with pytest.raises(ValueError, match=r"secret default/slack: line 7: refused: aliases expand"):
        Secrets(tmp_path, environ={}).get("default", "slack")
    env = {"RHEOSTAT_SECRET_DEFAULT_HOOK": "[" * 100_000}
    with pytest.raises(ValueError, match=r"secret default/hook: line 1: refused: nesting deeper"):
        Secrets(tmp_path, environ=env).get("default", "hook")


def test_a_bomb_in_a_policy_suite_is_refused(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text("kind: Suite\n" + "\n".join(bomb().splitlines()[8:]).replace("      ", "") + "\n")
    with pytest.raises(Exception, match="refused: aliases expand") as info:
        read_suite(suite)
    assert "line 7" in str(info.value)
