"""The webhook pipeline of SPEC 8 on a real aiohttp server, with a recording fake provider.
Every test runs with aiohttp's handler started as usual and stepped at once (the
`handler_start` fixture, daemon/webhooks/eager.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from urllib.parse import urlencode

import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator

from daemon.model.webhook import WebhookReply
from daemon.providers.base import WebhookRequest
from daemon.webhooks.limits import WebhookLimits
from daemon.webhooks.security import TwilioVerifier, has_signature_headers
from daemon.webhooks.server import (
    REPLAY_SEEN,
    WEBHOOK_SERVER_KEY,
    MemoryReplayCache,
    add_webhook_routes,
)
from daemon.webhooks.urls import UrlPolicy

TOKEN = "test-auth-token"
PUBLIC = "https://public.example.com"
PATH = "/voice/webhook"
SDK = RequestValidator(TOKEN)
pytestmark = pytest.mark.usefixtures("handler_start")


class FakeProvider:
    """Verifies real Twilio signatures and records what the server asked of it."""

    name = "twilio"

    def __init__(self) -> None:
        self.verifier = TwilioVerifier(TOKEN)
        self.handled: list[WebhookRequest] = []
        self.replayed: list[WebhookReply | None] = []
        self.gate: asyncio.Event | None = None
        self.entered = 0
        self.fail_next = False

    def has_signature_headers(self, headers: Mapping[str, str]) -> bool:
        return has_signature_headers(self.name, headers)

    def verify(self, request: WebhookRequest) -> str:
        return self.verifier.verify_request(request)

    async def handle_webhook(self, request: WebhookRequest) -> WebhookReply:
        self.entered += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("engine exploded")
        self.handled.append(request)
        return WebhookReply(200, "application/xml", b"<Response><Say>hi</Say></Response>")

    def replay_reply(self, first: WebhookReply | None) -> WebhookReply:
        self.replayed.append(first)
        return WebhookReply(200, "application/xml", b"<Response></Response>")


def form(**params: str) -> tuple[bytes, dict[str, str]]:
    """A form body and the headers Twilio would send for it to PUBLIC + PATH."""
    signature = SDK.compute_signature(PUBLIC + PATH, params)
    return urlencode(params).encode(), {
        "X-Twilio-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
    }


async def start(
    aiohttp_client,
    *,
    skip: bool = False,
    policy: UrlPolicy | None = None,
    limits: WebhookLimits | None = None,
    replay: MemoryReplayCache | None = None,
):
    provider = FakeProvider()
    app = web.Application()
    add_webhook_routes(
        app,
        path=PATH,
        provider=provider,
        replay=replay if replay is not None else MemoryReplayCache(),
        policy=policy or UrlPolicy(public_url=PUBLIC),
        skip_signature=skip,
        limits=limits,
    )
    client = await aiohttp_client(app)
    return client, provider


async def raw_exchange(client, head: str, timeout: float = 2.0) -> str:
    """Send raw request headers (and no body) and read the status line back."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(head.encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        return line.decode()
    finally:
        writer.close()


async def test_valid_webhook_is_handled(aiohttp_client) -> None:
    """A signed delivery reaches the provider with the verification URL and its body."""
    client, provider = await start(aiohttp_client)
    body, headers = form(CallSid="CA1", CallStatus="ringing")
    resp = await client.post(PATH, data=body, headers=headers)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/xml"
    assert await resp.read() == b"<Response><Say>hi</Say></Response>"
    assert len(provider.handled) == 1
    assert provider.handled[0].verify_url == PUBLIC + PATH
    assert provider.handled[0].body == body


@pytest.mark.parametrize("path", ["/voice/webhook-evil", "/voice", "/voice/webhook//", "/other"])
async def test_wrong_path_is_404(aiohttp_client, path: str) -> None:
    """Only the exact path (one trailing slash allowed) is served."""
    client, provider = await start(aiohttp_client)
    body, headers = form(CallSid="CA1")
    resp = await client.post(path, data=body, headers=headers)
    assert resp.status == 404
    assert provider.entered == 0


async def test_one_trailing_slash_is_the_same_path(aiohttp_client) -> None:
    """`/voice/webhook/` is the webhook (signed as such)."""
    client, _provider = await start(aiohttp_client)
    params = {"CallSid": "CA1"}
    signature = SDK.compute_signature(PUBLIC + PATH + "/", params)
    resp = await client.post(
        PATH + "/", data=urlencode(params), headers={"X-Twilio-Signature": signature}
    )
    assert resp.status == 200


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_not_post_is_405(aiohttp_client, method: str) -> None:
    """Other methods are refused before anything else is looked at."""
    client, _provider = await start(aiohttp_client)
    resp = await client.request(method, PATH)
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST"
    assert await resp.text() == "Method Not Allowed"


