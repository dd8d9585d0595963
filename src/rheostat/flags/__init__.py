"""Feature flags: flagd flag sets from Git, evaluated with openfeature-flagd-core (see docs/flags.md)."""

from rheostat.flags.evaluate import Context, FlagSetEvaluator, InvalidContext, Resolution
from rheostat.flags.store import (
    FlagChange,
    FlagInfo,
    FlagSetError,
    FlagSource,
    FlagStore,
    source_of,
    sources_from_store,
)

__all__ = [
    "Context",
    "FlagChange",
    "FlagInfo",
    "FlagSetError",
    "FlagSetEvaluator",
    "FlagSource",
    "FlagStore",
    "InvalidContext",
    "Resolution",
    "source_of",
    "sources_from_store",
]
