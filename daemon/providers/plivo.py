"""Plivo Voice API + XML provider (SPEC section 10).

REST uses aiohttp with HTTP Basic auth, not the plivo SDK's `RestClient`: that client is
synchronous (`requests`, so every call would need a worker thread) and it resets its base URL to
the module constants `PLIVO_API_BASE_URI`/`API_VOICE_BASE_URI` on every request
(`plivo/rest/client.py` `request()`), so `plivo.api_base_url` could only be honoured by patching
the SDK's globals. The SDK is still used for what fits: XML building (`plivo.plivoxml`, in
`daemon.providers.plivo_wire`) and, in tests, `validate_v3_signature` as the oracle.

Call flow:
- `POST /Call/` returns a `request_uuid`; the real `CallUUID` arrives on the answer, ring and
  hangup callbacks, which carry `previous_provider_call_id` so the engine re-keys the call;
- Plivo fetches our XML on answer (`answer_url`), and when we transfer the A-leg
  (`POST /Call/{uuid}/ legs=aleg aleg_url=...`) to speak or listen later;
- when the engine speaks *while* we handle a Plivo request for that call (the greeting of an
  answered call, a notify message), the XML goes straight into that request's answer instead of
  a transfer: one HTTP round trip less, and no race between our answer and a transfer. The
  request's `PendingXml` goes to the engine's sink with its events and comes back as the `reply`
  argument of `speak`, `play_and_hangup` and `reject`;
- hang-up is `DELETE /Call/{uuid}/`, or `DELETE /Request/{uuid}/` while only the request is
  known; 404 means it is already over.

Audio streams (SPEC 9): with `streaming.enabled` and a TTS engine in the media hub
(`context.media`), conversation and inbound calls get `<Stream bidirectional="true"
keepCallAlive="true" contentType="audio/x-mulaw;rate=8000">` instead of `<Speak>`/`<GetInput>`
(in the answer, or by a transfer), and speech goes through the call's media session. The token
and our call id ride in the stream URL's query (Plivo has no per-stream parameters). Until the
stream starts, speech waits for it; if it never starts, the XML `<Speak>` path is used.
Notify calls keep the XML path (`<Speak>`, `<Wait>`, `<Hangup/>`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from daemon.errors import (
    ConfigError,
    MediaError,
    ProviderError,
    ProviderRequestError,
)
from daemon.model.events import CallMode, Direction, EventType, ProviderEvent
from daemon.model.record import CallRecord
from daemon.model.webhook import WebhookReply
from daemon.providers.base import (
    DialRequest,
    ProviderContext,
    RemoteState,
    RemoteStatus,
    ReplyDraft,
    WebhookRequest,
)
from daemon.providers.bound import BoundProvider
from daemon.providers.machine import plivo_dial_params, plivo_report
from daemon.providers.plivo_wire import (
    EMPTY_RESPONSE,
    HangUp,
    Listen,
    Pause,
    PlivoCallback,
    Say,
    Step,
    Stream,
    XmlContext,
    callback_url,
    form_dict,
    map_cdr_state,
    map_voice,
    parse_callback,
    render,
    stream_url,
    to_events,
)
from daemon.providers.refusal import refusal
from daemon.providers.streaming import (
    MediaHubLike,
    MediaSessionLike,
    media_hub,
    speak_over_stream,
)
from daemon.webhooks.security import PlivoVerifier, has_signature_headers, parse_form

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECONDS = 10.0
STASH_LIMIT = 1_000
XML_CONTENT_TYPE = "text/xml"
LIVE_STATUSES = frozenset({"in-progress", "ringing", "queued", "early media"})
STREAM_WAIT_SECONDS = 10.0
"""How long speech waits for a call's stream to start before falling back to `<Speak>`."""


@dataclass(slots=True)
class PendingXml:
    """The XML answer of the Plivo request being handled, open while its events apply (the
    `ReplyDraft` this provider hands the engine's sink)."""

    call_uuid: str | None
    call_id: str | None
    steps: list[Step] = field(default_factory=list)
    open: bool = True

    def serves(self, call: CallRecord) -> bool:
        if not self.open:
            return False
        if self.call_id is not None and call.call_id == self.call_id:
            return True
        return self.call_uuid is not None and call.provider_call_id == self.call_uuid