async def test_missing_signature_is_401_before_the_body_is_read(aiohttp_client) -> None:
    """Headers announcing 10 MB but no body: 401 comes back at once, so nothing waited for it."""
    client, provider = await start(aiohttp_client)
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: public.example.com\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 10000000\r\n\r\n"
    )
    assert (await raw_exchange(client, head)).startswith("HTTP/1.1 401")
    assert provider.entered == 0


async def slow_request(client, headers: dict[str, str]) -> asyncio.StreamWriter:
    """Open a request whose body never finishes: it stays unverified, in flight."""
    _reader, writer = await asyncio.open_connection(client.host, client.port)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"POST {PATH} HTTP/1.1\r\nHost: x\r\n{head}Content-Length: 100\r\n\r\nA".encode())
    await writer.drain()
    return writer


async def test_too_many_unverified_in_flight_is_429(aiohttp_client) -> None:
    """Eight unverified requests from one address may be in flight; the ninth gets 429."""
    client, provider = await start(aiohttp_client)
    server = client.app[WEBHOOK_SERVER_KEY]
    writers = [await slow_request(client, {"X-Twilio-Signature": "bogus"}) for _ in range(8)]
    for _ in range(500):
        if server._limiter.in_use("127.0.0.1") == 8:
            break
        await asyncio.sleep(0.01)
    body, headers = form(CallSid="CA-ninth")
    ninth = await client.post(PATH, data=body, headers=headers)
    assert ninth.status == 429
    assert provider.entered == 0
    for writer in writers:
        writer.close()


async def test_verified_requests_never_count(aiohttp_client) -> None:
    """Eight verified requests still being handled leave the address's budget untouched."""
    client, provider = await start(aiohttp_client)
    provider.gate = asyncio.Event()
    held = []
    for i in range(12):
        body, headers = form(CallSid=f"CA{i}")
        held.append(asyncio.create_task(client.post(PATH, data=body, headers=headers)))
    for _ in range(500):
        if provider.entered == 12:
            break
        await asyncio.sleep(0.01)
    assert provider.entered == 12
    provider.gate.set()
    assert [r.status for r in await asyncio.gather(*held)] == [200] * 12


async def test_failed_verifications_count_for_the_penalty_window(aiohttp_client) -> None:
    """Eight bad signatures from one address make its next request 429 until they expire."""
    limits = WebhookLimits(failure_penalty_seconds=0.5)
    client, provider = await start(aiohttp_client, limits=limits)
    body, headers = form(CallSid="CA1")
    bad = {**headers, "X-Twilio-Signature": "forged"}
    for _ in range(8):
        assert (await client.post(PATH, data=body, headers=bad)).status == 401
    assert (await client.post(PATH, data=body, headers=headers)).status == 429
    await asyncio.sleep(0.6)
    assert (await client.post(PATH, data=body, headers=headers)).status == 200
    assert len(provider.handled) == 1


async def test_body_over_64k_is_413(aiohttp_client) -> None:
    """A 70 KiB body is refused with 413 and never reaches the provider."""
    client, provider = await start(aiohttp_client)
    body, headers = form(CallSid="CA1", Pad="x" * 70 * 1024)
    resp = await client.post(PATH, data=body, headers=headers)
    assert resp.status == 413
    assert provider.entered == 0


async def test_chunked_body_over_64k_is_413(aiohttp_client) -> None:
    """Without a Content-Length the cap is enforced while reading."""
    client, provider = await start(aiohttp_client)
    _, headers = form(CallSid="CA1")

    async def chunks():
        for _ in range(20):
            yield b"x" * 8192

    resp = await client.post(PATH, data=chunks(), headers=headers)
    assert resp.status == 413
    assert provider.entered == 0


async def test_content_length_over_cap_is_413_without_waiting(aiohttp_client) -> None:
    """An announced oversize body is refused from its Content-Length alone."""
    client, _provider = await start(aiohttp_client)
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nX-Twilio-Signature: abc\r\n"
        "Content-Length: 70000\r\n\r\n"
    )
    assert (await raw_exchange(client, head)).startswith("HTTP/1.1 413")


async def test_slow_body_is_408(aiohttp_client) -> None:
    """A body that never arrives ends with 408 after the body timeout."""
    client, _provider = await start(aiohttp_client, limits=WebhookLimits(body_timeout_seconds=0.2))
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nX-Twilio-Signature: abc\r\nContent-Length: 100\r\n\r\n"
    )
    assert (await raw_exchange(client, head)).startswith("HTTP/1.1 408")


async def test_bad_signature_is_401(aiohttp_client) -> None:
    """A tampered body fails verification: 401 and no side effects."""
    client, provider = await start(aiohttp_client)
    body, headers = form(CallSid="CA1", CallStatus="ringing")
    resp = await client.post(PATH, data=body.replace(b"ringing", b"completed"), headers=headers)
    assert resp.status == 401
    assert await resp.text() == "Unauthorized"
    assert provider.entered == 0


