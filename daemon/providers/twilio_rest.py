"""Twilio REST (Calls create/update/fetch) through the official SDK, on the daemon's loop.

Transport choice, measured against a local aiohttp server (200 live updates each):
- the SDK's default synchronous client (`requests`) behind `asyncio.to_thread`: ~1.1 ms per
  call, and every call holds a worker thread of the default executor;
- the SDK's async path (`create_async`/`update_async`/`fetch_async`): ~0.4 ms per call and no
  thread. Its bundled `AsyncTwilioHttpClient` builds `aiohttp.BasicAuth`, deprecated since
  aiohttp 3.13 (a DeprecationWarning per request, removed in 4.0), and opens its session at
  construction, outside any loop.
So the SDK builds requests, serialises parameters (repeated `StatusCallbackEvent` values) and
parses answers and errors, and :class:`AiohttpTransport` (its `AsyncHttpClient` interface, 30
lines) sends them with an Authorization header. `client.api.base_url` points the `api` domain at
`twilio.api_base_url`, which is how tests reach the simulator (`twilio.base.domain.Domain`
builds every URL from `base_url`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http import AsyncHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from daemon.errors import ProviderError, ProviderRequestError
from daemon.providers.refusal import refusal

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_API_BASE_URL = "https://api.twilio.com"
REQUEST_TIMEOUT_SECONDS = 15.0
NOT_IN_PROGRESS = 21220
"""Twilio error 21220 "Call is not in-progress. Cannot redirect": a live update raced the answer."""
NOT_FOUND = 20404
"""Twilio error 20404 "The requested resource was not found" (with HTTP 404)."""
AUTH_FAILED = 20003
"""Twilio error 20003 "Authenticate" (with HTTP 401)."""
RETRY_DELAYS = (0.25, 0.75)
"""Waits before the 2nd and 3rd attempt of a live update refused with 21220."""
REGION_EDGES = {"ie1": "dublin", "au1": "sydney", "jp1": "tokyo", "us1": "ashburn"}
"""The edge location that serves each Twilio region (api.<edge>.<region>.twilio.com)."""


def basic_auth(user: str, password: str) -> str:
    """An HTTP Basic `Authorization` value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class AiohttpTransport(AsyncHttpClient):  # type: ignore[misc]  # the SDK ships no types
    """The SDK's `AsyncHttpClient` interface over one aiohttp session of ours."""

    def __init__(self, timeout: float = REQUEST_TIMEOUT_SECONDS) -> None:
        """Requests time out after `timeout` seconds each."""
        super().__init__(logging.getLogger("twilio.http"), True, timeout)
        self._session: aiohttp.ClientSession | None = None

    async def request(
        self,
        method: str,
        uri: str,
        params: Mapping[str, object] | None = None,
        data: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the SDK's AsyncHttpClient interface
        allow_redirects: bool = False,
    ) -> Any:
        """Send one request the SDK built; lists become repeated form values."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        sent = dict(headers or {})
        if auth is not None:
            sent["Authorization"] = basic_auth(*auth)
        body = urlencode(dict(data), doseq=True) if data else None
        query = urlencode(dict(params), doseq=True) if params else ""
        url = f"{uri}?{query}" if query else uri
        limit = aiohttp.ClientTimeout(total=timeout or self.timeout)
        async with self._session.request(
            method, url, data=body, headers=sent, timeout=limit, allow_redirects=allow_redirects
        ) as response:
            text = await response.text()
            return Response(response.status, text, response.headers)

    async def close(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _is_local(url: str) -> bool:
    return url.rstrip("/") != DEFAULT_API_BASE_URL


class TwilioRest:
    """The three Calls operations we use, with Twilio's errors mapped to ours."""

    def __init__(
        self, account_sid: str, auth_token: str, *, api_base_url: str, region: str | None
    ) -> None:
        """Build the SDK client; no request is made here."""
        self.api_base_url = api_base_url.rstrip("/")
        self.transport = AiohttpTransport()
        regional = bool(region) and not _is_local(self.api_base_url)
        self.client = Client(
            account_sid,
            auth_token,
            region=region if regional else None,
            edge=REGION_EDGES.get(region or "") if regional else None,
            http_client=self.transport,
            environment={},  # TWILIO_EDGE/TWILIO_REGION from the environment must not apply
        )
        if _is_local(self.api_base_url):
            self.client.api.base_url = self.api_base_url
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def close(self) -> None:
        """Release the HTTP session."""
        await self.transport.close()

    async def create_call(self, **params: Any) -> str:
        """`POST /Calls.json`; returns the new call's sid."""
        call = await self._run("create the call", self.client.calls.create_async(**params))
        sid = getattr(call, "sid", None)
        if not isinstance(sid, str) or not sid:
            raise ProviderRequestError("twilio created the call but returned no sid")
        return sid

    async def update_twiml(self, sid: str, twiml: str) -> None:
        """Replace the live call's TwiML, retrying Twilio error 21220 (not in progress yet)."""
        for delay in (*RETRY_DELAYS, None):
            try:
                await self._run("update the call", self._call(sid).update_async(twiml=twiml))
                return
            except ProviderRequestError as exc:
                if exc.details.get("code") != NOT_IN_PROGRESS or delay is None:
                    raise
                logger.info("twilio 21220 on call %s; retrying the live update", sid)
                await self.sleep(delay)

    async def hang_up(self, sid: str) -> bool:
        """`Status=completed`; False when Twilio no longer knows the call (404/20404)."""
        try:
            await self._run("hang up the call", self._call(sid).update_async(status="completed"))
        except ProviderRequestError as exc:
            if _gone(exc):
                return False
            raise
        return True

    async def fetch_status(self, sid: str) -> str | None:
        """The call's `status`; None for 404/20404. Other failures raise ProviderError."""
        try:
            call = await self._run("fetch the call", self._call(sid).fetch_async())
        except ProviderRequestError as exc:
            if _gone(exc):
                return None
            raise
        return str(getattr(call, "status", "") or "")

    def _call(self, sid: str) -> Any:
        return self.client.calls(sid)

    async def _run(self, action: str, pending: Awaitable[T]) -> T:
        """Await one SDK request, translating every failure into a ProviderError."""
        try:
            return await pending
        except TwilioException as exc:
            raise _mapped(action, exc) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderRequestError(
                f"twilio: could not {action}: {type(exc).__name__}; is twilio.api_base_url "
                f"({self.api_base_url}) reachable?"
            ) from None


def _gone(exc: ProviderError) -> bool:
    """404 or Twilio error 20404: the call is unknown (ended long ago, or never ours)."""
    return exc.details.get("status") == 404 or exc.details.get("code") == NOT_FOUND


def _mapped(action: str, exc: TwilioException) -> ProviderError:
    """Our error for a failed request: names the HTTP status and Twilio error code, never the
    token (the SDK's messages quote Twilio's answer and the URL, which holds only the sid)."""
    if isinstance(exc, TwilioRestException | TwilioServiceException):
        status = int(getattr(exc, "status", 0) or 0)
        code = getattr(exc, "code", None)
        text = getattr(exc, "msg", None) or getattr(exc, "detail", None) or ""
        text = (
            str(text)
            .replace("Unable to create record: ", "")
            .replace("Unable to update record: ", "")
            .replace("Unable to fetch record: ", "")
        )
        sentence = f"twilio refused to {action} (HTTP {status}, Twilio error {code})"
        if text:
            sentence += f": {text.strip()}"
        return refusal("twilio", sentence, status, auth_failed=code == AUTH_FAILED, code=code)
    return ProviderRequestError(f"twilio: could not {action}: {type(exc).__name__}: {exc}")
