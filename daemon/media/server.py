"""The media-stream websocket endpoint (SPEC 9) and its installation on the daemon.

Every limit is checked as early as it can be, so an unauthenticated client costs little:

1. more than ``max_connections`` sockets (open or upgrading): HTTP 503 before the upgrade;
2. a provider whose cloud signs the upgrade (its ``stream_upgrade_signature``; Twilio's
   ``X-Twilio-Signature`` over the ``wss://`` URL): verified before the upgrade when
   signatures are on; failure is HTTP 401;
3. more than ``max_pending_connections`` (or ``..._per_ip``) sockets without a valid
   ``start``: the OLDEST pending socket of that scope is closed with 1013 to admit the new one
   (genuine streams send ``start`` within milliseconds, so a flood of sockets that never do,
   even with a replayed upgrade signature, cannot starve them);
4. no valid ``start`` within ``pre_start_timeout_ms``: close 1008;
5. unknown call or bad token on ``start``: close 1008;
6. after that, a peer that stops reading (send buffer over 1 MiB): close 1013.
Messages are at most 64 KiB. On ``stop`` or close the session stops STT and unbinds; the call
is ended after a 2 s grace unless a new stream binds (see :class:`MediaHub`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import aiohttp
from aiohttp import WSMsgType, web

from daemon.errors import ConfigError, SpeechError, WebhookSignatureError
from daemon.media.direct import answered_response, attach, direct_response, release_cycles
from daemon.media.hub import MediaHub
from daemon.media.pacer import Pacer
from daemon.media.protocols import StreamEvent, framing_for
from daemon.media.readbatch import ReadBatcher
from daemon.media.session import CLOSE_TRY_AGAIN, MediaSession
from daemon.media.widening import Widening
from daemon.media.wire import FrameWriter
from daemon.providers import catalog
from daemon.realtime.service import RealtimeService
from daemon.realtime.settings import realtime_in_use
from daemon.speech.stt.factory import create_stt
from daemon.speech.tts.cache import cached
from daemon.speech.tts.factory import create_tts
from daemon.speech.vendor import open_vendor_session
from daemon.webhooks.connections import GUARD_KEY
from daemon.webhooks.mount import url_policy
from daemon.webhooks.rejections import RejectionLog
from daemon.webhooks.security import TwilioVerifier
from daemon.webhooks.urls import UrlPolicy, client_ip, stream_verification_url

if TYPE_CHECKING:
    from daemon.config.model import Config, StreamingConfig
    from daemon.engine.calls import CallEngine
    from daemon.exposure import Exposure

logger = logging.getLogger(__name__)

Relay = Callable[
    [web.Request, web.WebSocketResponse, str | None, Mapping[str, str], list[str]],
    Awaitable[Callable[[], Awaitable[None]] | None],
]
"""(request, socket, provider call id, start parameters, messages so far) -> the relay to run
when another daemon runs the stream's call, or None to admit it here."""

HandOver = Callable[[web.Request, str | None, Mapping[str, str]], Awaitable[bool | None]]
"""(request, provider call id, start parameters) -> True when a sibling worker that runs the
stream's call took the connection (or it was closed trying): this process lets go of it;
False when no other daemon runs the call (admitted here, no relay asked); None: the relay
decides."""

MAX_MESSAGE_BYTES = 64 * 1024
CLOSE_POLICY = 1008
CLOSE_TIMEOUT_SECONDS = 2.0
"""How long a close waits for the peer's close frame (a non-reading peer never sends one)."""
NO_ADDRESS = "__no_address__"

MEDIA_HUB_KEY = web.AppKey("voicecall_media_hub", MediaHub)


class UpgradeVerifier(Protocol):
    """Checks the signature a provider's cloud puts on a stream's websocket upgrade."""

    def verify_upgrade(self, wss_url: str, headers: Mapping[str, str]) -> str:
        """Raise WebhookSignatureError unless `headers` sign `wss_url`."""


UPGRADE_VERIFIERS: Mapping[str, Callable[[Config], UpgradeVerifier]] = {
    "twilio": lambda config: TwilioVerifier(config.twilio.auth_token or ""),
}
"""The verifier of each upgrade signature scheme a provider declares
(:attr:`daemon.providers.catalog.ProviderSpec.stream_upgrade_signature`)."""


async def _HANDED_OVER() -> None:
    """The stream went to a sibling worker: nothing to run here."""


