"""Evaluation of one flag set with the maintained flagd evaluator for Python (`openfeature-flagd-core`).

This module adds no flag semantics of its own: targeting, `$ref`, `fractional` (v3, CBOR-based bucketing in
flagd-core 2.0), `sem_ver`, `starts_with`/`ends_with`, reasons and errors are flagd-core's. It turns flagd-core's
answers and exceptions into one value, `Resolution`, that never raises: errors are error codes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode, OpenFeatureError
from openfeature.flag_evaluation import FlagResolutionDetails, Reason

from rheostat.model.flags import FlagdConfig, FlagType, MetadataValue

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
            raise InvalidContext(f"context must be a JSON object, got {type(data).__name__}")
        attrs = dict(data)
        key = attrs.pop("targetingKey", None)
        if key is not None and not isinstance(key, str):
            raise InvalidContext(f"context.targetingKey must be a string, got {type(key).__name__}")
        return cls(targeting_key=key, attributes=attrs)

    def to_openfeature(self) -> EvaluationContext:
        return EvaluationContext(targeting_key=self.targeting_key, attributes=dict(self.attributes))


@dataclass(frozen=True)
class Resolution:
    """The answer for one flag. `has_value` is False when the caller's own (code) default applies."""

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


def _reason(reason: str | Reason | None) -> str:
    if reason is None:
        return "UNKNOWN"
    return reason.value if isinstance(reason, Reason) else str(reason)


class FlagSetEvaluator:
    """One flag set loaded into its own flagd-core evaluator."""

    def __init__(self, config: FlagdConfig) -> None:
        self.config = config
        self.types: dict[str, FlagType] = {key: flag.flag_type for key, flag in config.flags.items()}
        self._core = FlagdCore()
        # flagd-core edits the dictionaries it is given (it pops `defaultVariant`): give it its own copy.
        self._core.set_flags(json.loads(json.dumps(config.to_flagd())))

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
        own = self.types.get(key)
        kind: FlagType = flag_type or own or "object"
        if default is None and flag_type is None:
            default = _PLACEHOLDER[kind]
        ctx = context.to_openfeature() if isinstance(context, Context) else context
        try:
            details = self._resolve(kind, key, default, ctx)
        except OpenFeatureError as exc:
            code = exc.error_code.value if isinstance(exc.error_code, ErrorCode) else str(exc.error_code)
            return Resolution(
                key, default, False, None, ERROR, self._metadata(key), code, exc.error_message or str(exc)
            )
        except Exception as exc:  # a fault inside the evaluator is an evaluation error, never a crash
            return Resolution(
                key, default, False, None, ERROR, self._metadata(key), GENERAL, f"{type(exc).__name__}: {exc}"
            )
        reason = _reason(details.reason)
        has_value = details.variant is not None and reason != DISABLED
        return Resolution(
            key=key,
            value=details.value,
            has_value=has_value,
            variant=details.variant,
            reason=reason,
            metadata=dict(details.flag_metadata or {}),
        )

    def _resolve(
        self, kind: FlagType, key: str, default: Any, ctx: EvaluationContext | None
    ) -> FlagResolutionDetails[Any]:
        core = self._core
        if kind == "boolean":
            return core.resolve_boolean_value(key, default, ctx)
        if kind == "string":
            return core.resolve_string_value(key, default, ctx)
        if kind == "integer":
            return core.resolve_integer_value(key, default, ctx)
        if kind == "float":
            return core.resolve_float_value(key, default, ctx)
        return core.resolve_object_value(key, default, ctx)

    def _metadata(self, key: str) -> dict[str, MetadataValue]:
        """Metadata is returned best effort even for errors: the set's, overlaid with the flag's."""
        out: dict[str, MetadataValue] = dict(self.config.metadata)
        flag = self.config.flags.get(key)
        if flag is not None:
            out.update(flag.metadata)
        return out
