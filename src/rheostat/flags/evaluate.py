"""Evaluation of one flag set with the maintained flagd evaluator for Python (`openfeature-flagd-core`).

This module adds no flag semantics of its own: targeting, `$ref`, `fractional` (v3, CBOR-based bucketing in
flagd-core 2.0), `sem_ver`, `starts_with`/`ends_with`, reasons and errors are flagd-core's. It turns flagd-core's
answers and exceptions into one value, `Resolution`, that never raises: errors are error codes.

A flag that is disabled or has no targeting has one answer whatever the context: flagd-core gives it once, when
the set is loaded, and every plain `evaluate(key, context)` returns that same `Resolution` (OFREP keeps its JSON
while it is that object). Benchmarks: docs/benchmarks.md, "Flags: evaluation and OFREP".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final

from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode, OpenFeatureError
from openfeature.flag_evaluation import FlagResolutionDetails, Reason

from rheostat.model.flags import FlagdConfig, FlagType, MetadataValue
from rheostat.util.errors import describe_error, json_type

STATIC: Final = "STATIC"
TARGETING_MATCH: Final = "TARGETING_MATCH"
DEFAULT: Final = "DEFAULT"
DISABLED: Final = "DISABLED"
ERROR: Final = "ERROR"

FLAG_NOT_FOUND: Final = "FLAG_NOT_FOUND"
PARSE_ERROR: Final = "PARSE_ERROR"
TYPE_MISMATCH: Final = "TYPE_MISMATCH"
TARGETING_KEY_MISSING: Final = "TARGETING_KEY_MISSING"
INVALID_CONTEXT: Final = "INVALID_CONTEXT"
GENERAL: Final = "GENERAL"

_PLACEHOLDER: Final[dict[FlagType, Any]] = {
    "boolean": False,
    "string": "",
    "integer": 0,
    "float": 0.0,
    "object": {},
}


class InvalidContext(ValueError):
    """The evaluation context cannot be used (for example a targetingKey that is not a string)."""


@dataclass(frozen=True)
class Context:
    """An evaluation context: the targeting key and the other attributes, as JSON gives them."""

    targeting_key: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> Context:
        """OFREP's `context` object. Missing or null is an empty context; `targetingKey` must be a string."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise InvalidContext(f"context must be a JSON object, got {json_type(data)}")
        attrs = dict(data)
        key = attrs.pop("targetingKey", None)
        if key is not None and not isinstance(key, str):
            raise InvalidContext(f"context.targetingKey must be a string, got {json_type(key)}")
        return cls(targeting_key=key, attributes=attrs)

    def to_openfeature(self) -> EvaluationContext:
        return EvaluationContext(targeting_key=self.targeting_key, attributes=dict(self.attributes))


@dataclass(frozen=True)
class Resolution:
    """The answer for one flag. `has_value` is False when the caller's own (code) default applies.

    Read-only: the answer of a flag without targeting is one Resolution shared by every caller."""

    key: str
    value: Any = None
    has_value: bool = False
    variant: str | None = None
    reason: str = DEFAULT
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)
    error_code: str | None = None
    error_message: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_code is None

    def to_json(self) -> dict[str, Any]:
        """For logs and the CLI; the OFREP wire format is the server's business."""
        out: dict[str, Any] = {"key": self.key, "reason": self.reason}
        if self.has_value:
            out["value"] = self.value
        if self.variant is not None:
            out["variant"] = self.variant
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        if self.error_code is not None:
            out["errorCode"] = self.error_code
            out["errorDetails"] = self.error_message or ""
        return out


_FIELDS: Final = tuple(f.name for f in fields(Resolution))
_new = object.__new__


def _answer(
    key: str, value: Any, has_value: bool, variant: str | None, reason: str, metadata: Any
) -> Resolution:
    """`Resolution(key, value, has_value, variant, reason, metadata)`, built without the frozen dataclass's
    eight `object.__setattr__` calls: about 0.6 µs instead of 1.4, on every evaluation."""
    res: Resolution = _new(Resolution)
    res.__dict__.update(
        key=key,
        value=value,
        has_value=has_value,
        variant=variant,
        reason=reason,
        metadata=metadata,
        error_code=None,
        error_message=None,
    )
    return res


