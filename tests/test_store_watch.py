"""The store as the port the layers above use: watchers hear of committed writes only, once per commit."""

from __future__ import annotations

from pathlib import Path

import pytest

from rheostat.store import Store
from rheostat.store.port import State


def test_a_transaction_is_told_once_after_commit_and_never_when_rolled_back(tmp_path: Path) -> None:
    store: State = Store(tmp_path / "state.db")
    heard: list[frozenset[tuple[str, str]]] = []
    unwatch = store.watch(heard.append)
    with store.transaction():
        store.put_object("Canary", "shop/web", {"spec": {}})
        store.put_status("shop/web", {"phase": "Progressing"})
        store.add_event("Canary", "shop/web", "Synced", "ok")
        assert heard == []  # nothing is told before the commit
    assert heard == [frozenset({("Canary", "shop/web"), ("status", "shop/web"), ("event", "shop/web")})]

    def failing_tick() -> None:
        with store.transaction():
            store.put_object("Canary", "shop/api", {"spec": {}})
            raise RuntimeError("the tick failed")

    with pytest.raises(RuntimeError):
        failing_tick()
    assert len(heard) == 1 and store.get_object("Canary", "shop/api") is None

    store.put_state("Kustomization", "flux-system/apps", {"ready": True})  # outside a transaction: at once
    assert heard[-1] == frozenset({("Kustomization.status", "flux-system/apps")})

    unwatch()
    store.delete_object("Canary", "shop/web")
    assert len(heard) == 2
    store.close()


def test_a_failing_watcher_neither_fails_nor_undoes_the_write(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    heard: list[frozenset[tuple[str, str]]] = []

    def broken(_: frozenset[tuple[str, str]]) -> None:
        raise ValueError("a bug in a watcher")

    store.watch(broken)
    store.watch(heard.append)
    with store.transaction():
        store.put_manual("shop/web", {"approve": True})
    assert store.get_manual("shop/web") == {"approve": True}
    assert heard == [frozenset({("manual", "shop/web")})]  # the next watcher was still told
    store.close()
