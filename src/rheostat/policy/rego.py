"""Rego through regorus (Microsoft's Rust engine; PyPI `gordon-to-regorus`, imported as `regorus`), v0 syntax.

Gatekeeper's library is written in Rego v0 (`violation[{"msg": m}] { ... }`), so every engine runs in v0 mode.
Each template gets its own engine: packages and `data.lib` helpers of two templates never collide.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import regorus  # type: ignore[import-untyped]  # the wheel ships no type information


class RegoError(Exception):
    """The engine refused a policy or failed while evaluating; the message is the engine's, with line."""


class RegoProgram(Protocol):
    """A compiled template: evaluate `violation` for one input with the given `data` document."""

    def violations(self, input_json: str, data_json: str) -> list[Any]: ...


class RegoCompiler(Protocol):
    name: str

    def compile(self, label: str, rego: str, libs: list[str]) -> RegoProgram: ...


def engine_message(exc: BaseException) -> str:
    """The engine's message without the Rust backtrace it appends."""
    return str(exc).split("Stack backtrace:")[0].strip()


class RegorusProgram:
    def __init__(self, engine: Any, rule: str) -> None:
        self._engine = engine
        self._rule = rule
        self._data_json: str | None = None

    def violations(self, input_json: str, data_json: str) -> list[Any]:
        try:
            if data_json != self._data_json:  # the same inventory is loaded once per PolicySet evaluation
                self._engine.clear_data()
                self._engine.add_data_json(data_json)
                self._data_json = data_json
            self._engine.set_input_json(input_json)
            result = json.loads(self._engine.eval_rule_as_json(self._rule))
        except (RuntimeError, ValueError, TypeError) as exc:
            raise RegoError(engine_message(exc)) from exc
        if not isinstance(result, list):
            raise RegoError(f"{self._rule} is not a set of violations: {result!r:.200}")
        return result


class Regorus:
    name = "regorus"

    def compile(self, label: str, rego: str, libs: list[str]) -> RegoProgram:
        engine = regorus.Engine()
        engine.set_rego_v0(True)
        try:
            package = engine.add_policy(f"{label}.rego", rego)
            for i, lib in enumerate(libs):
                engine.add_policy(f"{label}.lib{i}.rego", lib)
        except (RuntimeError, ValueError) as exc:
            raise RegoError(engine_message(exc)) from exc
        rule = f"{package}.violation"
        engine.add_data_json('{"inventory":{"cluster":{},"namespace":{}}}')
        engine.set_input_json("{}")
        try:
            engine.eval_rule_as_json(rule)
        except RuntimeError as exc:
            message = engine_message(exc)
            if "not a valid rule path" in message:
                raise RegoError(f"package {package.removeprefix('data.')} has no violation rule") from exc
            # Other errors depend on the input; they surface per object, at evaluation.
        return RegorusProgram(engine, rule)