def _folding(reply: ReplyDraft | None, call: CallRecord) -> PendingXml | None:
    """`reply` when it is the XML of a Plivo request still open for `call`, else None."""
    return reply if isinstance(reply, PendingXml) and reply.serves(call) else None


class PlivoProvider(BoundProvider):
    """Plivo Voice API behind the `Provider` protocol."""

    name = "plivo"

    def __init__(self) -> None:
        super().__init__()
        self._session: aiohttp.ClientSession | None = None
        self._verifier = PlivoVerifier("")
        self._stash: OrderedDict[str, tuple[str, list[Step]]] = OrderedDict()
        self._streamed: dict[str, str | None] = {}
        """Calls sent to a `<Stream>` (call id -> CallUUID), until they end."""

    # ------------------------------------------------------------------ lifecycle

    def _on_bind(self, context: ProviderContext) -> None:
        """The V3/V2 webhook verifier, keyed by `plivo.auth_token`."""
        plivo = context.config.plivo
        self._verifier = PlivoVerifier(plivo.auth_token or "", accept_v2=plivo.accept_v2_signatures)

    async def start(self) -> None:
        """Open the HTTP session (Basic auth with `plivo.auth_id`/`plivo.auth_token`)."""
        settings = self._config.plivo
        if not settings.auth_id or not settings.auth_token:
            raise ConfigError(
                "plivo.auth_id and plivo.auth_token must be set (PLIVO_AUTH_ID / PLIVO_AUTH_TOKEN)"
            )
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
            headers={
                "User-Agent": "voicecall",
                "Authorization": basic_auth(settings.auth_id, settings.auth_token),
            },
        )

    async def close(self) -> None:
        """Stop background speech and close the HTTP session."""
        await self._tasks.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ REST

    async def _request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, str] | None = None,
        tolerate_404: bool = False,
    ) -> dict[str, Any] | None:
        """One REST call under `/Account/{auth_id}`; None for a tolerated 404.

        Raises:
            ProviderAuthError: Plivo refused the credentials (401/403).
            ProviderRequestError: any other HTTP error, a timeout or a network failure.
        """
        if self._session is None:
            raise ProviderRequestError("the plivo client is not started")
        settings = self._config.plivo
        url = f"{settings.api_base_url.rstrip('/')}/Account/{settings.auth_id}{path}"
        try:
            async with self._session.request(method, url, json=body, params=params) as response:
                status = response.status
                try:
                    data = await response.json(content_type=None)
                except ValueError:
                    data = None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderRequestError(
                f"plivo {method} {path} failed: {type(exc).__name__}; is plivo.api_base_url "
                f"({settings.api_base_url}) reachable?"
            ) from None
        if status == 404 and tolerate_404:
            return None
        if status >= 300:
            detail = data.get("error") if isinstance(data, dict) else None
            message = f"plivo {method} {path} failed with HTTP {status}"
            if detail:
                message += f": {detail}"
            raise refusal("plivo", message, status)
        return data if isinstance(data, dict) else {}

    # ------------------------------------------------------------------ control plane

    def _xml_context(self, call_id: str | None) -> XmlContext:
        assert self._context is not None
        return XmlContext(self._context.webhook_url, call_id, map_voice(self._tts_voice(call_id)))

    def _url(self, **params: str | None) -> str:
        assert self._context is not None
        return callback_url(self._context.webhook_url, **params)

    async def place_call(self, request: DialRequest) -> str:
        """`POST /Call/`; returns the `request_uuid` (re-keyed to CallUUID by callbacks)."""
        cid = request.call_id
        payload = {
            "from": request.from_number,
            "to": request.to_number,
            "answer_url": self._url(flow="answer", callId=cid),
            "answer_method": "POST",
            "ring_url": self._url(flow="ring", callId=cid),
            "ring_method": "POST",
            "hangup_url": self._url(flow="hangup", callId=cid),
            "hangup_method": "POST",
            "ring_timeout": request.ring_timeout_seconds,
            "time_limit": self._config.max_duration_seconds + 60,
        }
        if request.machine_detection is not None:
            payload.update(
                plivo_dial_params(request.machine_detection, self._url(flow="machine", callId=cid))
            )
        result = await self._request("POST", "/Call/", payload) or {}
        request_uuid = result.get("request_uuid")
        if isinstance(request_uuid, list):
            request_uuid = request_uuid[0] if request_uuid else None
        if not isinstance(request_uuid, str) or not request_uuid:
            raise ProviderRequestError("plivo call create returned no request_uuid")
        return request_uuid

    async def _deliver(
        self, call: CallRecord, steps: list[Step], reply: ReplyDraft | None = None
    ) -> None:
        """Add `steps` to the XML being rendered for this call (`reply`, when it serves it), or
        transfer the A-leg to them."""
        pending = _folding(reply, call)
        if pending is not None:
            pending.steps.extend(steps)
            pending.call_id = call.call_id
            return
        key = uuid.uuid4().hex
        self._stash[key] = (call.call_id, steps)
        while len(self._stash) > STASH_LIMIT:
            self._stash.popitem(last=False)
        token = next((s.turn_token for s in steps if isinstance(s, Listen)), None)
        await self._request(
            "POST",
            f"/Call/{self._pid(call)}/",
            {
                "legs": "aleg",
                "aleg_url": self._url(flow="xml", callId=call.call_id, key=key, turnToken=token),
                "aleg_method": "POST",
            },
        )

    @staticmethod
    def _pid(call: CallRecord) -> str:
        if not call.provider_call_id:
            raise ProviderRequestError(f"call {call.call_id} has no Plivo call id yet")
        return call.provider_call_id

    async def play_and_hangup(
        self,
        call: CallRecord,
        text: str,
        delay_seconds: float,
        *,
        reply: ReplyDraft | None = None,
    ) -> None:
        """`<Speak>`, `<Wait length=delay>`, `<Hangup/>`: Plivo waits after playback ends.

        On a call that streams, the message goes through its media session instead, and the
        hang-up follows `delay_seconds` after the stream reported it heard.
        """
        session = self._session_of(call)
        if session is not None:
            self._spawn(
                self._stream_notify(call, session, text, delay_seconds),
                f"plivo-notify-{call.call_id}",
            )
            return
        await self._deliver(call, [Say(text), Pause(round(delay_seconds)), HangUp()], reply)

    async def speak(
        self,
        call: CallRecord,
        text: str,
        *,
        turn_token: str | None,
        reply: ReplyDraft | None = None,
    ) -> None:
        """Through the call's media stream when streaming is on; else `<Speak>`, and with a
        turn token the prompt inside `<GetInput inputType="dtmf speech">` (voice or keypad)."""
        if await self._speak_streamed(call, text, turn_token, reply):
            return
        await self._deliver(call, self._xml_speech(text, turn_token), reply)

    @staticmethod
    def _xml_speech(text: str, turn_token: str | None) -> list[Step]:
        return [Listen(text, turn_token)] if turn_token else [Say(text)]

    async def send_dtmf(self, call: CallRecord, digits: str) -> None:
        """`POST /Call/{uuid}/DTMF/` on the A-leg."""
        await self._request(
            "POST", f"/Call/{self._pid(call)}/DTMF/", {"digits": digits, "leg": "aleg"}
        )

    async def answer(self, call: CallRecord) -> None:
        """Nothing to send: Plivo answers an inbound call when our XML starts to run."""
        self._note_number(call)

    async def reject(
        self, call: CallRecord, *, reply: ReplyDraft | None = None, busy: bool = False
    ) -> None:
        """`<Hangup reason="rejected"/>` (`"busy"` with ``busy``) as the answer, or
        `DELETE /Call/{uuid}/` outside one."""
        pending = _folding(reply, call)
        if pending is not None:
            pending.steps[:] = [HangUp("busy" if busy else "rejected")]
            pending.open = False
            return
        await self.hangup(call)

    async def hangup(self, call: CallRecord, *, reply: ReplyDraft | None = None) -> None:
        """`DELETE /Call/{uuid}/`, then `/Request/{uuid}/` for an unanswered request; 404 ok
        (always by REST: nothing is folded into a `reply`)."""
        pid = call.provider_call_id
        try:
            if pid and await self._request("DELETE", f"/Call/{pid}/", tolerate_404=True) is None:
                # Not a live call (yet): cancel the request, whose id may be the one we had
                # before the callbacks re-keyed the call to its CallUUID.
                for request_id in [pid, *call.metadata.get("previousProviderCallIds", [])]:
                    await self._request("DELETE", f"/Request/{request_id}/", tolerate_404=True)
        finally:
            # After the hang-up: closing the stream first would let Plivo run out of XML.
            self._stream_ended(call.call_id)

    async def fetch_status(self, call: CallRecord) -> RemoteStatus:
        """Live call, queued request, then call detail record; an error is UNKNOWN, never ENDED.

        A CDR is only written once a call is over, so finding one is the one proof of an end;
        neither 404 (the CDR may lag) nor an error proves anything.
        """
        pid = self._pid(call)
        try:
            for status in ("live", "queued"):
                live = await self._request(
                    "GET", f"/Call/{pid}/", params={"status": status}, tolerate_404=True
                )
                if live is not None:
                    return RemoteStatus(RemoteState.LIVE, detail=str(live.get("call_status")))
            cdr = await self._request("GET", f"/Call/{pid}/", tolerate_404=True)
        except ProviderError as exc:
            return RemoteStatus(RemoteState.UNKNOWN, detail=exc.message)
        if cdr is None or (not cdr.get("end_time") and not cdr.get("call_state")):
            return RemoteStatus(RemoteState.UNKNOWN, detail="plivo knows no such call yet")
        state = map_cdr_state(
            _text(cdr.get("call_state")),
            _text(cdr.get("hangup_source")),
            answered=bool(cdr.get("answer_time")),
        )
        return RemoteStatus(RemoteState.ENDED, state, "call detail record found")

    # ------------------------------------------------------------------ webhooks

    def has_signature_headers(self, headers: Mapping[str, str]) -> bool:
        """V3 (`X-Plivo-Signature-V3` + nonce) or V2 headers are present."""
        return has_signature_headers(self.name, headers)

    def verify(self, request: WebhookRequest) -> str:
        """V3 (several comma-separated signatures allowed), else V2 when
        `plivo.accept_v2_signatures`; returns the replay key."""
        return self._verifier.verify_request(request)

    async def handle_webhook(self, request: WebhookRequest) -> WebhookReply:
        """Apply the callback's events, then answer Plivo XML for the call's next step."""
        form = form_dict(parse_form(request.body))
        cb = parse_callback(dict(request.query), form)
        if cb.flow == "machine":
            return await self._machine_callback(cb, form.get("Machine"))
        if cb.is_terminal:
            self._stream_ended(cb.call_id, cb.call_uuid, cb.request_uuid)
        pending = PendingXml(cb.provider_call_id or None, cb.call_id)
        events = to_events(cb)
        try:
            if events and self._sink is not None:
                await self._sink(events, pending)
        finally:
            closed_by_reject = not pending.open
            pending.open = False
        if cb.is_terminal or cb.flow in ("hangup", "ring"):
            return _xml(EMPTY_RESPONSE)
        steps: Sequence[Step] = pending.steps
        if not closed_by_reject and not steps:
            steps = self._idle_steps(cb.flow, cb.key, cb.turn_token)
        return _xml(render(steps, self._xml_context(pending.call_id)))

    async def _machine_callback(self, cb: PlivoCallback, machine: str | None) -> WebhookReply:
        """`machine_detection_url`: `Machine=true|false` (SPEC 13); the answer runs no XML."""
        report = plivo_report(machine)
        pid = cb.provider_call_id
        if report is not None and pid and self._sink is not None:
            previous = cb.request_uuid if cb.call_uuid and cb.request_uuid != cb.call_uuid else None
            # No reply draft: this answer runs no XML.
            await self._sink(
                [
                    ProviderEvent(
                        EventType.MACHINE,
                        pid,
                        call_id=cb.call_id,
                        machine=report,
                        previous_provider_call_id=previous,
                        dedupe_key=f"plivo:machine:{pid}",
                    )
                ]
            )
        return _xml(EMPTY_RESPONSE)

    def _idle_steps(self, flow: str, key: str | None, turn_token: str | None) -> list[Step]:
        """What to run when nothing new was asked: a stashed transfer, or keep listening."""
        if flow == "xml" and key is not None and key in self._stash:
            return self._stash.pop(key)[1]
        if flow in ("xml", "listen") and turn_token:
            return [Listen(None, turn_token)]
        return []

    def replay_reply(self, first: WebhookReply | None) -> WebhookReply:
        """Repeat the first answer; without it, an empty `<Response>`."""
        return first or _xml(EMPTY_RESPONSE)

    # ------------------------------------------------------------------ audio streams

    def _media(self) -> MediaHubLike | None:
        """The media hub, when streaming is on and the hub can speak (else XML is used)."""
        return media_hub(self._context)

    def _session_of(self, call: CallRecord) -> MediaSessionLike | None:
        hub = self._media()
        session = hub.session(call.call_id) if hub is not None else None
        return session if isinstance(session, MediaSessionLike) else None

    def _stream_step(self, hub: MediaHubLike, call: CallRecord) -> Stream:
        assert self._context is not None and self._context.stream_url is not None
        token = hub.issue_token(call.call_id, call.provider_call_id)
        self._streamed[call.call_id] = call.provider_call_id
        return Stream(stream_url(self._context.stream_url, token, call.call_id))

    def _stream_ended(self, call_id: str | None, *uuids: str | None) -> None:
        """The call is over: forget its stream and revoke its token (closes the socket)."""
        known = {u for u in uuids if u}
        if not call_id and known:
            call_id = next((c for c, pid in self._streamed.items() if pid in known), None)
        if not call_id:
            return
        self._streamed.pop(call_id, None)
        hub = self._media()
        if hub is not None:
            hub.revoke(call_id)

    async def _speak_streamed(
        self, call: CallRecord, text: str, turn_token: str | None, reply: ReplyDraft | None
    ) -> bool:
        """Speak through the call's media stream if it has, or can get, one (a `reply` that
        serves the call gets the `<Stream>`)."""
        hub = self._media()
        if hub is None or (call.direction is Direction.OUTBOUND and call.mode is CallMode.NOTIFY):
            return False
        session = self._session_of(call)
        if session is not None:
            try:
                await session.speak(text, turn_token=turn_token)
                return True
            except MediaError as exc:  # the stream closed under us: use the XML path
                logger.info("call %s: %s; speaking with <Speak>", call.call_id, exc.message)
                self._streamed.pop(call.call_id, None)
                return False
        pending = _folding(reply, call)
        if pending is not None:
            if not any(isinstance(step, Stream) for step in pending.steps):
                pending.steps.append(self._stream_step(hub, call))
            pending.call_id = call.call_id
        elif call.call_id not in self._streamed:
            # No stream yet (e.g. after a daemon restart): transfer the A-leg to one.
            await self._deliver(call, [self._stream_step(hub, call)])
        self._spawn(
            self._speak_when_streaming(hub, call, text, turn_token),
            f"plivo-stream-speak-{call.call_id}",
        )
        return True

    async def _speak_when_streaming(
        self, hub: MediaHubLike, call: CallRecord, text: str, turn_token: str | None
    ) -> None:
        if await speak_over_stream(
            hub, call, text, turn_token, wait_seconds=STREAM_WAIT_SECONDS, fallback="<Speak>"
        ):
            return
        if call.call_id in self._streamed:  # not ended meanwhile
            del self._streamed[call.call_id]
            await self._deliver(call, self._xml_speech(text, turn_token))

    async def _stream_notify(
        self, call: CallRecord, session: MediaSessionLike, text: str, delay: float
    ) -> None:
        await session.speak(text, turn_token=None)
        await session.wait_idle()
        await asyncio.sleep(delay)
        await self.hangup(call)


def basic_auth(user: str, password: str) -> str:
    """An HTTP Basic `Authorization` value (aiohttp's `BasicAuth` is deprecated in 3.13)."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def _xml(text: str) -> WebhookReply:
    return WebhookReply(200, XML_CONTENT_TYPE, text.encode("utf-8"))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
