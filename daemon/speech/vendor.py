"""What every speech vendor client shares: error messages that never leak a key.

Vendor error bodies can echo credentials (OpenAI's 401 says "Incorrect API key provided:
sk-abc***xyz"), so the body excerpt is scrubbed of the key itself and of anything shaped like
one before it goes into a :class:`SpeechError`, which ends up in logs and RPC replies.
"""

from __future__ import annotations

import json
import re

import aiohttp

from daemon.errors import SpeechError

_KEYLIKE = re.compile(r"\b(sk|xi|key)[-_][A-Za-z0-9*_\-]{4,}", re.IGNORECASE)
_EXCERPT_CHARS = 200


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
