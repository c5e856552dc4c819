"""What every speech vendor client shares: one sized HTTP client, and errors that never leak a key.

Connections (SPEC 11): every live streamed call holds one STT websocket for its whole life and
opens TTS (and chat) requests while it talks. aiohttp's default connector allows 100
connections per session, and a request past that waits for a free slot with no time limit: at
about 50 streamed calls new calls got no STT socket and no audio, and nothing was logged. So
the one vendor session is sized from the config (:func:`vendor_connection_limit`), never below
``max_concurrent_calls`` x 2, and :data:`ACQUIRE_TIMEOUT_SECONDS` bounds any wait for a slot
(the request then fails with a :class:`SpeechError`, reported on the call) should it fill anyway.

Vendor error bodies can echo credentials (OpenAI's 401 says "Incorrect API key provided:
sk-abc***xyz"), so the body excerpt is scrubbed of the key itself and of anything shaped like
one before it goes into a :class:`SpeechError`, which ends up in logs and RPC replies.
"""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp

from daemon.errors import SpeechError
from daemon.speech.wsdirect import DirectClientWebSocketResponse

CONNECTIONS_PER_CALL = 3
"""A streamed call holds its STT socket and may have a TTS and a chat request open at once."""
SPARE_CONNECTIONS = 16
"""For requests that belong to no call (start-up checks, agent tools)."""
READ_BUFFER_BYTES = 16 * 1024
"""Per response, aiohttp stops reading the socket once twice this much is buffered (its
default, 64 KiB, let a fast TTS vendor park 128 KiB per call in the daemon)."""
ACQUIRE_TIMEOUT_SECONDS = 10.0
"""The longest a vendor request waits for a pooled connection plus its TCP/TLS connect."""

_KEYLIKE = re.compile(r"\b(sk|xi|key)[-_][A-Za-z0-9*_\-]{4,}", re.IGNORECASE)
_EXCERPT_CHARS = 200


def vendor_connection_limit(max_concurrent_calls: int, max_streams: int) -> int:
    """Connections the vendor session may hold: 3 per call that can stream, plus spares.

    ``max_streams`` (``streaming.max_connections``) counts too: a stream that outlives its
    call's slot, or a config with more streams than calls, must not starve the others.
    """
    calls = max(max_concurrent_calls, max_streams, 1)
    return calls * CONNECTIONS_PER_CALL + SPARE_CONNECTIONS


def open_vendor_session(max_concurrent_calls: int, max_streams: int) -> aiohttp.ClientSession:
    """The daemon's one HTTP client for speech vendors and the chat model (call on the loop).

    No per-host cap: TTS, STT and chat usually share one host (api.openai.com). A small read
    buffer per response bounds what a vendor that runs ahead of real time parks in memory.
    """
    limit = vendor_connection_limit(max_concurrent_calls, max_streams)
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0)
    return aiohttp.ClientSession(
        connector=connector,
        read_bufsize=READ_BUFFER_BYTES,
        ws_response_class=DirectClientWebSocketResponse,  # aiohttp's own unless asked for
    )


def widen_vendor_session(
    session: aiohttp.ClientSession, max_concurrent_calls: int, max_streams: int
) -> int:
    """Raise the session's connection cap after a reload raised ``max_concurrent_calls``
    (never lowers it: connections in use stay valid). Returns the cap in force.

    aiohttp has no public setter; ``BaseConnector`` reads ``_limit`` on every acquire, so
    raising it takes effect for the next request.
    """
    connector = session.connector
    wanted = vendor_connection_limit(max_concurrent_calls, max_streams)
    current = getattr(connector, "_limit", None)
    if isinstance(current, int) and 0 < current < wanted:
        connector._limit = wanted  # type: ignore[union-attr]
        return wanted
    return current if isinstance(current, int) else wanted


def request_timeout(read_seconds: float = 15.0) -> aiohttp.ClientTimeout:
    """No total limit (a long reply streams for a while); a slot, a connect and every read
    are each bounded, so an unreachable or stalled vendor fails the request instead of
    leaving the call silent."""
    return aiohttp.ClientTimeout(
        total=None,
        connect=ACQUIRE_TIMEOUT_SECONDS,
        sock_connect=ACQUIRE_TIMEOUT_SECONDS,
        sock_read=read_seconds,
    )


def redact(text: str, secret: str | None) -> str:
    """Remove ``secret`` and key-shaped tokens from ``text``."""
    if secret:
        text = text.replace(secret, "***")
    return _KEYLIKE.sub("***", text)


def _summary(body: str) -> str:
    """The vendor's own error message if the body is OpenAI-style JSON, else the raw text."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.strip()
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed.get("detail"))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error is not None:
            return str(error)
    return body.strip()


async def http_error(
    vendor: str, response: aiohttp.ClientResponse, url: str, secret: str | None
) -> SpeechError:
    """Build the error for a non-2xx vendor response (reads at most a little of the body)."""
    try:
        raw = await response.content.read(4096)
        body = _summary(raw.decode("utf-8", "replace"))
    except (aiohttp.ClientError, TimeoutError):
        body = ""
    detail = f": {redact(body, secret)[:_EXCERPT_CHARS]}" if body else ""
    return SpeechError(
        f"{vendor} returned HTTP {response.status} for {url}{detail}",
        vendor=vendor,
        status=response.status,
        url=url,
    )


def transport_error(vendor: str, url: str, exc: BaseException, secret: str | None) -> SpeechError:
    """Build the error for a request that failed before or while the answer arrived."""
    reason = redact(str(exc) or type(exc).__name__, secret)
    return SpeechError(f"{vendor} request to {url} failed: {reason}", vendor=vendor, url=url)


async def connect_vendor_ws(
    session: aiohttp.ClientSession,
    url: str,
    *,
    api_key: str,
    vendor: str,
    connect_timeout: float,
    headers: dict[str, str] | None = None,
    max_msg_size: int = 4 * 1024 * 1024,
    first_message: str | None = None,
) -> aiohttp.ClientWebSocketResponse:
    """Open a vendor's websocket with the key as a bearer token (and send `first_message`)
    within `connect_timeout`; every failure becomes a :class:`SpeechError` that names the vendor and
    the URL, never the key.

    Raises:
        SpeechError: refused (with the HTTP status), unreachable or too slow.
    """
    all_headers = {"Authorization": f"Bearer {api_key}", **(headers or {})}
    try:
        async with asyncio.timeout(connect_timeout):
            ws = await session.ws_connect(
                url, headers=all_headers, heartbeat=20, max_msg_size=max_msg_size
            )
            if first_message is not None:
                await ws.send_str(first_message)
    except aiohttp.WSServerHandshakeError as exc:
        raise SpeechError(
            f"{vendor} refused the websocket at {url}: HTTP {exc.status}",
            vendor=vendor,
            status=exc.status,
            url=url,
        ) from None
    except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
        reason = redact(str(exc) or type(exc).__name__, api_key)
        raise SpeechError(
            f"{vendor} could not connect to {url}: {reason}", vendor=vendor, url=url
        ) from None
    return ws
