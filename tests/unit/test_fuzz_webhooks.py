"""Hostile input on the webhook pipeline (SPEC 8): the real WebhookServer on a real aiohttp server.

The server runs for the whole module in a background thread with a recording fake provider that
verifies real Twilio signatures. Each example writes one raw HTTP/1.1 request (random path,
method, headers, body and Content-Length) on its own connection and reads the status line. Every
answer is one of the SPEC 8 statuses, the one the pipeline order predicts, and the fake provider
is reached only by requests with a valid signature.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator, Mapping
from urllib.parse import parse_qsl, urlencode

import pytest
from aiohttp import web
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from daemon.model.webhook import WebhookReply
from daemon.providers.base import WebhookRequest
from daemon.webhooks.limits import WebhookLimits
from daemon.webhooks.security import TwilioVerifier, has_signature_headers
from daemon.webhooks.server import MemoryReplayCache, add_webhook_routes, normalize_path
from daemon.webhooks.urls import UrlPolicy

TOKEN = "fuzz-auth-token"
PUBLIC = "https://public.example.com"
PATH = "/voice/webhook"
CAP = WebhookLimits().max_body_bytes
SPEC_STATUSES = frozenset({200, 401, 404, 405, 413, 429})
SIGNER = TwilioVerifier(TOKEN)
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
FRAMING = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "expect",
        "connection",
        "host",
        "upgrade",
        "x-twilio-signature",
    }
)
"""Headers the tests set themselves (framing is under test control; the signature is drawn)."""


class RecordingProvider:
    """Verifies real Twilio signatures; counts what reaches it."""

    name = "twilio"

    def __init__(self) -> None:
        self.handled: list[WebhookRequest] = []

    def has_signature_headers(self, headers: Mapping[str, str]) -> bool:
        return has_signature_headers(self.name, headers)

    def verify(self, request: WebhookRequest) -> str:
        return SIGNER.verify_request(request)

    async def handle_webhook(self, request: WebhookRequest) -> WebhookReply:
        self.handled.append(request)
        return WebhookReply(200, "application/xml", b"<Response/>")

    def replay_reply(self, first: WebhookReply | None) -> WebhookReply:
        return WebhookReply(200, "application/xml", b"<Response/>")


class ThreadedServer:
    """An aiohttp server with the webhook routes, on its own loop in a thread."""

    def __init__(self) -> None:
        self.provider = RecordingProvider()
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="fuzz-webhooks", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())
        self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application(client_max_size=CAP)
        add_webhook_routes(
            app,
            path=PATH,
            provider=self.provider,
            replay=MemoryReplayCache(),
            policy=UrlPolicy(public_url=PUBLIC),
            skip_signature=False,
            # failures would count for 10 s and turn later cases into 429
            limits=WebhookLimits(body_timeout_seconds=1.0, failure_penalty_seconds=0.0),
        )
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()
        # Handlers of connections the tests dropped mid-request: end them before the loop closes.
        leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10)

    def stop(self) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    running = ThreadedServer()
    running.start()
    yield running
    running.stop()


def send(port: int, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> int:
    """Write one raw request (Connection: close) and return the response status."""
    head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(head.encode("latin-1") + body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused early (413 before the body): the answer is still there to read
        status_line = sock.makefile("rb").readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    return int(status_line.split()[1])


def sign(target: str, params: list[tuple[str, str]]) -> str:
    return SIGNER.compute_signature(PUBLIC + target, params)


def signed_over(target: str, delivered: bytes) -> str | None:
    """The valid signature for the body the server will actually read (None: undecodable)."""
    try:
        return sign(target, parse_qsl(delivered.decode(), keep_blank_values=True))
    except UnicodeDecodeError:
        return None


real_paths = st.sampled_from([PATH, PATH + "/"])
other_paths = st.one_of(
    st.sampled_from(
        [
            PATH + "//",
            PATH + "-evil",
            "/voice",
            "/",
            "//voice/webhook",
            PATH + "%2F",
            "/voice/./webhook",
            PATH + "/..",
            "/VOICE/WEBHOOK",
        ]
    ),
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-._~%/", max_size=30).map(lambda p: "/" + p),
)
# Mostly the real path, so that the later stages of the pipeline are reached.
paths = st.integers(0, 9).flatmap(lambda k: real_paths if k < 6 else other_paths)
queries = st.one_of(st.just(""), st.text("abcxyz0123=&%+", max_size=20).map(lambda q: "?" + q))
other_methods = st.sampled_from(
    ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "PROPFIND", "PURGE", "LINK"]
)
methods = st.integers(0, 1).flatmap(lambda k: st.just("POST") if k else other_methods)
"""Methods the HTTP parser knows; other tokens are refused by aiohttp itself (see below)."""
header_names = st.text(TOKEN_CHARS, min_size=1, max_size=20).filter(
    lambda n: n.lower() not in FRAMING
)
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
form_params = st.lists(st.tuples(st.text(max_size=12), st.text(max_size=20)), max_size=6)


@SETTINGS
@given(
    method=methods,
    path=paths,
    query=queries,
    extra=st.lists(st.tuples(header_names, header_values), max_size=6),
    signature=st.integers(0, 1).flatmap(
        lambda k: st.just("valid") if k else st.none() | st.just("") | header_values
    ),
    params=form_params,
    raw=st.one_of(st.none(), st.binary(max_size=512)),
    length=st.sampled_from(["exact", "short", "huge", "none"]),
)
def test_every_request_gets_the_predicted_spec_status(
    server: ThreadedServer,
    method: str,
    path: str,
    query: str,
    extra: list[tuple[str, str]],
    signature: str | None,
    params: list[tuple[str, str]],
    raw: bytes | None,
    length: str,
) -> None:
    """Wrong path 404, not POST 405, no signature 401, too big 413, bad signature 401, else 200."""
    target = path + query
    body = raw if raw is not None else urlencode(params).encode()
    headers = list(extra)
    if signature == "valid":
        signature = sign(target, params) if raw is None else "bm90IGEgcmVhbCBzaWduYXR1cmU="
    if signature is not None:
        headers.append(("X-Twilio-Signature", signature))
    declared = {"exact": len(body), "short": max(0, len(body) - 1), "huge": CAP + 1, "none": None}[
        length
    ]
    if declared is not None:
        headers.append(("Content-Length", str(declared)))
        body = body[:declared]  # "short": a body other than the one signed
    else:
        body = b""  # no Content-Length: a request without a body
    before = len(server.provider.handled)

    status = send(server.port, method, target, headers, body)

    assert status in SPEC_STATUSES, status
    event(f"status {status}")
    reached = len(server.provider.handled) - before
    if normalize_path(path) != PATH:
        assert status == 404
    elif method != "POST":
        assert status == 405
    elif not (signature or "").strip():
        assert status == 401
    elif declared is not None and declared > CAP:
        assert status == 413
    elif signature == signed_over(target, body):
        assert status == 200
    else:
        assert status == 401
    if status != 200:
        assert reached == 0
    else:
        # Reached once, or zero times for a replay of an earlier identical example.
        assert reached <= 1
        assert (
            reached == 0
            or server.provider.handled[-1].headers.get("X-Twilio-Signature") == signature
        )


@SETTINGS
@given(params=form_params.filter(bool), tamper=st.sampled_from(["param", "url", "signature"]))
def test_tampered_signed_requests_never_reach_the_provider(
    server: ThreadedServer,
    params: list[tuple[str, str]],
    tamper: str,
) -> None:
    """A valid signature moved to other params, another URL, or altered is 401 and unhandled."""
    signature = sign(PATH, params)
    target = PATH
    if tamper == "param":
        params = [*params, ("Injected", "1")]
    elif tamper == "url":
        target = PATH + "?x=1"
    else:
        signature = signature[:-2] + ("AA" if not signature.endswith("AA=") else "BB")
    body = urlencode(params).encode()
    before = len(server.provider.handled)
    status = send(
        server.port,
        "POST",
        target,
        [("X-Twilio-Signature", signature), ("Content-Length", str(len(body)))],
        body,
    )
    assert status == 401
    assert len(server.provider.handled) == before


def test_chunked_body_over_the_cap_is_413(server: ThreadedServer) -> None:
    """A signed chunked upload past 64 KiB is cut off with 413 and never handled."""
    before = len(server.provider.handled)
    chunk = b"a" * 4096
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(CAP // 4096 + 2))
    status = send(
        server.port,
        "POST",
        PATH,
        [("X-Twilio-Signature", sign(PATH, [])), ("Transfer-Encoding", "chunked")],
        body + b"0\r\n\r\n",
    )
    assert status == 413
    assert len(server.provider.handled) == before


def test_valid_then_replayed_delivery(server: ThreadedServer) -> None:
    """The happy path works through all of this: handled once, the replay is 200 unhandled."""
    params = [("CallSid", "CAfuzz-final"), ("CallStatus", "completed")]
    body = urlencode(params).encode()
    headers = [("X-Twilio-Signature", sign(PATH, params)), ("Content-Length", str(len(body)))]
    before = len(server.provider.handled)
    assert send(server.port, "POST", PATH, headers, body) == 200
    assert send(server.port, "POST", PATH, headers, body) == 200
    assert len(server.provider.handled) == before + 1


@pytest.mark.parametrize("method", ["post", "0", "X-EVIL", "PO ST"])
def test_unknown_method_tokens_are_refused_by_the_http_layer(
    server: ThreadedServer, method: str
) -> None:
    """A method the HTTP parser does not know is a 400 from aiohttp, never a handled webhook."""
    before = len(server.provider.handled)
    head = (
        f"{method} {PATH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"X-Twilio-Signature: {sign(PATH, [])}\r\nContent-Length: 0\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head.encode())
        status_line = sock.makefile("rb").readline()
    assert int(status_line.split()[1]) in (400, 405)
    assert len(server.provider.handled) == before