# `_answer` must fill exactly the fields a Resolution has, and agree with its constructor; reasons are read
# with str(), which is their value while openfeature's Reason is a StrEnum.
assert str(Reason.TARGETING_MATCH) == TARGETING_MATCH
assert tuple(vars(_answer("k", 1, True, "v", STATIC, {}))) == _FIELDS
assert _answer("k", 1, True, "v", STATIC, {}) == Resolution("k", 1, True, "v", STATIC, {})


class FlagSetEvaluator:
    """One flag set loaded into its own flagd-core evaluator."""

    def __init__(self, config: FlagdConfig) -> None:
        self.config = config
        self.types: dict[str, FlagType] = {key: flag.flag_type for key, flag in config.flags.items()}
        self._core = FlagdCore()
        # flagd-core edits the dictionaries it is given (it pops `defaultVariant`): give it its own copy.
        self._core.set_flags(json.loads(json.dumps(config.to_flagd())))
        core = self._core
        resolvers: dict[
            FlagType, Callable[[str, Any, EvaluationContext | None], FlagResolutionDetails[Any]]
        ] = {
            "boolean": core.resolve_boolean_value,
            "string": core.resolve_string_value,
            "integer": core.resolve_integer_value,
            "float": core.resolve_float_value,
            "object": core.resolve_object_value,
        }
        self._resolvers = resolvers
        # the plain call (no type asked, no code default): each flag's resolver and placeholder default
        self._plain: dict[str, tuple[Callable[..., FlagResolutionDetails[Any]], Any]] = {
            key: (resolvers[kind], _PLACEHOLDER[kind]) for key, kind in self.types.items()
        }
        # A flag that is disabled, or has no targeting, gets one answer whatever the context: flagd-core gives
        # it once here (STATIC, DISABLED, or its error) and that same Resolution is returned to every plain
        # call. Callers share it: its value and metadata are not to be edited (flagd-core already hands out
        # the variant values it holds).
        self._fixed: dict[str, Resolution] = {}
        for key, flag in config.flags.items():
            if flag.state == "DISABLED" or not flag.targeting:
                self._fixed[key] = self.evaluate(key)

    def __contains__(self, key: str) -> bool:
        return key in self.types

    def evaluate(
        self,
        key: str,
        context: Context | EvaluationContext | None = None,
        flag_type: FlagType | None = None,
        default: Any = None,
    ) -> Resolution:
        """Resolve `key` as `flag_type` (the flag's own type when None) with the caller's `default`.

        Never raises: a missing flag is FLAG_NOT_FOUND, a wrong type TYPE_MISMATCH, a bad rule PARSE_ERROR or
        GENERAL, and an unexpected failure inside the evaluator GENERAL with its message.
        """
        plain = None
        if flag_type is None and default is None:
            fixed = self._fixed.get(key)
            if fixed is not None:
                return fixed
            plain = self._plain.get(key)
        if plain is not None:
            resolve, default = plain
        else:
            kind: FlagType = flag_type or self.types.get(key) or "object"
            if default is None and flag_type is None:
                default = _PLACEHOLDER[kind]
            resolve = self._resolvers[kind]
        if isinstance(context, Context):  # flagd-core copies the attributes itself: no copy here
            context = EvaluationContext(context.targeting_key, context.attributes)
        try:
            details = resolve(key, default, context)
        except OpenFeatureError as exc:
            code = exc.error_code.value if isinstance(exc.error_code, ErrorCode) else str(exc.error_code)
            return Resolution(
                key, default, False, None, ERROR, self._metadata(key), code, exc.error_message or str(exc)
            )
        except Exception as exc:  # a fault inside the evaluator is an evaluation error, never a crash
            return Resolution(
                key, default, False, None, ERROR, self._metadata(key), GENERAL, describe_error(exc)
            )
        # openfeature's Reason is a StrEnum: str() gives its value
        reason = "UNKNOWN" if details.reason is None else str(details.reason)
        variant = details.variant
        # flagd-core builds a new metadata dict for every answer: it is this answer's own, no copy needed
        metadata = details.flag_metadata
        return _answer(
            key,
            details.value,
            variant is not None and reason != DISABLED,
            variant,
            reason,
            metadata if metadata is not None else {},
        )

    def _metadata(self, key: str) -> dict[str, MetadataValue]:
        """Metadata is returned best effort even for errors: the set's, overlaid with the flag's."""
        out: dict[str, MetadataValue] = dict(self.config.metadata)
        flag = self.config.flags.get(key)
        if flag is not None:
            out.update(flag.metadata)
        return out
