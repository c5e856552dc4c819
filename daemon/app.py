"""The composition root: builds every part of the daemon and owns start/stop order.

Start: store -> provider -> engine restore -> webhook server -> exposure -> RPC socket (last, so
a client that can connect finds everything up). Stop mirrors it: RPC first, store last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from daemon.engine.calls import CallEngine
from daemon.errors import ConfigError
from daemon.paths import Paths
from daemon.providers.base import ProviderContext
from daemon.providers.registry import create_provider
from daemon.rpc.methods import build_methods
from daemon.rpc.server import RpcServer
from daemon.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from daemon.config.model import Config

logger = logging.getLogger(__name__)

VERSION = "0.1.0"


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass(slots=True)
class Exposure:
    """What the webhook is reachable at."""

    webhook_url: str
    public_url: str | None
    stream_url: str | None


class Daemon:
    """One running voicecall daemon."""

    def __init__(self, config: Config, paths: Paths) -> None:
        self.config = config
        self.paths = paths
        self.store = SqliteStore(config.store)
        self.provider = create_provider(config.provider)
        self.engine = CallEngine(config, self.store, self.provider)
        self.web_app = web.Application(client_max_size=64 * 1024)
        self._runner: web.AppRunner | None = None
        self.rpc = RpcServer(paths.socket, build_methods(self))
        self.exposure = Exposure("", None, None)
        self._stop = asyncio.Event()
        self.port = 0
        self.extras: dict[str, object] = {}

    # ------------------------------------------------------------------ lifecycle

    async def start(self, rpc_socket: socket.socket | None = None) -> None:
        """Bring every part up, or tear down what started and raise."""
        try:
            await self._start(rpc_socket)
        except BaseException:
            await self.stop()
            raise

    async def _start(self, rpc_socket: socket.socket | None) -> None:
        await self.store.open()
        await self._start_web()
        self.exposure = self._resolve_exposure()
        context = ProviderContext(self.config, self.exposure.webhook_url,
                                  self.exposure.stream_url, self.extras)
        self.provider.bind(self.engine.apply, context)
        await self.provider.start()
        await self.engine.start()
        await self.rpc.start(rpc_socket)
        logger.info("voicecall daemon %s ready: provider %s, webhook %s, socket %s", VERSION,
                    self.provider.name, self.exposure.webhook_url, self.paths.socket)

    async def _start_web(self) -> None:
        from daemon.webhooks.install import install_routes

        install_routes(self)
        self._runner = web.AppRunner(self.web_app, access_log=None, handle_signals=False)
        await self._runner.setup()
        serve = self.config.serve
        site = web.TCPSite(self._runner, serve.bind, serve.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {serve.bind}:{serve.port} for webhooks ({exc.strerror}); "
                "another program (or daemon) uses it: set serve.port to a free port, or 0 for "
                "any free port"
            ) from None
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else serve.port

    def _resolve_exposure(self) -> Exposure:
        serve = self.config.serve
        local = f"http://{_format_host(serve.bind)}:{self.port}{serve.path}"
        public = self.config.public_url
        webhook = public or local
        stream = None
        if self.config.streaming.enabled:
            origin = webhook.split("/", 3)
            scheme = "wss" if origin[0] == "https:" else "ws"
            stream = f"{scheme}://{origin[2]}{self.config.streaming.stream_path}"
        return Exposure(webhook, public, stream)

    def request_stop(self) -> None:
        """Ask the daemon to stop (signal handler, `daemon.shutdown`)."""
        self._stop.set()

    async def wait_stopped(self) -> None:
        """Block until a stop is requested."""
        await self._stop.wait()

    async def stop(self) -> None:
        """Stop everything in reverse order; safe to call twice."""
        with contextlib.suppress(Exception):
            await self.rpc.stop()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
            self._runner = None
        with contextlib.suppress(Exception):
            await self.engine.stop()
        with contextlib.suppress(Exception):
            await self.provider.close()
        with contextlib.suppress(Exception):
            await self.store.close()
        logger.info("voicecall daemon stopped")

    # ------------------------------------------------------------------ RPC helpers

    def status(self) -> dict[str, Any]:
        """The `daemon.status` result."""
        return {
            "running": True,
            "pid": os.getpid(),
            "version": VERSION,
            "provider": self.provider.name,
            "webhookUrl": self.exposure.webhook_url,
            "publicUrl": self.exposure.public_url,
            "streamUrl": self.exposure.stream_url,
            "activeCalls": self.engine.live_count,
            "socket": str(self.paths.socket),
            "store": str(self.store.path),
        }

    async def expose(self, mode: str, path: str | None) -> dict[str, Any]:
        """Publish the webhook through Tailscale (`voicecall expose`)."""
        raise ConfigError("Tailscale exposure is not available in this build yet")
