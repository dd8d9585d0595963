"""`rheostat get --watch`: what it prints when an item changes and when one is deleted, in every format."""

from __future__ import annotations

import json

import pytest
import yaml

from rheostat.cli.get import Printer
from rheostat.cli.kinds import Kind


def thing(name: str, phase: str) -> dict[str, object]:
    return {"metadata": {"namespace": "team", "name": name}, "phase": phase}


KIND = Kind(
    "thing",
    "things",
    (),
    "/things",
    True,
    ("NAME", "PHASE"),
    lambda it: [it["metadata"]["name"], it["phase"]],
)


def watched(output: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The lines a watch prints after its first listing: one change, then a deletion."""
    p = Printer(KIND, output, show_namespace=False, seen={})
    p.all([thing("web", "Progressing"), thing("api", "Succeeded")], single=False, watching=True)
    capsys.readouterr()
    p.changes([thing("web", "Succeeded"), thing("api", "Succeeded")])
    p.changes([thing("web", "Succeeded")])
    p.changes([thing("web", "Succeeded")])  # nothing new: nothing printed
    return capsys.readouterr().out.splitlines()


def test_a_table_watch_prints_the_change_then_the_deleted_row_marked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = watched("table", capsys)
    assert [line.split() for line in lines] == [["web", "Succeeded"], ["api", "Succeeded", "(deleted)"]]


def test_name_json_and_yaml_watches_say_deleted(capsys: pytest.CaptureFixture[str]) -> None:
    assert watched("name", capsys) == ["thing/team/api deleted"]  # a name does not change with the phase
    out = "\n".join(watched("json", capsys))
    docs = [json.loads(d) for d in out.replace("}\n{", "}\x00{").split("\x00")]
    assert docs[0]["phase"] == "Succeeded" and docs[0]["metadata"]["name"] == "web"
    assert docs[1]["type"] == "DELETED" and docs[1]["object"]["metadata"]["name"] == "api"
    docs = [d for d in yaml.safe_load_all("\n".join(watched("yaml", capsys))) if d]
    assert docs[1] == {"type": "DELETED", "object": thing("api", "Succeeded")}
