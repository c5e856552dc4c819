"""The webhook endpoint: transport checks, signature, replay, then the provider (SPEC 8).

Order matters and is fixed: cheap refusals first, so an unauthenticated client never gets the
server to read a body it will not verify, nor to verify a body larger than 64 KiB.

1. wrong path 404 (exact match after one trailing slash; `/voice/webhook-evil` is 404);
   not POST 405;
2. provider signature headers missing: 401, before the body is read (unless skipping);
3. more than 8 requests in flight from one address: 429; body over 64 KiB: 413 (slow: 408);
4. signature invalid (or no acceptable host to rebuild the signed URL from): 401;
5. replay of a verified delivery within 10 minutes: 200 with `provider.replay_reply(...)` and
   no side effects;
6. `provider.handle_webhook`, whose reply is remembered under the replay key once it succeeded.
   A store fault (its effects could not be made durable) is 503, so the provider retries;
   any other uncaught error is 500 "Internal Server Error"; either way nothing is remembered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from aiohttp import web

from daemon.errors import CallStoredElsewhereError, StoreError, WebhookSignatureError
from daemon.model.webhook import WebhookReply
from daemon.providers.base import WebhookPlane, WebhookRequest
from daemon.webhooks.limits import AddressLimiter, WebhookLimits
from daemon.webhooks.rejections import RejectionLog
from daemon.webhooks.security import replay_aliases, skip_replay_key
from daemon.webhooks.urls import UrlPolicy, client_ip, verification_url

logger = logging.getLogger(__name__)

REPLAY_SEEN = WebhookReply(status=0, content_type="", body=b"")
"""What a replay cache returns for a key it knows but whose reply it did not keep.

Status 0 is never a real answer, so a store can persist "seen, no reply" as a status column of 0
and the server still treats the delivery as a replay.
"""


class ReplayCache(Protocol):
    """Remembers verified deliveries: the SQLite and PostgreSQL stores implement it.

    The store, not the process, holds it so that a replay after a daemon restart, or one that
    reaches another daemon behind the same load balancer, is still recognised.
    """

    async def replay_lookup(self, key: str) -> WebhookReply | None:
        """The first delivery's reply, `REPLAY_SEEN` if known without one, None if unseen."""

    async def replay_claim(self, keys: Sequence[str]) -> WebhookReply | None:
        """The first delivery's reply for any of a delivery's keys, or None: unseen, and now
        this process's to handle (atomic across the daemons sharing a store)."""

    async def replay_release(self, keys: Sequence[str]) -> None:
        """Give back a claim whose delivery could not be handled (its retry is handled afresh)."""

    async def replay_remember(self, key: str, reply: WebhookReply, ttl_seconds: float) -> None:
        """Remember a handled delivery's reply under its key for `ttl_seconds`."""


