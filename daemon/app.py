"""The composition root: builds every part of the daemon and owns start/stop order.

Start: store (locked and opened before anything else, so a store another process holds fails
start before any socket exists) -> RPC socket claimed -> webhook server -> exposure -> provider ->
engine restore -> RPC served (last, so a client that can connect finds everything up). Stop
mirrors it: RPC first, store last; a daemon is stopped once its socket is gone and its store lock
is free (what `voicecall daemon stop` waits for).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from daemon.cluster.wiring import (
    Cluster,
    forward_pass,
    install_webhook_forwarding,
    rpc_methods,
    shared_store_identity,
    start_cluster,
)
from daemon.config.ports import may_fall_back
from daemon.engine.calls import CallEngine
from daemon.errors import ConfigError
from daemon.exposure import Exposure, ExposureManager
from daemon.loopload import LoopLoad
from daemon.media.hub import MediaHub
from daemon.paths import Paths
from daemon.providers.base import ProviderContext
from daemon.providers.registry import create_provider
from daemon.realtime.service import RealtimeService
from daemon.rpc.methods import build_methods
from daemon.rpc.server import RpcServer
from daemon.speech.responder import create_responder, number_responders
from daemon.speech.vendor import open_vendor_session, widen_vendor_session
from daemon.store.factory import create_store
from daemon.webhooks.mount import url_policy
from daemon.webhooks.server import WebhookServer

if TYPE_CHECKING:
    from daemon.config.model import Config
    from daemon.media.server import MediaServer
    from daemon.workers.role import WorkerRole
    from daemon.workers.siblings import Siblings

logger = logging.getLogger(__name__)

VERSION = "0.1.0"


async def stop_step(what: str, step: Callable[[], Awaitable[object]]) -> bool:
    """Run one shutdown step; log its failure (with the traceback at debug) and go on.

    Returns whether it succeeded. Cancellation is not swallowed.
    """
    try:
        await step()
    except Exception as exc:
        logger.warning(
            "stopping %s failed: %s",
            what,
            getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}",
        )
        logger.debug("stopping %s failed", what, exc_info=True)
        return False
    return True


class Daemon:
    """One running voicecall daemon."""

    def __init__(self, config: Config, paths: Paths, worker: WorkerRole | None = None) -> None:
        self.config = config
        self.paths = paths
        self.worker = worker
        """Set when this daemon is one of `--workers N` (daemon/workers)."""
        self.private_port = 0
        """A worker's own loopback port (forwarded webhooks and media reach it, not a sibling)."""
        identity = shared_store_identity(config, paths, *([worker.id_file] if worker else []))
        self.store = create_store(config.store, **identity)
        self.cluster: Cluster | None = None
        """This daemon's part in a group sharing a PostgreSQL store (None with SQLite)."""
        self.siblings: Siblings | None = None
        """A worker's hand-over of misrouted connections to its sibling workers."""
        self.forward_pass = forward_pass()
        self.provider = create_provider(config.provider)
        self.engine = CallEngine(config, self.store, self.provider)
        self.loop_load = LoopLoad(units=lambda: self.engine.live_count)
        """The event loop's load, sampled every second: new calls wait above max_loop_load."""
        self.engine.loop_load = self.loop_load
        self.web_app = web.Application(client_max_size=64 * 1024)
        self._runner: web.AppRunner | None = None
        self._methods = build_methods(self)
        self.rpc = RpcServer(paths.socket, rpc_methods(self, self._methods))
        self.exposures = ExposureManager(config)
        self.webhooks: WebhookServer | None = None
        self.http: aiohttp.ClientSession | None = None
        self._stop = asyncio.Event()
        self.port = 0
        self.media: MediaHub | None = None
        """The media hub, set by `install_media` when streaming is on."""
        self.media_server: MediaServer | None = None
        """Its websocket endpoint (also set by `install_media`)."""
        self.realtime: RealtimeService | None = None
        """The realtime voice service, set by `install_media` when realtime mode is in use."""
        self.context = ProviderContext(config, "", None)
        self._reload_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self, rpc_socket: socket.socket | None = None) -> None:
        """Bring every part up, or tear down what started and raise."""
        try:
            await self._start(rpc_socket)
        except BaseException:
            await self.stop()
            raise

    async def _start(self, rpc_socket: socket.socket | None) -> None:
        self.loop_load.start()
        await self.store.open()  # claims the store (one daemon per store) before anything else
        self.rpc.bind(rpc_socket)
        self.http = open_vendor_session(
            self.config.max_concurrent_calls, self.config.streaming.max_connections
        )
        self.engine.responder = create_responder(self.config, self.http)
        self.engine.number_responders = number_responders(self.config, self.http)
        await self._start_web()
        await self.exposures.start(self.port)
        self._apply_exposure()
        hub = self.media
        self.context.media = hub
        if hub is not None:
            hub.on_utterance = lambda call_id, result: self.engine.note_heard(
                call_id, result.text, result.heard_text
            )
            self.engine.streams_speech = lambda call_id: hub.session(call_id) is not None
        realtime = self.realtime
        if realtime is not None:
            self.engine.answers_itself = realtime.is_active
        self.provider.bind(self.engine.apply, self.context)
        await self.provider.start()
        await self.engine.start()
        self.cluster = await start_cluster(self, self._methods)
        if self.worker is not None and self.cluster is not None:
            from daemon.workers.siblings import Siblings

            self.siblings = Siblings(self)
            await self.siblings.start()
        await self.rpc.start()
        logger.info(
            "voicecall daemon %s ready: provider %s, webhook %s, socket %s, store %s",
            VERSION,
            self.provider.name,
            self.exposure.webhook_url,
            self.paths.socket,
            self.store.description,
        )

    async def _start_web(self) -> None:
        from daemon.webhooks.connections import GuardedSite, ensure_fd_limit, install_guard
        from daemon.webhooks.eager import install as install_eager
        from daemon.webhooks.install import install_routes
        from daemon.webhooks.mount import connection_guard

        self.webhooks = install_routes(self)
        install_eager(asyncio.get_running_loop())
        guard = connection_guard(self)
        if self.media is not None:
            guard.after_read = self.media.pacer.poll
        install_guard(self.web_app, guard)
        install_webhook_forwarding(self)
        serve = self.config.serve
        ensure_fd_limit(serve.max_connections)
        self._runner = web.AppRunner(
            self.web_app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=serve.idle_timeout_ms / 1000,
        )
        await self._runner.setup()
        if self.worker is not None:
            await self._start_worker_sites(guard)
            return
        site = GuardedSite(self._runner, serve.bind, serve.port, guard=guard)
        try:
            await site.start()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or not may_fall_back(self.config):
                raise ConfigError(
                    f"cannot listen on {serve.bind}:{serve.port} for webhooks ({exc.strerror}); "
                    "another program (or daemon) uses it: set serve.port to a free port, or 0 "
                    "for any free port"
                ) from None
            await site.stop()
            site = GuardedSite(self._runner, serve.bind, 0, guard=guard)
            await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else serve.port
        if serve.port not in (0, self.port):
            logger.warning(
                "port %s on %s is busy (another program, or the daemon of another "
                "voicecall home); the mock provider's webhook listens on port %s "
                "instead (set serve.port to choose one)",
                serve.port,
                serve.bind,
                self.port,
            )

    async def _start_worker_sites(self, guard: Any) -> None:
        """A worker listens on the port its parent reserved, beside its siblings
        (SO_REUSEPORT: the kernel spreads connections), and on a private port of its own."""
        from daemon.webhooks.connections import GuardedSite

        assert self._runner is not None and self.worker is not None
        serve = self.config.serve
        shared = GuardedSite(
            self._runner, serve.bind, self.worker.port, guard=guard, reuse_port=True
        )
        private = GuardedSite(self._runner, serve.bind, 0, guard=guard)
        for site in (shared, private):
            try:
                await site.start()
            except OSError as exc:
                raise ConfigError(
                    f"worker {self.worker.index} cannot listen on {serve.bind} ({exc.strerror})"
                ) from None
        self.port = self.worker.port
        server = private._server
        assert server is not None
        self.private_port = (getattr(server, "sockets", None) or [])[0].getsockname()[1]

    @property
    def exposure(self) -> Exposure:
        """The current effective URLs."""
        return self.exposures.current

    @property
    def web_runner(self) -> web.AppRunner | None:
        """The webhook server's runner (None before the start and after the stop)."""
        return self._runner

    def _apply_exposure(self) -> None:
        """Make verification, provider callbacks and stream URLs follow the exposure."""
        exposure = self.exposures.current
        if self.webhooks is not None:
            self.webhooks.policy = url_policy(self.config, exposure.webhook_url, exposure.mode)
        self.context.webhook_url = exposure.webhook_url
        self.context.stream_url = exposure.stream_url

    def request_stop(self) -> None:
        """Ask the daemon to stop (signal handler)."""
        self._stop.set()

    def request_shutdown(self) -> None:
        """`daemon.shutdown`: stop this daemon; a worker stops its parent, which stops all."""
        if self.worker is not None:
            self.worker.stop_all()
        else:
            self._stop.set()

    async def wait_stopped(self) -> None:
        """Block until a stop is requested."""
        await self._stop.wait()

    async def stop(self) -> None:
        """Stop everything in reverse order; safe to call twice.

        A step that fails is logged with its error and the next step still runs: a stuck
        tunnel must not keep the store claimed.
        """
        await stop_step("the RPC socket", self.rpc.stop)
        self.loop_load.stop()
        if self.siblings is not None:
            await stop_step("the hand-over socket", self.siblings.stop)
        if self._runner is not None:
            await stop_step("the webhook server", self._runner.cleanup)
            self._runner = None
        await stop_step("the exposure (tunnel, tailscale)", self.exposures.stop)
        if self.cluster is not None:
            await stop_step("the cluster membership", self.cluster.stop)
        await stop_step("the call engine", self.engine.stop)
        await stop_step("the provider", self.provider.close)
        if self.http is not None:
            await stop_step("the vendor HTTP session", self.http.close)
        await stop_step("the store", self.store.close)  # releases the store's claim too
        logger.info("voicecall daemon stopped")

    # ------------------------------------------------------------------ RPC helpers

    def status(self) -> dict[str, Any]:
        """The `daemon.status` result."""
        return {
            "running": True,
            "pid": self.worker.parent_pid if self.worker else os.getpid(),
            "worker": (
                {"index": self.worker.index, "pid": os.getpid(), "privatePort": self.private_port}
                if self.worker
                else None
            ),
            "version": VERSION,
            "provider": self.provider.name,
            "webhookUrl": self.exposure.webhook_url,
            "publicUrl": self.exposure.public_url,
            "streamUrl": self.exposure.stream_url,
            "activeCalls": self.engine.live_count,
            "loopLoad": round(self.loop_load.share, 3),
            "loopLoadProjected": round(self.loop_load.projected, 3),
            "maxLoopLoad": self.config.max_loop_load,
            "tailSubscribers": self.engine.subscriber_count,
            "socket": str(self.paths.socket),
            "store": self.store.description,
            "storeLock": str(lock) if (lock := self.store.lock_file) else None,
            "storeFault": fault.to_wire() if (fault := self.store.fault) else None,
            "daemonId": self.cluster.store.daemon_id if self.cluster is not None else None,
            "handoff": self.siblings.status() if self.siblings is not None else None,
        }

    async def reload(self) -> dict[str, Any]:
        """Re-read the config file (`daemon.reload`, SIGHUP); one reload at a time."""
        from daemon.reload import reload_config

        async with self._reload_lock:
            result = await reload_config(self)
        if self.worker is not None:
            self.worker.reload_all()  # the siblings read the same file (this one again: a no-op)
        return result

    def reload_in_background(self) -> None:
        """SIGHUP: reload, logging the outcome (there is no one to answer)."""

        async def _run() -> None:
            try:
                await self.reload()
            except ConfigError as exc:
                logger.error("%s", exc.message)

        task = asyncio.get_running_loop().create_task(_run(), name="reload")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def apply_config(self, config: Config, *, rebuild_responder: bool) -> None:
        """Make every part that reads the config per use read `config` from now on."""
        self.config = config
        self.engine.config = config
        self.context.config = config
        self.exposures.config = config
        if self.http is not None:
            widen_vendor_session(
                self.http, config.max_concurrent_calls, config.streaming.max_connections
            )
        if rebuild_responder and self.http is not None:
            self.engine.responder = create_responder(self.config, self.http)
        self._apply_exposure()

    async def expose(self, mode: str, path: str | None) -> dict[str, Any]:
        """Publish the webhook through Tailscale (`voicecall expose`)."""
        result = await self.exposures.expose(mode, path)
        self._apply_exposure()
        return result
