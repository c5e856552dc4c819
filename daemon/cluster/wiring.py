"""How the daemon (daemon/app.py) plugs the cluster in: only when its store is shared.

With SQLite none of this runs and nothing here is imported past this module's own names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from daemon.cluster import forward_media, forward_rpc, forward_webhook, routing
from daemon.cluster.bus import ClusterBus
from daemon.cluster.identity import ID_FILE, daemon_id
from daemon.cluster.node import ClusterNode
from daemon.cluster.relay import EventRelay
from daemon.cluster.timing import heartbeat_seconds
from daemon.errors import ConfigError
from daemon.rpc.server import Handler
from daemon.store.location import StoreKind

if TYPE_CHECKING:
    import aiohttp

    from daemon.config.model import Config
    from daemon.engine.calls import CallEngine
    from daemon.media.server import MediaServer
    from daemon.paths import Paths
    from daemon.store.base import Store
    from daemon.store.postgres import PostgresStore
    from daemon.webhooks.server import WebhookServer


class ClusterHost(Protocol):
    """What the cluster wiring uses of the daemon (`daemon.app.Daemon` is one), and no more."""

    @property
    def config(self) -> Config:
        """The daemon's configuration (the store kind, bind address, timeouts)."""

    @property
    def port(self) -> int:
        """The webhook port this daemon listens on."""

    @property
    def private_port(self) -> int:
        """A worker's own loopback port (0 for a daemon that is not a worker)."""

    @property
    def store(self) -> Store:
        """The store (a `PostgresStore` when the cluster runs)."""

    @property
    def engine(self) -> CallEngine:
        """The call engine: the calls it runs, adopts and releases."""

    @property
    def cluster(self) -> Cluster | None:
        """This daemon's cluster membership, once started."""

    @property
    def webhooks(self) -> WebhookServer | None:
        """The webhook server (its `forward` hook is set here)."""

    @property
    def forward_pass(self) -> forward_webhook.ForwardPass:
        """The pass this daemon puts on webhooks it replays for others."""

    @property
    def http(self) -> aiohttp.ClientSession | None:
        """The shared HTTP client (open while the daemon runs)."""

    @property
    def media_server(self) -> MediaServer | None:
        """The media-stream endpoint (its `relay` hook is set here), when streaming is on."""


def forward_pass() -> forward_webhook.ForwardPass:
    """The pass this daemon puts on webhooks it replays for other daemons."""
    return forward_webhook.ForwardPass()


class Cluster:
    """This daemon's part in a group sharing one PostgreSQL store: take-over, the bus to the
    other daemons, and the relay of their events."""

    def __init__(self, store: PostgresStore, node: ClusterNode, relay: EventRelay) -> None:
        self.store = store
        self.node = node
        self.bus = ClusterBus(store)
        self.relay = relay

    async def owner_elsewhere(self, ref: str) -> str | None:
        """The other living daemon that runs live call `ref`, or None (handle it here; a dead
        owner's call is taken over first)."""
        route = await routing.owner_elsewhere(self.store, self.node.take_over_call, ref)
        return route.owner if route is not None else None

    async def ask_owner(
        self, ref: str, kind: str, body: dict[str, Any], deadline: float
    ) -> routing.Answered | None:
        """Run request `kind` on the daemon that runs live call `ref` and return its answer, or
        None to handle it here (see :mod:`daemon.cluster.routing`)."""

        async def ask(owner: str, wait: float) -> Any:
            return await self.bus.request(owner, kind, body, wait)

        return await routing.ask_owner(self.store, self.node.take_over_call, ref, ask, deadline)

    async def start(self) -> None:
        """Listen to the others, then start taking over the dead's calls."""
        await self.bus.start()
        await self.relay.start()
        self.node.start()

    async def stop(self) -> None:
        """Stop all three (the engine keeps what it runs)."""
        await self.node.stop()
        await self.relay.stop()
        await self.bus.stop()


def shared_store_identity(config: Config, paths: Paths, id_file: str = ID_FILE) -> dict[str, Any]:
    """`create_store` arguments for a shared store: this daemon's id (kept in `id_file`; a
    worker's is its own) and heartbeat; none for SQLite (nothing is read or made then)."""
    if config.store.kind is not StoreKind.POSTGRESQL:
        return {}
    return {
        "daemon_id": daemon_id(paths.state, id_file),
        "heartbeat_seconds": heartbeat_seconds(os.environ),
    }


