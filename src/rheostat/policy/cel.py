"""CEL through cel-python (`celpy`), with the Kubernetes string and regex functions policies commonly use.

Kubernetes type-checks CEL against the schema before running it; celpy does not, so a type mistake surfaces
when an object is evaluated (as an evaluation error, which blocks), not when the policy is loaded.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import celpy
import re2  # type: ignore[import-untyped]  # google-re2 ships no type information
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

from rheostat.model.policy import Validation, Variable

CelValue = Any  # a celtypes value, or a CELEvalError carried as a value


class CelError(Exception):
    """An expression that does not parse, or that fails or gives the wrong type when evaluated."""


def _message(exc: BaseException) -> str:
    if isinstance(exc, CELEvalError) and exc.args:
        return str(exc.args[0])
    return str(exc)


# ---- Kubernetes CEL libraries (a subset: strings, regex, lists) ----------------------------------------------


def _join(items: celtypes.ListType, sep: celtypes.StringType | None = None) -> celtypes.StringType:
    return celtypes.StringType((sep or "").join(str(i) for i in items))


def _split(text: celtypes.StringType, sep: celtypes.StringType) -> celtypes.ListType:
    return celtypes.ListType([celtypes.StringType(p) for p in str(text).split(str(sep))])


def _lower(text: celtypes.StringType) -> celtypes.StringType:
    return celtypes.StringType(str(text).lower())


def _upper(text: celtypes.StringType) -> celtypes.StringType:
    return celtypes.StringType(str(text).upper())


def _trim(text: celtypes.StringType) -> celtypes.StringType:
    return celtypes.StringType(str(text).strip())


def _replace(
    text: celtypes.StringType, old: celtypes.StringType, new: celtypes.StringType
) -> celtypes.StringType:
    return celtypes.StringType(str(text).replace(str(old), str(new)))


def _index_of(target: CelValue, item: CelValue) -> celtypes.IntType:
    if isinstance(target, celtypes.StringType):
        return celtypes.IntType(str(target).find(str(item)))
    return celtypes.IntType(list(target).index(item) if item in target else -1)


def _last_index_of(target: CelValue, item: CelValue) -> celtypes.IntType:
    if isinstance(target, celtypes.StringType):
        return celtypes.IntType(str(target).rfind(str(item)))
    values = list(target)
    return celtypes.IntType(len(values) - 1 - values[::-1].index(item) if item in values else -1)


def _substring(
    text: celtypes.StringType, start: celtypes.IntType, end: CelValue = None
) -> celtypes.StringType:
    s = str(text)
    return celtypes.StringType(s[int(start) :] if end is None else s[int(start) : int(end)])


def _find(text: celtypes.StringType, pattern: celtypes.StringType) -> celtypes.StringType:
    found = re2.search(str(pattern), str(text))
    return celtypes.StringType(found.group(0) if found else "")


def _find_all(
    text: celtypes.StringType, pattern: celtypes.StringType, limit: CelValue = None
) -> celtypes.ListType:
    hits = [m.group(0) for m in re2.finditer(str(pattern), str(text))]
    if limit is not None and int(limit) >= 0:
        hits = hits[: int(limit)]
    return celtypes.ListType([celtypes.StringType(h) for h in hits])


def _is_sorted(items: celtypes.ListType) -> celtypes.BoolType:
    values: list[Any] = list(items)
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(values)))


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "join": _join,
    "split": _split,
    "lowerAscii": _lower,
    "upperAscii": _upper,
    "trim": _trim,
    "replace": _replace,
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "substring": _substring,
    "find": _find,
    "findAll": _find_all,
    "isSorted": _is_sorted,
}

# The interpreted runner: the compiled one resolves extension functions through its own module globals
# and reports every evaluation error as an "internal error".
_ENV = celpy.Environment()


class CelExpression:
    """One compiled expression; `what` names it in errors (template, validation index)."""

    def __init__(self, source: str, what: str) -> None:
        self.source = source
        self.what = what
        try:
            self._program = _ENV.program(_ENV.compile(source), functions=FUNCTIONS)
        except Exception as exc:  # celpy raises parse and transpile errors of several types
            raise CelError(f"{what}: {_message(exc)}") from exc

    def value(self, activation: Mapping[str, CelValue]) -> CelValue:
        try:
            return self._program.evaluate(dict(activation))
        except Exception as exc:  # an evaluation error of any kind fails closed
            raise CelError(f"{self.what}: {_message(exc)}") from exc

    def boolean(self, activation: Mapping[str, CelValue]) -> bool:
        result = self.value(activation)
        if not isinstance(result, celtypes.BoolType):
            raise CelError(f"{self.what}: must evaluate to a bool, got {type(result).__name__}")
        return bool(result)


def to_cel(value: object) -> CelValue:
    return json_to_cel(value)  # type: ignore[arg-type]


class CelVariables:
    """`variables`: each compiled in order; a failing one is carried as an error, raised only if used."""

    def __init__(self, variables: list[Variable], what: str) -> None:
        self._compiled = [
            (v.name, CelExpression(v.expression, f"{what} variables.{v.name}")) for v in variables
        ]

    def bind(self, activation: dict[str, CelValue], preset: Mapping[str, CelValue]) -> None:
        values: dict[celtypes.StringType, CelValue] = {celtypes.StringType(k): v for k, v in preset.items()}
        activation["variables"] = celtypes.MapType(values)
        for name, expr in self._compiled:
            try:
                values[celtypes.StringType(name)] = expr.value(activation)
            except CelError as exc:
                values[celtypes.StringType(name)] = CELEvalError(str(exc))
            activation["variables"] = celtypes.MapType(values)


class CelValidation:
    def __init__(self, validation: Validation, what: str) -> None:
        self.check = CelExpression(validation.expression, what)
        self.message = validation.message
        self.message_expr = (
            CelExpression(validation.messageExpression, f"{what} messageExpression")
            if validation.messageExpression
            else None
        )

    def failure(self, activation: Mapping[str, CelValue]) -> str | None:
        """None when the object passes; else the message (messageExpression, message, or the expression)."""
        if self.check.boolean(activation):
            return None
        if self.message_expr is not None:
            try:
                text = self.message_expr.value(activation)
                if isinstance(text, str) and text.strip():  # concatenation gives a plain str
                    return str(text)
            except CelError:
                pass  # Kubernetes falls back to message when messageExpression fails
        return self.message or f"failed expression: {self.check.source}"
