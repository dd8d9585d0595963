"""An explicit registry: names are registered once, and an unknown name is an error that names it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownPlugin(LookupError):
    pass


class Registry(Generic[T]):
    def __init__(self, family: str) -> None:
        self.family = family
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str, factory: Callable[..., T]) -> None:
        if name in self._factories:
            raise ValueError(f"{self.family} {name!r} is registered twice")
        self._factories[name] = factory

    def create(self, name: str, *args: object, **kwargs: object) -> T:
        try:
            factory = self._factories[name]
        except KeyError:
            known = ", ".join(sorted(self._factories)) or "none"
            raise UnknownPlugin(f"unknown {self.family} {name!r}; known: {known}") from None
        return factory(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._factories)
