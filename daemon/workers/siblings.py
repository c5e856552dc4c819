"""A worker hands misrouted connections to the sibling that runs their call (SPEC 16).

With `--workers N` the kernel spreads the shared port's connections by source address, so a
call's media websocket or webhook often reaches a worker that does not run the call. Once that
worker knows the call (a stream's `start`; a webhook verified, with its call found as
`daemon.cluster.forward_webhook` finds it) and a sibling on this machine runs it (a stream: the
siblings are asked first, each declining a call it does not run; a webhook: the store says
who), it passes the connection itself to the sibling (:mod:`daemon.workers.handoff`) with every
byte read from it, and forgets it. The sibling feeds those bytes to its own web server, which
runs its usual checks (signature, limits, replay cache) and handlers, as if the client had
connected to it: the upgrade was answered already, so a stream's refusal there is a websocket
close.

Every byte a connection reads is kept from the start of its current request (a request split
over reads, requests pipelined behind it; a kept-alive connection starts again where the last
answered request ended), so it can be handed over at any request whose end its headers tell
(not a chunked body). An owner on another machine, a request whose bytes were not all kept,
or a failed hand-over (the sibling gone or refusing) take the relay through the cluster as
before. The request a sibling passed a connection on for is never passed back; a later request
on that connection may be passed on again (a provider's kept-alive connection carries webhooks
of many calls).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from daemon.cluster.forward_webhook import FORWARDED_HEADER, call_ref
from daemon.errors import VoicecallError
from daemon.media.direct import SUPPORTED
from daemon.providers.base import WebhookRequest
from daemon.webhooks.connections import GUARD_KEY, GuardedProtocol
from daemon.workers.handoff import (
    KIND_MEDIA,
    KIND_WEBHOOK,
    Answer,
    HandoffListener,
    HandoffRefused,
    hand_over,
    handoff_path,
)

if TYPE_CHECKING:
    import socket

    from daemon.cluster.wiring import Cluster
    from daemon.media.server import MediaServer
    from daemon.paths import Paths
    from daemon.webhooks.server import WebhookServer
    from daemon.workers.role import WorkerRole

logger = logging.getLogger(__name__)

_KIND_NAMES = {KIND_MEDIA: "media", KIND_WEBHOOK: "webhook"}


class _Calls(Protocol):
    def runs(self, call_ref: str) -> bool:
        """True when this daemon runs the live call (by our id or the provider's)."""


class SiblingsHost(Protocol):
    """What the hand-over uses of the daemon (`daemon.app.Daemon` is one), and no more."""

    @property
    def paths(self) -> Paths: ...
    @property
    def worker(self) -> WorkerRole | None: ...
    @property
    def cluster(self) -> Cluster | None: ...
    @property
    def engine(self) -> _Calls: ...
    @property
    def web_app(self) -> web.Application: ...
    @property
    def web_runner(self) -> web.AppRunner | None: ...
    @property
    def media_server(self) -> MediaServer | None: ...
    @property
    def webhooks(self) -> WebhookServer | None: ...


class Siblings:
    """This worker's hand-overs, both ways, and their counts (`daemon status`)."""

    def __init__(self, daemon: SiblingsHost) -> None:
        self.daemon = daemon
        self.folder = daemon.paths.socket.parent
        self.listener: HandoffListener | None = None
        self.handed_over = {"media": 0, "webhook": 0}
        """Connections passed to a sibling."""
        self.adopted = {"media": 0, "webhook": 0}
        """Connections taken from a sibling."""
        self.failed = 0
        """Hand-overs that did not happen (the connection was relayed or served here)."""
        self._warned: set[str] = set()

    async def start(self) -> None:
        """Listen for siblings' connections and hand misrouted ones over from now on."""
        daemon = self.daemon
        cluster = daemon.cluster
        worker = daemon.worker
        if cluster is None or worker is None:
            return
        self.listener = HandoffListener(
            handoff_path(self.folder, cluster.store.daemon_id),
            self._adopt,
            parent_pid=worker.parent_pid,
        )
        self.listener.start()
        guard = daemon.web_app.get(GUARD_KEY)
        if guard is not None:
            guard.record = True
        if daemon.media_server is not None:
            daemon.media_server.hand_over = self._media
        if daemon.webhooks is not None:
            daemon.webhooks.hand_over = self._webhook

    async def stop(self) -> None:
        """Stop taking connections (and passing them: the daemon is going)."""
        if self.daemon.media_server is not None:
            self.daemon.media_server.hand_over = None
        if self.daemon.webhooks is not None:
            self.daemon.webhooks.hand_over = None
        if self.listener is not None:
            await self.listener.stop()
            self.listener = None

    def status(self) -> dict[str, Any]:
        """The counts for `daemon status`: relayed = passed through another daemon instead."""
        media = self.daemon.media_server
        webhooks = self.daemon.webhooks
        return {
            "handedOver": dict(self.handed_over),
            "adopted": dict(self.adopted),
            "relayed": {
                "media": media.relayed if media is not None else 0,
                "webhook": webhooks.forwarded if webhooks is not None else 0,
            },
            "failed": self.failed,
            "refusedPeers": self.listener.refused_peers if self.listener is not None else 0,
        }

    # ------------------------------------------------------------------ passing on

    async def _media(
        self, request: web.Request, provider_call_id: str | None, parameters: Mapping[str, str]
    ) -> bool | None:
        if not SUPPORTED:
            return None  # the sibling could not take a stream whose upgrade was answered
        ref = parameters.get("callId") or provider_call_id or ""
        return await self._pass(request, ref, KIND_MEDIA)

    async def _webhook(self, request: web.Request, webhook: WebhookRequest) -> bool | None:
        if webhook.headers.get(FORWARDED_HEADER):
            return None  # replayed by a daemon for another: the forwarder knows it
        if request.headers.get("Expect"):
            return None  # a `100 Continue` may have gone out: the owner must not send another
        return await self._pass(request, call_ref(webhook) or "", KIND_WEBHOOK)

    async def _pass(self, request: web.Request, ref: str, kind: int) -> bool | None:
        """Hand the request's connection to the sibling that runs call `ref`, if there is
        one. True: handed over (this process lets go of the connection); False: no other
        daemon runs the call (serve it here, no need to ask again); None: not handed over
        (the relay decides).

        A stream's call always runs somewhere, and most often on a sibling: the siblings are
        asked first (each declines a call it does not run), without a store round trip. A
        webhook may be about a new call, which nobody runs yet: the store is asked first.
        """
        daemon = self.daemon
        cluster = daemon.cluster
        if not ref or cluster is None or self.listener is None:
            return None
        if daemon.engine.runs(ref):
            return False
        connection = _connection(request)
        if connection is None:
            return None
        tried = self._sibling_paths() if kind == KIND_MEDIA else []
        for path in tried:
            passed = await self._try(connection, path, ref, kind, quiet=True)
            if passed is not None:
                return passed
        try:
            owner = await cluster.owner_elsewhere(ref)
        except VoicecallError:
            return None  # its daemon stopped answering: the relay says so
        if owner is None:
            return False
        path = handoff_path(self.folder, owner)
        if path in tried or not path.exists():
            return None  # asked already, or not a sibling on this machine: the relay
        return await self._try(connection, path, ref, kind, quiet=False)

    async def _try(
        self, connection: GuardedProtocol, path: Path, ref: str, kind: int, *, quiet: bool
    ) -> bool | None:
        """One hand-over attempt: True done (or the connection closed trying), None not (the
        connection is untouched; `quiet`: a sibling declining is no failure)."""
        taken = connection.take()
        if taken is None:
            return None  # its bytes were not all kept
        fd, raw = taken
        name = _KIND_NAMES[kind]
        try:
            await hand_over(path, kind, fd, raw, ref)
        except HandoffRefused as exc:
            if exc.closed:
                connection.drop()
                return True
            connection.keep()
            if not (quiet and exc.declined):
                self.failed += 1
                self._warn_once(path, f"{name} connection for call {ref} not handed over: {exc}")
            return None
        connection.drop()
        self.handed_over[name] += 1
        return True

    def _sibling_paths(self) -> list[Path]:
        """The other workers' hand-over sockets here."""
        own = self.listener.path if self.listener is not None else None
        try:
            names = os.listdir(self.folder)
        except OSError:
            return []
        return [
            self.folder / name
            for name in sorted(names)
            if name.startswith("handoff-") and name.endswith(".sock") and self.folder / name != own
        ]

    def _warn_once(self, path: Path, text: str) -> None:
        key = str(path)
        if key in self._warned:
            logger.debug("%s", text)
            return
        self._warned.add(key)
        logger.warning("%s (relayed instead; logged once per sibling)", text)

    # ------------------------------------------------------------------ taking over

    async def _adopt(
        self, kind: int, ref: str, sock: socket.socket, raw: bytes, answer: Answer
    ) -> bool:
        daemon = self.daemon
        if not ref or not daemon.engine.runs(ref):
            return False  # not this worker's call (any more): the sender asks elsewhere
        runner = daemon.web_runner
        guard = daemon.web_app.get(GUARD_KEY)
        if runner is None or runner.server is None or guard is None or self.listener is None:
            return False
        media = daemon.media_server
        if kind == KIND_MEDIA and (media is None or media.closing):
            return False
        made: list[GuardedProtocol] = []

        def on_made(protocol: GuardedProtocol) -> None:
            # Runs in connection_made, after the bytes were fed and before the loop reads the
            # socket: the sender learns the outcome before anything more happens on it.
            if answer(True):
                made.append(protocol)
            else:
                protocol.drop()

        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(
            guard.adopting_factory(runner.server, raw, on_made, upgraded=kind == KIND_MEDIA), sock
        )
        if made:
            self.adopted[_KIND_NAMES[kind]] += 1
        return bool(made)


def _connection(request: web.Request) -> GuardedProtocol | None:
    guard = request.app.get(GUARD_KEY)
    return guard.guard_of(request.transport) if guard is not None else None