def _reason(text: str) -> str:
    """A close reason safe for logs: printable, at most 120 characters."""
    return "".join(c if c.isprintable() else " " for c in text)[:120]


@dataclass(slots=True)
class _Pending:
    """A socket waiting for its ``start``."""

    key: int
    address: str
    ws: web.WebSocketResponse
    eviction: asyncio.Task[bool] | None = None
    """The 1013 close of an evicted socket, awaited by its own handler before it returns."""


class MediaServer:
    """The aiohttp handler of the stream path, with its connection accounting."""

    def __init__(
        self,
        hub: MediaHub,
        settings: StreamingConfig,
        *,
        provider: str,
        verifier: UpgradeVerifier | None = None,
        policy: UrlPolicy | None = None,
    ) -> None:
        """``verifier`` set means: verify the upgrade's signature against ``policy``."""
        self.hub = hub
        self.settings = settings
        self.provider = provider
        self.verifier = verifier
        self.policy = policy or UrlPolicy()
        """Replace it when the public URL changes (tunnel learned, Tailscale)."""
        self.sockets = 0
        """Sockets open or upgrading (the 503 limit)."""
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        """Sockets without an accepted ``start``, oldest first."""
        self._pending_by_ip: dict[str, OrderedDict[int, _Pending]] = {}
        self._next_pending = 0
        self.closing = False
        self.rejections = RejectionLog(logger)
        self.relay: Relay | None = None
        """Set by a daemon sharing its store with others: passes a stream whose call another
        daemon runs to that daemon (`daemon.cluster.forward_media`)."""
        self.hand_over: HandOver | None = None
        """Set by a worker (`--workers N`): gives a stream whose call a sibling worker runs to
        that worker, socket and all (`daemon.workers.siblings`), before any relay."""
        self.relayed = 0
        """Streams passed through to another daemon by the relay."""
        self.batcher = ReadBatcher(settings.inbound_batch_ms)
        """Caller audio read a few frames at a time (`daemon.media.readbatch`)."""

    @property
    def pending(self) -> int:
        """Sockets without an accepted ``start``."""
        return len(self._pending)

    # ------------------------------------------------------------------ pre-upgrade

    def _signature_ok(self, request: web.Request) -> bool:
        if self.verifier is None:
            return True
        url = stream_verification_url(
            self.policy, target=request.raw_path, peer=request.remote, headers=request.headers
        )
        if url is None:
            return False
        path, _, query = url.partition("?")
        toggled = path[:-1] if path.endswith("/") else path + "/"
        for candidate in (url, toggled + ("?" + query if query else "")):
            try:
                self.verifier.verify_upgrade(candidate, request.headers)
            except WebhookSignatureError:
                continue
            return True
        return False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Upgrade, wait for an authorised ``start``, then run the session to its end."""
        guard = request.app.get(GUARD_KEY)
        connection = guard.guard_of(request.transport) if guard is not None else None
        if connection is not None and connection.upgraded_elsewhere:
            connection.upgraded_elsewhere = False  # only its first request was answered
            return await self._handle_adopted(request)
        if self.closing:
            return web.Response(status=503, text="Media stream handler is shutting down")
        if self.sockets >= self.settings.max_connections:
            self.rejections.record(
                "media stream upgrade", 503, "over streaming.max_connections", request.remote
            )
            return web.Response(status=503, text="Too many media stream connections")
        if not self._signature_ok(request):
            self.rejections.record(
                "media stream upgrade", 401, "bad or missing X-Twilio-Signature", request.remote
            )
            return web.Response(status=401, text="Unauthorized")
        self.sockets += 1
        try:
            ws = direct_response(
                max_msg_size=MAX_MESSAGE_BYTES, compress=False, timeout=CLOSE_TIMEOUT_SECONDS
            )
            await ws.prepare(request)
            await self._serve(request, ws)
            return ws
        finally:
            self.sockets -= 1

    async def _handle_adopted(self, request: web.Request) -> web.StreamResponse:
        """A stream a sibling worker passed on after answering its upgrade (the same checks,
        but a refusal is now a websocket close: the client has its 101)."""
        ws = answered_response(
            max_msg_size=MAX_MESSAGE_BYTES,
            compress=False,
            timeout=CLOSE_TIMEOUT_SECONDS,
        )
        if ws is None:  # this aiohttp cannot skip the 101 (the siblings then never pass one)
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=503)
        self.sockets += 1
        try:
            await ws.prepare(request)
            if self.closing:
                await self._close(ws, CLOSE_TRY_AGAIN, "Media stream handler is shutting down")
            elif self.sockets > self.settings.max_connections:
                await self._close(
                    ws,
                    CLOSE_TRY_AGAIN,
                    "over streaming.max_connections",
                    address=request.remote or "",
                )
            elif not self._signature_ok(request):
                await self._close(
                    ws,
                    CLOSE_POLICY,
                    "bad or missing X-Twilio-Signature",
                    address=request.remote or "",
                )
            else:
                await self._serve(request, ws)
            return ws
        finally:
            self.sockets -= 1

    # ------------------------------------------------------------------ websocket

    async def _close(
        self, ws: web.WebSocketResponse, code: int, reason: str, *, address: str | None = None
    ) -> None:
        """Close; a refusal of an unauthenticated socket (`address` given) goes to the
        summary log instead of one line per socket."""
        if address is None:
            logger.info("media stream closed with %d: %s", code, _reason(reason))
        else:
            self.rejections.record("media stream", code, reason, address)
        await ws.close(code=code, message=reason.encode(), drain=False)

    async def _serve(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        address = client_ip(request.remote, request.headers, self.policy) or NO_ADDRESS
        # A trusted proxy's own address (a sibling worker or daemon passing streams on, a
        # balancer) stands for many callers: only the overall pending cap applies to it.
        per_ip = not (address == request.remote and self.policy.is_trusted_proxy(address))
        entry = self._admit_pending(address, ws, per_ip=per_ip)
        try:
            session = await self._start(request, ws)
        finally:
            self._forget_pending(entry)
            if entry.eviction is not None:
                # let the close handshake finish before aiohttp drops the connection
                await asyncio.shield(entry.eviction)
        if isinstance(session, MediaSession):
            await self._run(ws, session)
        elif session is not None:
            await session()  # relayed to the daemon that runs the call, until it ends

    def _admit_pending(
        self, address: str, ws: web.WebSocketResponse, *, per_ip: bool = True
    ) -> _Pending:
        """Count a new pending socket, first evicting the oldest of each full scope (the
        per-address one only with `per_ip`)."""
        mine = self._pending_by_ip.get(address)
        if (
            per_ip
            and mine is not None
            and len(mine) >= self.settings.max_pending_connections_per_ip
        ):
            self._evict(next(iter(mine.values())))
        if len(self._pending) >= self.settings.max_pending_connections:
            self._evict(next(iter(self._pending.values())))
        self._next_pending += 1
        entry = _Pending(self._next_pending, address, ws)
        self._pending[entry.key] = entry
        self._pending_by_ip.setdefault(address, OrderedDict())[entry.key] = entry
        return entry

    def _forget_pending(self, entry: _Pending) -> None:
        self._pending.pop(entry.key, None)
        mine = self._pending_by_ip.get(entry.address)
        if mine is not None:
            mine.pop(entry.key, None)
            if not mine:
                del self._pending_by_ip[entry.address]

    def _evict(self, entry: _Pending) -> None:
        """Close a pending socket with 1013 to make room; its slot is free at once."""
        self._forget_pending(entry)
        self.rejections.record(
            "media stream",
            CLOSE_TRY_AGAIN,
            "oldest pending socket evicted for a newer one",
            entry.address,
        )
        entry.eviction = self.hub.spawn(
            entry.ws.close(
                code=CLOSE_TRY_AGAIN,
                message=b"Too many pending media stream connections",
                drain=False,
            ),
            "media-evict",
        )

    async def _start(
        self, request: web.Request, ws: web.WebSocketResponse
    ) -> MediaSession | Callable[[], Awaitable[None]] | None:
        """Wait for a valid ``start``; close 1008 on timeout, unknown call or bad token (or
        hand the stream to the daemon that runs its call: the relay to run is returned)."""
        framing = framing_for(self.provider)
        seen: list[str] = []
        timeout = self.settings.pre_start_timeout_ms / 1000
        try:
            async with asyncio.timeout(timeout):
                while True:
                    message = await ws.receive()
                    if message.type is not WSMsgType.TEXT:
                        if message.type in (
                            WSMsgType.CLOSE,
                            WSMsgType.CLOSING,
                            WSMsgType.CLOSED,
                            WSMsgType.ERROR,
                        ):
                            return None
                        continue
                    seen.append(message.data)
                    start = framing.decode(message.data)
                    if start is not None and start.kind is StreamEvent.START:
                        break
        except TimeoutError:
            await self._close(ws, CLOSE_POLICY, "Start timeout", address=request.remote or "")
            return None
        call, parameters = start.provider_call_id, start.parameters
        elsewhere = await self._elsewhere(request, ws, call, parameters, seen)
        if elsewhere is not None:
            return None if elsewhere is _HANDED_OVER else elsewhere
        admission = await self.hub.admit(
            start.provider_call_id, start.parameters, request.query.get("token")
        )
        if admission is None:
            await self._close(
                ws, CLOSE_POLICY, "Unknown call or bad token", address=request.remote or ""
            )
            return None
        guard = request.app.get(GUARD_KEY)
        connection = guard.guard_of(request.transport) if guard is not None else None
        if connection is not None:
            connection.authenticated()
        session = MediaSession(
            self.hub,
            call_id=admission.call_id,
            provider_call_id=admission.provider_call_id,
            stream_id=start.stream_id or "",
            framing=framing,
            writer=FrameWriter(request.transport),
            close=lambda code, reason: self._close_later(ws, code, reason),
            suppress_first=admission.suppress_first,
            barge_in=admission.barge_in,
        )
        if self.hub.realtime is not None:
            await self.hub.realtime.attach(session)  # before bind: speech waits for the model
        self.hub.bind(session)
        if session.agent is None:  # realtime calls keep a read per frame (SPEC 15 latency)
            self.batcher.add(session, request.transport)
            self._start_stt(session)
        logger.info("media stream %s bound to call %s", session.stream_id, session.call_id)
        return session

    async def _elsewhere(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        provider_call_id: str | None,
        parameters: Mapping[str, str],
        seen: list[str],
    ) -> Callable[[], Awaitable[None]] | None:
        """When another worker or daemon runs the call: `_HANDED_OVER` (a sibling worker holds
        the connection now), or the relay to run; None to admit the stream here."""
        passed = None
        if self.hand_over is not None:
            passed = await self.hand_over(request, provider_call_id, parameters)
            if passed:
                return _HANDED_OVER
        if self.relay is not None and passed is None:
            relayed = await self.relay(request, ws, provider_call_id, parameters, seen)
            if relayed is not None:
                self.relayed += 1
                return relayed
        return None

    def _close_later(self, ws: web.WebSocketResponse, code: int, reason: str) -> None:
        self.hub.spawn(self._close(ws, code, reason), "media-close")

    def _start_stt(self, session: MediaSession) -> None:
        factory = self.hub.stt_factory
        if factory is None:
            return
        stt = factory(session)
        session.stt = stt

        async def connect() -> None:
            try:
                await stt.connect()
            except SpeechError as exc:
                logger.warning("call %s: STT unavailable: %s", session.call_id, exc.message)
                session.on_error(exc)

        self.hub.spawn(connect(), f"stt-connect-{session.call_id}")

    async def _run(self, ws: web.WebSocketResponse, session: MediaSession) -> None:
        """Feed messages to the session until ``stop`` or close; then settle and unbind.

        Once nothing is queued, text goes to the session directly from the parser
        (:mod:`daemon.media.direct`); this loop then only wakes for the end of the stream.
        """
        feed = session.feed
        direct = False
        try:
            while True:
                if not direct:
                    direct = attach(ws, feed)
                message = await ws.receive()
                if message.type is WSMsgType.TEXT:
                    if not feed(message.data):
                        break
                elif message.type in (
                    WSMsgType.CLOSE,
                    WSMsgType.CLOSING,
                    WSMsgType.CLOSED,
                    WSMsgType.ERROR,
                ):
                    break
        finally:
            self.batcher.discard(session)
            await session.close()
            self.hub.unbind(session, end_call=not self.closing)
            if not ws.closed:
                await ws.close(drain=False)
            release_cycles(ws)
            logger.info("media stream %s of call %s ended", session.stream_id, session.call_id)


class MediaHost(Protocol):
    """What `install_media` uses of the daemon (`daemon.app.Daemon` is one), and no more."""

    config: Config
    engine: CallEngine
    web_app: web.Application
    media: MediaHub | None
    media_server: MediaServer | None
    realtime: RealtimeService | None

    @property
    def exposure(self) -> Exposure:
        """Where the webhook and stream URLs are published right now."""


def _policy(daemon: MediaHost) -> UrlPolicy:
    """The webhook server's URL policy (it follows the exposure), else one built the same way.

    The effective public URL (or the local one for a simulator) is what Twilio signed.
    """
    webhooks = getattr(daemon, "webhooks", None)
    policy = getattr(webhooks, "policy", None)
    if isinstance(policy, UrlPolicy):
        return policy
    return url_policy(daemon.config, daemon.exposure.webhook_url or None)


def install_media(daemon: MediaHost) -> MediaHub | None:
    """Create the hub (into ``daemon.media``) and route ``streaming.stream_path``.

    Does nothing when streaming is off. The TTS engine and STT factory need an HTTP client,
    which is opened on application start-up; a TTS or STT configuration problem is logged and
    leaves that part off (``hub.tts is None``: providers then use their own voice).
    """
    config = daemon.config
    settings = config.streaming
    if not settings.enabled:
        return None
    # One clock for every stream; with `outbound_batch_ms` above a frame it ticks less often
    # and each tick writes a stream's frames due by then together (Playback.pump). While the
    # loop is behind, `outbound_batch_overload_ms` (daemon/media/widening.py).
    base = settings.outbound_batch_ms / 1000
    wide = max(base, settings.outbound_batch_overload_ms / 1000)
    gauge = getattr(daemon, "loop_load", None)
    widening = Widening(base, wide, gauge) if wide > base and gauge is not None else None
    pacer = Pacer(interval=base, widening=widening)
    hub = MediaHub(daemon.engine.apply, calls=daemon.engine, pacer=pacer)
    daemon.media = hub
    declared = catalog.spec(config.provider)
    scheme = declared.stream_upgrade_signature if declared is not None else None
    verifier = None
    if scheme is not None and not config.skip_signature_verification:
        verifier = UPGRADE_VERIFIERS[scheme](config)
    server = MediaServer(hub, settings, provider=config.provider, verifier=verifier)
    daemon.media_server = server
    app = daemon.web_app
    app[MEDIA_HUB_KEY] = hub
    http: list[aiohttp.ClientSession] = []

    async def on_startup(_app: web.Application) -> None:
        shared = getattr(daemon, "http", None)
        if isinstance(shared, aiohttp.ClientSession):
            session = shared
        else:
            session = open_vendor_session(config.max_concurrent_calls, settings.max_connections)
            http.append(session)
        _start_speech(daemon, hub, session)

    async def handle(request: web.Request) -> web.StreamResponse:
        server.policy = _policy(daemon)  # follows the exposure (tunnel learned, `expose`)
        return await server.handle(request)

    async def on_shutdown(_app: web.Application) -> None:
        server.closing = True
        await hub.close()
        server.batcher.close()

    async def on_cleanup(_app: web.Application) -> None:
        for session in http:
            await session.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    app.router.add_get(settings.stream_path, handle)
    return hub


def _start_speech(daemon: MediaHost, hub: MediaHub, session: aiohttp.ClientSession) -> None:
    """Give the hub its TTS engines, STT factory and (realtime mode) voice service, on the
    shared vendor session; a configuration problem is logged and leaves that part off. Each
    TTS engine says sentences asked for again (greetings) from memory
    (`daemon.speech.tts.cache`)."""
    config = daemon.config
    settings = config.streaming
    # With [realtime] on, the model speaks and listens: a missing TTS or STT key only
    # matters to numbers that turn realtime off, so it is not an error then.
    cascade_problem = logger.info if config.realtime.enabled else logger.error
    try:
        hub.tts = cached(create_tts(config.tts, session))
    except ConfigError as exc:
        cascade_problem("media streams cannot speak: %s", exc.message)
    for key, table in config.numbers.items():
        if table.effective_tts is None:
            continue
        try:
            hub.number_tts[key] = cached(create_tts(table.effective_tts, session))
        except ConfigError as exc:
            logger.error('calls to [numbers."%s"] use the call TTS: %s', key, exc.message)
    try:
        create_stt(settings, session, _NullListener())
        hub.stt_factory = lambda listener: create_stt(settings, session, listener)
    except ConfigError as exc:
        cascade_problem("media streams cannot listen: %s", exc.message)
    if realtime_in_use(config):
        service = RealtimeService(lambda: daemon.config, session, daemon.engine)
        hub.realtime = service
        daemon.realtime = service


class _NullListener:
    """Listener for the start-up check that the STT settings are complete."""

    def on_speech_start(self) -> None: ...
    def on_partial(self, text: str) -> None: ...
    def on_final(self, text: str, confidence: float | None) -> None: ...
    def on_error(self, error: SpeechError) -> None: ...