async def test_replay_is_200_without_side_effects(aiohttp_client) -> None:
    """The second delivery is answered by replay_reply and never handled again."""
    client, provider = await start(aiohttp_client)
    body, headers = form(CallSid="CA1", CallStatus="ringing")
    first = await client.post(PATH, data=body, headers=headers)
    second = await client.post(
        PATH, data=body, headers={**headers, "I-Twilio-Idempotency-Token": "new"}
    )
    assert (first.status, second.status) == (200, 200)
    assert await second.read() == b"<Response></Response>"
    assert len(provider.handled) == 1
    assert provider.replayed == [
        WebhookReply(200, "application/xml", b"<Response><Say>hi</Say></Response>")
    ]


async def test_concurrent_duplicate_waits_for_the_first(aiohttp_client) -> None:
    """A retry arriving while the first is still handled is a replay, not a second handling."""
    client, provider = await start(aiohttp_client)
    provider.gate = asyncio.Event()
    body, headers = form(CallSid="CA1")
    first = asyncio.create_task(client.post(PATH, data=body, headers=headers))
    while provider.entered < 1:
        await asyncio.sleep(0.01)
    second = asyncio.create_task(client.post(PATH, data=body, headers=headers))
    await asyncio.sleep(0.05)
    provider.gate.set()
    statuses = [r.status for r in await asyncio.gather(first, second)]
    assert statuses == [200, 200]
    assert provider.entered == 1 and len(provider.replayed) == 1


async def test_handler_error_is_500_and_not_remembered(aiohttp_client) -> None:
    """A failed handling answers 500 generically; the provider's retry is handled."""
    client, provider = await start(aiohttp_client)
    provider.fail_next = True
    body, headers = form(CallSid="CA1")
    resp = await client.post(PATH, data=body, headers=headers)
    assert resp.status == 500
    assert await resp.text() == "Internal Server Error"
    retry = await client.post(PATH, data=body, headers=headers)
    assert retry.status == 200
    assert len(provider.handled) == 1 and provider.replayed == []


async def test_seen_without_reply_is_still_a_replay(aiohttp_client) -> None:
    """A store that knows the key but not the reply still stops the second handling."""

    class SeenStore(MemoryReplayCache):
        async def replay_lookup(self, key: str) -> WebhookReply | None:
            return REPLAY_SEEN

    client, provider = await start(aiohttp_client, replay=SeenStore())
    body, headers = form(CallSid="CA1")
    resp = await client.post(PATH, data=body, headers=headers)
    assert resp.status == 200
    assert provider.entered == 0 and provider.replayed == [None]


async def test_skip_mode_needs_no_headers_but_detects_replays(aiohttp_client) -> None:
    """skip_signature_verification: unsigned requests pass; a replay is still caught."""
    client, provider = await start(aiohttp_client, skip=True)
    for _ in range(2):
        resp = await client.post(PATH, data=b"CallSid=CA1")
        assert resp.status == 200
    assert len(provider.handled) == 1 and len(provider.replayed) == 1


async def test_disallowed_host_is_401(aiohttp_client) -> None:
    """Without public_url, a Host outside allowed_hosts cannot be verified: 401."""
    client, provider = await start(
        aiohttp_client, policy=UrlPolicy(allowed_hosts=("ok.example.com",))
    )
    body, headers = form(CallSid="CA1")
    resp = await client.post(PATH, data=body, headers={**headers, "Host": "evil.example.com"})
    assert resp.status == 401
    assert provider.entered == 0


async def test_policy_can_be_replaced_when_the_tunnel_url_is_known(aiohttp_client) -> None:
    """The daemon swaps the policy once a tunnel learns its public URL."""
    client, _provider = await start(aiohttp_client, policy=UrlPolicy())
    body, headers = form(CallSid="CA1")
    assert (await client.post(PATH, data=body, headers=headers)).status == 401
    client.server.app[WEBHOOK_SERVER_KEY].policy = UrlPolicy(public_url=PUBLIC)
    assert (await client.post(PATH, data=body, headers=headers)).status == 200


async def test_memory_replay_cache_expires_and_is_bounded() -> None:
    """Entries expire after their TTL and the oldest go first past max_entries."""
    now = [0.0]
    cache = MemoryReplayCache(max_entries=3, clock=lambda: now[0])
    reply = WebhookReply()
    for key in "abcd":
        await cache.replay_remember(key, reply, 600)
    assert len(cache) == 3 and await cache.replay_lookup("a") is None
    assert await cache.replay_lookup("d") == reply
    now[0] = 600.0
    assert await cache.replay_lookup("d") is None
    await cache.replay_remember("e", reply, 600)
    assert len(cache) == 1
