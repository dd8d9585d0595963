"""`describe canary` in words: strategies, match rules, the last run picked from the history."""

from __future__ import annotations

from typing import Any

from rheostat.cli.describe import checks, last_run, matches, strategy_line


def canary(strategy: str, **analysis: Any) -> dict[str, Any]:
    return {"strategy": strategy, "spec": {"analysis": analysis}}


def test_each_strategy_in_words() -> None:
    assert strategy_line(canary("canary", stepWeight=10, maxWeight=50)) == "canary: +10% a step up to 50%"
    assert strategy_line(canary("canary", stepWeights=[1, 5, 25])) == "canary: weights 1, 5, 25%"
    mirrored = canary("canary", stepWeight=20, maxWeight=40, mirror=True, mirrorWeight=30)
    assert strategy_line(mirrored).endswith("mirrored (30% of requests copied)")
    ab = canary("ab-testing", iterations=10, match=[{"headers": {"x-canary": {"exact": "insider"}}}])
    assert strategy_line(ab) == 'ab-testing: 10 iterations to users matching header x-canary exact "insider"'
    bg = canary("blue-green", iterations=5)
    assert strategy_line(bg) == "blue-green: 5 iterations on the canary, then all traffic switches"


def test_match_rules_are_alternatives_and_their_parts_all_hold() -> None:
    rules: list[dict[str, Any]] = [
        {"headers": {"user-agent": {"regex": ".*Firefox.*"}}, "queryParams": {"beta": {"exact": "1"}}},
        {"sourceLabels": {"app": "web"}},
    ]
    assert matches(rules) == (
        'header user-agent regex ".*Firefox.*" and query beta exact "1" or source label app=web'
    )


def row(phase: str, weight: int = 0, ok: bool | None = None, value: float = 100.0) -> dict[str, Any]:
    metrics = (
        []
        if ok is None
        else [
            {
                "name": "rate",
                "value": value,
                "primaryValue": 99.5,
                "min": 99.0,
                "max": None,
                "ok": ok,
                "message": "" if ok else "below 99",
            }
        ]
    )
    return {"phase": phase, "canaryWeight": weight, "message": phase, "metrics": metrics, "ts": 0.0}


def test_the_last_run_is_the_newest_running_rows_and_the_row_that_ended_them() -> None:
    history = [
        row("Initialized"),
        row("Progressing", 10, ok=True),
        row("Succeeded"),
        row("Progressing", 10, ok=True, value=100),
        row("Progressing", 20, ok=False, value=90),
        row("Progressing", 20, ok=False, value=80),
        row("Failed"),
    ]
    run = last_run(history)
    assert [r["phase"] for r in run] == ["Progressing", "Progressing", "Progressing", "Failed"]
    assert checks(run) == [["rate", "80", "99.5", ">= 99", "1", "2", "below 99"]]
    assert last_run([row("Initialized")]) == []
    assert [r["phase"] for r in last_run(history[:5])] == ["Progressing", "Progressing"]  # still running