def _shared(daemon: ClusterHost) -> bool:
    return daemon.config.store.kind is StoreKind.POSTGRESQL


def _local_origin(daemon: ClusterHost) -> str:
    """Where this daemon's own webhook port answers on this machine. A worker's is its private
    port: the shared one would hand a forwarded webhook or stream to a random sibling."""
    bind = daemon.config.serve.bind
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind, bind)
    port = daemon.private_port or daemon.port
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _deadline(daemon: ClusterHost) -> Any:
    def deadline(name: str, raw: dict[str, Any]) -> float:
        config = daemon.config
        wait = config.ring_timeout_seconds + forward_rpc.MARGIN_SECONDS
        if name == "voicecall.continue":
            given = raw.get("timeoutMs")
            wait += (
                given if isinstance(given, int) and given > 0 else config.transcript_timeout_ms
            ) / 1000
        return float(wait)

    return deadline


def rpc_methods(daemon: ClusterHost, methods: Mapping[str, Handler]) -> dict[str, Handler]:
    """The socket's dispatch table: the call methods go to the call's owner on a shared store."""
    if not _shared(daemon):
        return dict(methods)
    return forward_rpc.forwarding_methods(
        methods, lambda: daemon.cluster, daemon.engine.runs, _deadline(daemon)
    )


def install_webhook_forwarding(daemon: ClusterHost) -> None:
    """Send verified webhooks about other daemons' calls to them."""
    if _shared(daemon) and daemon.webhooks is not None:
        own_pass = daemon.forward_pass
        daemon.webhooks.forward = forward_webhook.forwarder(
            lambda: daemon.cluster, daemon.engine.runs, own_pass
        )


async def start_cluster(daemon: ClusterHost, methods: Mapping[str, Handler]) -> Cluster | None:
    """Join the group, when the store is shared (`methods`: the local call methods)."""
    if not _shared(daemon):
        return None  # (a SQLite daemon never imports the PostgreSQL driver)
    from daemon.store.postgres import EVENTS_CHANNEL, PostgresStore

    store = daemon.store
    assert isinstance(store, PostgresStore)
    engine = daemon.engine
    node = ClusterNode(
        store,
        store.watch_interval,
        engine.adopt,
        lambda: [record.call_id for record in engine.live_calls()],
        engine.release,
    )
    relay = EventRelay(store, EVENTS_CHANNEL, lambda: engine.subscriber_count, engine.relay)
    cluster = Cluster(store, node, relay)
    cluster.bus.handle("rpc", forward_rpc.serve_forwarded(methods))
    cluster.bus.handle(
        "webhook",
        forward_webhook.serve_forwarded(
            lambda: _local_origin(daemon), lambda: daemon.http, daemon.forward_pass
        ),
    )
    if daemon.media_server is not None:
        daemon.media_server.relay = forward_media.media_relay(
            lambda: daemon.cluster, engine.runs, lambda: daemon.http
        )
    await cluster.start()
    # Only now, listening: to the others an advertised address also says "this process hears
    # requests" (one sent to a restarted daemon before it listens would be lost).
    await store.advertise(advertised_address(daemon))
    return cluster


ADDRESS_ENV = "VOICECALL_CLUSTER_ADDRESS"


def advertised_address(daemon: ClusterHost) -> str:
    """host:port where the other daemons reach this daemon's webhook port (media streams):
    `VOICECALL_CLUSTER_ADDRESS`, else this machine's loopback or `serve.bind` (right for
    daemons on one machine; set it when they run on several). A worker advertises its private
    port, on the variable's host when it is set."""
    given = os.environ.get(ADDRESS_ENV, "").strip()
    if given:
        checked = check_address(given)
        if daemon.private_port:
            return f"{checked.rpartition(':')[0]}:{daemon.private_port}"
        return checked
    return _local_origin(daemon).removeprefix("http://")


def check_address(value: str) -> str:
    """`host:port` (an IPv6 host in brackets), else a ConfigError naming the variable."""
    host, sep, port = value.rpartition(":")
    if (
        not sep
        or not host
        or not port.isdigit()
        or not 0 < int(port) < 65536
        or any(c.isspace() or c in "/?#@" for c in host)
    ):
        raise ConfigError(
            f"{ADDRESS_ENV} = {value!r}: expected host:port where the other "
            "daemons reach this daemon's webhook port, such as voice-1:3334 or "
            "[fd00::1]:3334"
        )
    return value