class MemoryReplayCache:
    """A bounded, expiring in-process `ReplayCache` (tests and store-less runs).

    Insertion-ordered: the oldest entries are pruned first, both when they expire and when more
    than `max_entries` keys are held, so memory stays bounded under a flood of valid deliveries.
    """

    def __init__(
        self, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Hold at most `max_entries` keys, timed by `clock` (seconds, monotonic)."""
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, WebhookReply]] = OrderedDict()

    def __len__(self) -> int:
        """Keys currently held (expired ones included until pruned)."""
        return len(self._entries)

    async def replay_lookup(self, key: str) -> WebhookReply | None:
        """See `ReplayCache.replay_lookup`."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[key]
            return None
        return entry[1]

    async def replay_claim(self, keys: Sequence[str]) -> WebhookReply | None:
        """See `ReplayCache.replay_claim` (one process: a lookup)."""
        for key in keys:
            if (seen := await self.replay_lookup(key)) is not None:
                return seen
        return None

    async def replay_release(self, keys: Sequence[str]) -> None:
        """See `ReplayCache.replay_release` (nothing is claimed in one process)."""

    async def replay_remember(self, key: str, reply: WebhookReply, ttl_seconds: float) -> None:
        """See `ReplayCache.replay_remember`."""
        now = self._clock()
        self._entries[key] = (now + ttl_seconds, reply)
        self._entries.move_to_end(key)
        while self._entries:
            oldest_key, (expires, _) = next(iter(self._entries.items()))
            if expires > now and len(self._entries) <= self._max:
                break
            del self._entries[oldest_key]


def normalize_path(path: str) -> str:
    """Add a leading slash and drop one trailing slash, as both config and requests are."""
    if not path.startswith("/"):
        path = "/" + path
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return path


_STATUS_TEXT = {
    401: "Unauthorized",
    408: "Request Timeout",
    413: "Payload Too Large",
    429: "Too Many Requests",
}


def _plain(status: int, text: str, *, close: bool = False) -> web.Response:
    response = web.Response(status=status, text=text)
    if close:
        # The body may be unread: do not keep the connection for another request.
        response.force_close()
    return response


def _to_response(reply: WebhookReply) -> web.Response:
    return web.Response(
        status=reply.status, body=reply.body, headers={"Content-Type": reply.content_type}
    )


def _first_reply(seen: WebhookReply) -> WebhookReply | None:
    return None if seen.status == REPLAY_SEEN.status else seen


class _Slot:
    """One request's hold on its address's budget, given back exactly once."""

    __slots__ = ("_limiter", "bucket", "held")

    def __init__(self, limiter: AddressLimiter, bucket: str) -> None:
        self._limiter = limiter
        self.bucket = bucket
        self.held = True

    def release(self, *, failed: bool) -> None:
        """Give the slot back; `failed` makes it keep counting for the penalty window."""
        if self.held:
            self.held = False
            self._limiter.release(self.bucket, failed=failed)


def _signature_reason(exc: WebhookSignatureError) -> str:
    """The summary-log reason of a failed verification: its message, the URL without query.

    Messages name the URL that was verified (the usual cause is a URL mismatch); its query may
    differ on every request, which would defeat one summary line per reason.
    """
    message, sep, url = exc.message.partition(" for URL ")
    return message + sep + url.split("?", 1)[0]


Forwarder = Callable[[str, WebhookRequest], Awaitable[WebhookReply | None]]
"""(request target, verified delivery) -> the answer of the daemon that handled it, or None to
handle it here."""
HandOver = Callable[[web.Request, WebhookRequest], Awaitable[bool | None]]
"""(request, verified delivery) -> True when a sibling worker took the connection; False when
no other daemon runs the call (handled here, not forwarded); None: `forward` decides."""


class WebhookServer:
    """One provider's webhook endpoint. `policy` may be replaced when a tunnel learns its URL."""

    def __init__(
        self,
        *,
        path: str,
        provider: WebhookPlane,
        replay: ReplayCache,
        policy: UrlPolicy,
        skip_signature: bool = False,
        limits: WebhookLimits | None = None,
    ) -> None:
        """Wire the endpoint; `skip_signature` is the loopback-only development switch."""
        self.path = normalize_path(path)
        self.provider = provider
        self.replay = replay
        self.policy = policy
        self.skip_signature = skip_signature
        self.limits = limits or WebhookLimits()
        self._limiter = AddressLimiter(
            self.limits.max_in_flight_per_address,
            penalty_seconds=self.limits.failure_penalty_seconds,
        )
        self.rejections = RejectionLog(logger)
        self.forward: Forwarder | None = None
        """Set by a daemon sharing its store with others: sends a verified delivery about a
        call another daemon runs to that daemon (`daemon.cluster.forward_webhook`)."""
        self.hand_over: HandOver | None = None
        """Set by a worker (`--workers N`): gives the connection of a verified delivery about a
        call a sibling worker runs to that worker, before any forwarding
        (`daemon.workers.siblings`)."""
        self.forwarded = 0
        """Deliveries answered by another daemon through `forward`."""
        self._pending: dict[str, asyncio.Future[WebhookReply | None]] = {}
        if skip_signature:
            logger.warning(
                "webhook signature verification is OFF (skip_signature_verification): "
                "only safe on a loopback bind with nothing exposed publicly"
            )

    def add_routes(self, app: web.Application) -> None:
        """Route the path (and its one-trailing-slash form) to `handle`, for every method."""
        app.router.add_route("*", self.path, self.handle)
        if self.path != "/":
            app.router.add_route("*", self.path + "/", self.handle)

    def _reject(
        self,
        request: web.Request,
        status: int,
        reason: str,
        *,
        close: bool = False,
        address: str | None = None,
    ) -> web.Response:
        """Count a refusal for the summary log (never with secrets or signatures); answer it.

        `close` drops the connection after the answer when the body was left unread.
        """
        self.rejections.record("webhook", status, reason, address or request.remote)
        return _plain(status, _STATUS_TEXT[status], close=close)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp handler: the SPEC 8 pipeline; never lets an exception escape."""
        try:
            return await self._handle(request)
        except Exception:
            logger.exception("webhook handling failed (peer %s)", request.remote)
            return _plain(500, "Internal Server Error")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if normalize_path(request.raw_path.split("?", 1)[0]) != self.path:
            return _plain(404, "Not Found")
        if request.method != "POST":
            response = _plain(405, "Method Not Allowed")
            response.headers["Allow"] = "POST"
            return response
        if not self.skip_signature and not self.provider.has_signature_headers(request.headers):
            return self._reject(request, 401, "missing signature headers", close=True)
        policy = self.policy
        address = client_ip(request.remote, request.headers, policy)
        bucket = self._limiter.acquire(address)
        if bucket is None:
            return self._reject(
                request, 429, "too many unverified requests", close=True, address=address
            )
        slot = _Slot(self._limiter, bucket)
        try:
            return await self._verified(request, policy, slot)
        finally:
            slot.release(failed=True)

    async def _read_body(self, request: web.Request) -> bytes | int:
        """The body, or the status refusing it (413 over the cap, 408 too slow)."""
        cap = self.limits.max_body_bytes
        if request.content_length is not None and request.content_length > cap:
            return 413
        body = bytearray()
        try:
            async with asyncio.timeout(self.limits.body_timeout_seconds):
                while chunk := await request.content.read(cap + 1 - len(body)):
                    body += chunk
                    if len(body) > cap:
                        return 413
        except TimeoutError:
            return 408
        return bytes(body)

    async def _verified(
        self, request: web.Request, policy: UrlPolicy, slot: _Slot
    ) -> web.StreamResponse:
        """Read, verify (then free the address's slot: verified requests never count), handle.

        Every early return is a failure, which `_handle` counts against the address.
        """
        address = slot.bucket
        body = await self._read_body(request)
        if isinstance(body, int):
            reason = "body too large" if body == 413 else "body too slow"
            return self._reject(request, body, reason, close=True, address=address)
        target = request.raw_path
        url = verification_url(policy, target=target, peer=request.remote, headers=request.headers)
        if url is None and not self.skip_signature:
            return self._reject(request, 401, "no acceptable host for the URL", address=address)
        webhook = WebhookRequest(
            method=request.method,
            path=request.path,
            query=tuple(request.query.items()),
            headers=request.headers,
            body=body,
            remote=request.remote,
            verify_url=url or "http://localhost" + target,
        )
        if self.skip_signature:
            key = skip_replay_key(self.provider.name, webhook.method, webhook.verify_url, body)
        else:
            try:
                key = self.provider.verify(webhook)
            except WebhookSignatureError as exc:
                return self._reject(request, 401, _signature_reason(exc), address=address)
            if not key:
                return self._reject(request, 401, "verifier gave no replay key", address=address)
        slot.release(failed=False)
        passed = await self.hand_over(request, webhook) if self.hand_over is not None else None
        if passed:
            # A sibling worker holds the connection (and answers); this copy is closed, so
            # nothing written here reaches the provider.
            return _plain(503, "Service Unavailable", close=True)
        if self.forward is not None and passed is None:
            forwarded = await self.forward(request.raw_path, webhook)
            if forwarded is not None:
                self.forwarded += 1
                return _to_response(forwarded)
        aliases = replay_aliases(self.provider.name, webhook.verify_url, request.headers)
        try:
            return await self._once((key, *aliases), webhook)
        except CallStoredElsewhereError as exc:
            # A new call's first delivery reached another daemon too, and that daemon stored
            # the call first: it runs the call, so it answers this delivery as well.
            logger.info("%s; passing the delivery to that daemon", exc.message)
            again = await self.forward(target, webhook) if self.forward is not None else None
            if again is None:  # ended meanwhile: nothing left to do for this delivery
                return _to_response(self.provider.replay_reply(None))
            return _to_response(again)

    async def _once(self, keys: tuple[str, ...], webhook: WebhookRequest) -> web.StreamResponse:
        """Handle a verified delivery once per replay identity.

        `keys` are every identity of the delivery (the verifier's key first, then aliases such
        as each Plivo nonce): a delivery matching any known one is a replay, and all are
        remembered. A duplicate that arrives while the first is still being handled (a provider
        retry after its own timeout) waits for the first and answers as a replay, instead of
        racing it.
        """
        pending = next((p for k in keys if (p := self._pending.get(k)) is not None), None)
        if pending is not None:
            first = await asyncio.shield(pending)
            if first is None:
                return _plain(500, "Internal Server Error")
            self.rejections.record(
                "webhook",
                200,
                f"duplicate {self.provider.name} delivery answered as a replay",
                webhook.remote,
            )
            return _to_response(self.provider.replay_reply(_first_reply(first)))
        future: asyncio.Future[WebhookReply | None] = asyncio.get_running_loop().create_future()
        for key in keys:
            self._pending[key] = future
        outcome: WebhookReply | None = None
        claimed = False
        try:
            try:
                seen = await self.replay.replay_claim(keys)
            except StoreError:
                return _plain(503, "Service Unavailable")  # the provider retries
            claimed = seen is None
            if seen is not None:
                outcome = seen
                self.rejections.record(
                    "webhook",
                    200,
                    f"replayed {self.provider.name} webhook delivery ignored",
                    webhook.remote,
                )
                return _to_response(self.provider.replay_reply(_first_reply(seen)))
            try:
                reply = await self.provider.handle_webhook(webhook)
            except CallStoredElsewhereError:
                raise  # `_verified` passes it to the daemon that stored the call
            except StoreError:
                # Not durable, so not done (SPEC section 6): the provider retries, and the
                # retry is handled afresh. The store logs the fault once a minute.
                return _plain(503, "Service Unavailable")
            outcome = reply
            claimed = False  # remembered now (or, failing that, the claim expires)
            await self._remember(keys, reply)
            return _to_response(reply)
        finally:
            if claimed:  # not handled: give the delivery back, so its retry is not a "replay"
                with contextlib.suppress(StoreError):
                    await self.replay.replay_release(keys)
            for key in keys:
                self._pending.pop(key, None)
            future.set_result(outcome)

    async def _remember(self, keys: tuple[str, ...], reply: WebhookReply) -> None:
        try:
            for key in keys:
                await self.replay.replay_remember(key, reply, self.limits.replay_ttl_seconds)
        except StoreError:
            pass  # the events are stored; this process still knows the keys (memory)
        except Exception:
            # The events are applied: answering an error would only make the provider retry
            # a delivery we could then no longer recognise.
            logger.exception("could not remember a webhook delivery for replay protection")


WEBHOOK_SERVER_KEY = web.AppKey("voicecall_webhook_server", WebhookServer)
"""Where `add_webhook_routes` leaves the server on the app, for the daemon to update it."""


def add_webhook_routes(
    app: web.Application,
    *,
    path: str,
    provider: WebhookPlane,
    replay: ReplayCache,
    policy: UrlPolicy,
    skip_signature: bool,
    limits: WebhookLimits | None = None,
) -> WebhookServer:
    """Mount the webhook endpoint on `app` and return it (also stored at `WEBHOOK_SERVER_KEY`)."""
    server = WebhookServer(
        path=path,
        provider=provider,
        replay=replay,
        policy=policy,
        skip_signature=skip_signature,
        limits=limits,
    )
    server.add_routes(app)
    app[WEBHOOK_SERVER_KEY] = server
    return server
