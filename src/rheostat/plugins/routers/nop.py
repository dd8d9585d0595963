"""A router that routes nothing: for a platform that has its own routing, or a dry run."""

from __future__ import annotations

from rheostat.model.base import ObjectKey
from rheostat.plugins.routers.base import Routes, ServiceRoute


class NopRouter:
    """Remembers the last split so `get_routes` reports what was decided."""

    def __init__(self) -> None:
        self._routes: dict[ObjectKey, Routes] = {}

    async def reconcile(self, route: ServiceRoute) -> None:
        self._routes.setdefault(route.key, Routes())

    async def set_routes(self, key: ObjectKey, routes: Routes) -> None:
        self._routes[key] = routes

    async def get_routes(self, key: ObjectKey) -> Routes:
        return self._routes.get(key, Routes())

    async def finalize(self, key: ObjectKey) -> None:
        self._routes.pop(key, None)
