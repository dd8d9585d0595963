"""In-memory router: the test seam for the state machine, and what `rheostat simulate` drives."""

from __future__ import annotations

from rheostat.model.base import ObjectKey
from rheostat.plugins.routers.base import Routes, ServiceRoute


class MemoryRouter:
    def __init__(self) -> None:
        self.services: dict[ObjectKey, ServiceRoute] = {}
        self.routes: dict[ObjectKey, Routes] = {}
        self.history: list[tuple[ObjectKey, Routes]] = []

    async def reconcile(self, route: ServiceRoute) -> None:
        self.services[route.key] = route
        self.routes.setdefault(route.key, Routes())

    async def set_routes(self, key: ObjectKey, routes: Routes) -> None:
        self.routes[key] = routes
        self.history.append((key, routes))

    async def get_routes(self, key: ObjectKey) -> Routes:
        return self.routes.get(key, Routes())

    async def finalize(self, key: ObjectKey) -> None:
        self.services.pop(key, None)
        self.routes.pop(key, None)
