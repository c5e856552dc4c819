"""How the daemon (daemon/app.py) plugs the cluster in: only when its store is shared."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from daemon.cluster.identity import daemon_id
from daemon.cluster.node import ClusterNode
from daemon.cluster.timing import heartbeat_seconds
from daemon.store.location import StoreKind

if TYPE_CHECKING:
    from daemon.config.model import Config
    from daemon.engine.calls import CallEngine
    from daemon.paths import Paths
    from daemon.store.base import Store

__all__ = ["ClusterNode", "shared_store_identity", "start_cluster_node"]


def shared_store_identity(config: Config, paths: Paths) -> dict[str, Any]:
    """`create_store` arguments for a shared store: this daemon's id and heartbeat; none for
    SQLite (nothing is read or made then)."""
    if config.store.kind is not StoreKind.POSTGRESQL:
        return {}
    return {"daemon_id": daemon_id(paths.state),
            "heartbeat_seconds": heartbeat_seconds(os.environ)}


def start_cluster_node(store: Store, engine: CallEngine) -> ClusterNode | None:
    """Start taking over dead daemons' calls, when the store is shared."""
    if store.location.kind is not StoreKind.POSTGRESQL:
        return None  # (a SQLite daemon never imports the PostgreSQL driver)
    from daemon.store.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    node = ClusterNode(store, store.watch_interval, engine.adopt,
                       lambda: [record.call_id for record in engine.live_calls()], engine.release)
    node.start()
    return node
