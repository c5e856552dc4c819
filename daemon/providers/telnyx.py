"""Telnyx Call Control v2 provider (SPEC section 10).

REST is plain aiohttp against the documented Call Control v2 endpoints (`POST /calls`,
`POST /calls/{id}/actions/{action}`, `GET /calls/{id}`) under `telnyx.api_base_url`, with the
Bearer key. Not the telnyx SDK: importing it costs over a second and ~36 MiB (measured, see
docs/providers-telnyx-plivo.md) for what is two generic requests, and its typed methods would
hide the exact bodies. Each command body is one
dict built in `daemon.providers.telnyx_wire`; tests check every one against the SDK's own
parameter types (the SDK stays a test oracle). A request that fails with a connection error,
408, 429 or 5xx is retried once: every command carries a `command_id`, which Telnyx
deduplicates, so a retry never acts twice.

Behaviour:
- dial with `client_state` = base64(callId) and `timeout_secs` = `ring_timeout_seconds`;
- inbound calls are answered with a deterministic `command_id` (idempotent retries);
- speech uses Telnyx `speak`; listening is `transcription_start` on the caller's track, with the
  turn token carried in `client_state` and read back from `call.transcription` webhooks;
- notify speaks with `client_state` `notify:<delay>` and hangs up `delay` seconds after the
  `call.speak.ended` webhook (after playback, not on a timer from the start);
- hang-up tolerates a call that already ended (HTTP 404; 422 with code 90018);
- duplicate webhooks are dropped by the engine on `data.id`; a `call.initiated` that arrives
  after the same call's `call.hangup` (Telnyx does not order webhooks) is ignored.

Media streams (SPEC 9): with `streaming.enabled` and a TTS engine in the media hub
(`context.media`), conversation and inbound calls are dialled/answered with
`stream_url` (bidirectional RTP, PCMU); speech then goes through the call's media session
(waiting for the stream to start if needed, falling back to `actions/speak` if it never does)
and caller turns come from the stream's STT, so `transcription_start` is not used. Notify
calls keep `actions/speak`, whose `call.speak.ended` drives the hang-up. A `streaming.failed`
webhook or a stream `error` frame falls back at once (SPEC 10): the stream is dropped, an
utterance still unheard is spoken again with `actions/speak`, and a listening turn is carried
on by `transcription_start`.

Who hung up: `call.hangup` has no `direction`, so the provider keeps, per call leg, its
direction (our dial, `call.initiated`, or the stored record it is handed), whether it was
answered and whether we commanded the hang-up (`telnyx_wire.LegFacts`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from daemon.errors import (
    ConfigError,
    MediaError,
    ProviderError,
    ProviderRequestError,
)
from daemon.model.events import CallMode, Direction, EventType, ProviderEvent
from daemon.model.record import CallRecord
from daemon.model.state import CallState
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
from daemon.providers.machine import telnyx_dial_fields, telnyx_report
from daemon.providers.refusal import AUTH_STATUSES, refusal
from daemon.providers.streaming import (
    MediaHubLike,
    MediaSessionLike,
    ReportsStreamFailures,
    media_hub,
    speak_over_stream,
)
from daemon.providers.telnyx_wire import (
    ALREADY_ENDED_CODES,
    ClientState,
    LegFacts,
    TelnyxPayloadError,
    TelnyxWebhook,
    answer_payload,
    dial_payload,
    direction_of,
    encode_client_state,
    map_voice,
    parse_webhook,
    speak_payload,
    stream_failure,
    stream_fields,
    to_events,
    transcription_payload,
)
from daemon.webhooks.security import TelnyxVerifier, has_signature_headers

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECONDS = 10.0
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Worth one more try; commands are idempotent through `command_id`."""
RETRY_DELAY_SECONDS = 0.5
REMEMBERED_HANGUPS = 10_000
STREAM_WAIT_SECONDS = 10.0
"""How long speech waits for a call's media stream to start before using `actions/speak`."""


@dataclass(frozen=True, slots=True)
class _HttpError:
    """A non-2xx Telnyx answer: its status and `errors[].code` values."""

    status: int
    codes: frozenset[str]

    @property
    def gone(self) -> bool:
        """404, or 422 with 90018/90055: the call leg no longer exists at Telnyx."""
        return self.status == 404 or (self.status == 422 and bool(self.codes & ALREADY_ENDED_CODES))


def error_codes(body: object) -> frozenset[str]:
    """The `errors[].code` values of a Telnyx error body (`{"errors":[{"code":"90018",...}]}`;
    a lone `{"error": {...}}` is read too)."""
    if isinstance(body, dict) and "errors" not in body and isinstance(body.get("error"), dict):
        body = {"errors": [body["error"]]}
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return frozenset()
    return frozenset(str(e.get("code")) for e in errors if isinstance(e, dict) and e.get("code"))


@dataclass(slots=True)
class _Leg:
    """What we know of one call leg beyond its webhooks (see the module docstring)."""

    call_id: str | None = None
    direction: Direction | None = None
    answered: bool = False
    bot_hangup: bool = False


class TelnyxProvider(BoundProvider):
    """Telnyx Call Control v2 behind the `Provider` protocol."""

    name = "telnyx"

    def __init__(self) -> None:
        super().__init__()
        self._session: aiohttp.ClientSession | None = None
        self._verifier = TelnyxVerifier(None)
        self._transcribing: set[str] = set()
        self._notify_scheduled: set[str] = set()
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._legs: OrderedDict[str, _Leg] = OrderedDict()
        """call_control_id -> what we know of it, until its `call.hangup`."""
        self._streamed: dict[str, str | None] = {}
        """Call ids dialled/answered with a media stream (-> call_control_id), until they end
        or their stream fails."""
        self._stream_gone: dict[str, asyncio.Event] = {}
        """Set when a call's stream failed: speech waiting for that stream stops waiting."""
        self._last_stream_speech: dict[str, tuple[str, str | None]] = {}
        """The latest text (and turn token) each call spoke on its stream (for a fallback)."""

    # ------------------------------------------------------------------ lifecycle

    def _on_bind(self, context: ProviderContext) -> None:
        """The Ed25519 webhook verifier, keyed by `telnyx.public_key`."""
        self._verifier = TelnyxVerifier(context.config.telnyx.public_key)

    async def start(self) -> None:
        """Open the HTTP session (Bearer `telnyx.api_key`); listen for stream failures."""
        settings = self._config.telnyx
        if not settings.api_key:
            raise ConfigError(
                "telnyx.api_key is not set; set TELNYX_API_KEY or "
                "`voicecall secrets set telnyx.api_key`"
            )
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
            headers={
                "Authorization": f"Bearer {settings.api_key}",
                "Accept": "application/json",
                "User-Agent": "voicecall",
            },
        )
        hub = self._media()
        if isinstance(hub, ReportsStreamFailures):
            hub.on_stream_failure = self._on_stream_error

    async def close(self) -> None:
        """Cancel notify timers and close the HTTP session."""
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
        tolerate_gone: bool = False,
    ) -> dict[str, Any] | None:
        """One REST call; returns the JSON body, or None when the call is gone and tolerated.

        Raises:
            ProviderAuthError: Telnyx refused the API key (401/403).
            ProviderRequestError: any other HTTP error, a timeout or a network failure.
        """
        for attempt in (1, 2):
            try:
                status, data = await self._send(method, path, body)
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt == 1:
                    await asyncio.sleep(RETRY_DELAY_SECONDS)
                    continue
                raise ProviderRequestError(
                    f"telnyx {method} {path} failed: {type(exc).__name__}; is "
                    f"telnyx.api_base_url ({self._config.telnyx.api_base_url}) reachable?"
                ) from None
            if status in RETRY_STATUSES and attempt == 1:
                await asyncio.sleep(RETRY_DELAY_SECONDS)
                continue
            if status < 300:
                return data if isinstance(data, dict) else {}
            return self._refused(
                method, path, _HttpError(status, error_codes(data)), tolerate_gone=tolerate_gone
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(
        self, method: str, path: str, body: Mapping[str, Any] | None
    ) -> tuple[int, object]:
        if self._session is None:
            raise ProviderRequestError("the telnyx client is not started")
        url = self._config.telnyx.api_base_url.rstrip("/") + path
        payload = dict(body or {}) if method != "GET" else None
        async with self._session.request(method, url, json=payload) as response:
            try:
                data: object = await response.json(content_type=None)
            except ValueError:
                data = None
            return response.status, data

    def _refused(
        self, method: str, path: str, error: _HttpError, *, tolerate_gone: bool
    ) -> dict[str, Any] | None:
        codes = ",".join(sorted(error.codes))
        if tolerate_gone and error.gone:
            logger.info(
                "telnyx %s %s: call already ended (%d %s)", method, path, error.status, codes
            )
            return None
        message = f"telnyx {method} {path} failed with HTTP {error.status} ({codes or 'no code'})"
        if error.status in AUTH_STATUSES:
            raise refusal("telnyx", message, error.status)
        raise refusal("telnyx", message, error.status, codes=codes or "no code")

    async def _action(
        self,
        pid: str,
        action: str,
        body: Mapping[str, Any],
        *,
        tolerate_gone: bool = False,
    ) -> dict[str, Any] | None:
        return await self._request(
            "POST", f"/calls/{pid}/actions/{action}", body, tolerate_gone=tolerate_gone
        )

    def _pid(self, call: CallRecord) -> str:
        """The call's call_control_id (noting what the record tells about the leg)."""
        if not call.provider_call_id:
            raise ProviderRequestError(f"call {call.call_id} has no Telnyx call_control_id yet")
        self._note(call)
        return call.provider_call_id

    # ------------------------------------------------------------------ leg facts

    def _leg(self, pid: str) -> _Leg:
        leg = self._legs.get(pid)
        if leg is None:
            leg = self._legs[pid] = _Leg()
            while len(self._legs) > REMEMBERED_HANGUPS:
                self._legs.popitem(last=False)
        return leg

    def _note(self, call: CallRecord) -> None:
        """Learn the direction and answer of a leg from its stored record (e.g. after a
        restart, when no `call.initiated` will come again)."""
        if not call.provider_call_id or call.provider_call_id in self._ended:
            return
        leg = self._leg(call.provider_call_id)
        leg.call_id = call.call_id
        leg.direction = call.direction
        leg.answered = leg.answered or call.answered_at is not None

    # ------------------------------------------------------------------ media streams

    def _media(self) -> MediaHubLike | None:
        """The media hub, when streaming is on and the hub can speak (else Telnyx speaks)."""
        return media_hub(self._context)

    def _stream(self, call_id: str, provider_call_id: str | None) -> dict[str, Any] | None:
        """The stream fields of a dial/answer (token in the URL), or None without streaming."""
        hub = self._media()
        if hub is None or self._context is None or self._context.stream_url is None:
            return None
        self._streamed[call_id] = provider_call_id
        self._stream_gone[call_id] = asyncio.Event()
        token = hub.issue_token(call_id, provider_call_id)
        return stream_fields(self._context.stream_url, token, dial=provider_call_id is None)

    def _stream_ended(self, call_id: str | None) -> None:
        """The call is over: forget its stream and revoke its token (closes the socket)."""
        if call_id and call_id in self._streamed:
            self._forget_stream(call_id)
            hub = self._media()
            if hub is not None:
                hub.revoke(call_id)

    def _forget_stream(self, call_id: str) -> None:
        self._streamed.pop(call_id, None)
        self._last_stream_speech.pop(call_id, None)
        gone = self._stream_gone.pop(call_id, None)
        if gone is not None:
            gone.set()

    def _on_stream_error(self, call_id: str, reason: str, unheard: bool) -> None:
        """The hub's report of a stream `error` frame: fall back now (SPEC 10)."""
        self._fall_back(call_id, reason, unheard=unheard)

    def _fall_back(self, call_id: str, reason: str, *, unheard: bool) -> None:
        """Stop using the call's stream; Telnyx speaks and transcribes from here on.

        An utterance the caller had not heard yet is spoken again with `actions/speak`; a
        listening turn gets `transcription_start`, so a pending `continue` still hears the
        caller. Speech that was waiting for the stream to start stops waiting and does the same.
        """
        if call_id not in self._streamed:
            return
        pid = self._streamed.get(call_id)
        last = self._last_stream_speech.get(call_id)
        logger.warning(
            "call %s: media stream failed (%s); Telnyx speaks and transcribes instead",
            call_id,
            reason,
        )
        self._forget_stream(call_id)  # wakes a speaker waiting for the stream
        hub = self._media()
        if hub is not None:
            hub.revoke(call_id)
        if last is None or not pid or pid in self._ended:
            return
        text, turn_token = last
        if unheard:
            self._spawn(
                self._speak_rest(call_id, pid, text, turn_token), f"telnyx-fallback-speak-{call_id}"
            )
        elif turn_token:
            self._spawn(
                self._transcribe(call_id, pid, turn_token), f"telnyx-fallback-listen-{call_id}"
            )

    # ------------------------------------------------------------------ control plane

    async def place_call(self, request: DialRequest) -> str:
        """`POST /calls`; returns `data.call_control_id`."""
        settings = self._config.telnyx
        if not settings.connection_id:
            raise ConfigError("telnyx.connection_id is not set; set TELNYX_CONNECTION_ID")
        assert self._context is not None
        payload = dial_payload(
            call_id=request.call_id,
            connection_id=settings.connection_id,
            to=request.to_number,
            from_=request.from_number,
            webhook_url=self._context.webhook_url,
            ring_timeout_seconds=request.ring_timeout_seconds,
            stream=None if request.mode is CallMode.NOTIFY else self._stream(request.call_id, None),
        )
        if request.machine_detection is not None:
            payload.update(telnyx_dial_fields(request.machine_detection))
        result = await self._request("POST", "/calls", payload) or {}
        data = result.get("data")
        pid = data.get("call_control_id") if isinstance(data, dict) else None
        if not isinstance(pid, str) or not pid:
            raise ProviderRequestError("telnyx POST /calls returned no data.call_control_id")
        leg = self._leg(pid)
        leg.call_id, leg.direction = request.call_id, Direction.OUTBOUND
        if request.call_id in self._streamed:
            self._streamed[request.call_id] = pid
        return pid

    def _speak(self, call_id: str, text: str, client_state: str) -> dict[str, Any]:
        return speak_payload(
            text,
            voice=map_voice(self._tts_voice(call_id)),
            client_state=client_state,
            command_id=f"voicecall-{uuid.uuid4()}",
        )

    async def play_and_hangup(
        self,
        call: CallRecord,
        text: str,
        delay_seconds: float,
        *,
        reply: ReplyDraft | None = None,
    ) -> None:
        """Speak with `notify:<delay>` in client_state; `call.speak.ended` triggers the hang-up."""
        state = encode_client_state(call.call_id, "notify", f"{max(0.0, delay_seconds):g}")
        await self._action(self._pid(call), "speak", self._speak(call.call_id, text, state))

    async def speak(
        self,
        call: CallRecord,
        text: str,
        *,
        turn_token: str | None,
        reply: ReplyDraft | None = None,
    ) -> None:
        """Speak through the call's media stream (its STT hears the caller) when it has one;
        else `actions/speak`, and with a turn token make sure the caller's track is being
        transcribed."""
        pid = self._pid(call)
        hub = self._media()
        if hub is not None and call.call_id in self._streamed:
            session = hub.session(call.call_id)
            if isinstance(session, MediaSessionLike):
                try:
                    await session.speak(text, turn_token=turn_token)
                    if call.call_id in self._streamed:
                        self._last_stream_speech[call.call_id] = (text, turn_token)
                    return
                except MediaError as exc:
                    logger.info("call %s: %s; using actions/speak", call.call_id, exc.message)
                    self._forget_stream(call.call_id)
            else:
                self._spawn(
                    self._speak_when_streaming(hub, call, pid, text, turn_token),
                    f"telnyx-stream-speak-{call.call_id}",
                )
                return
        await self._speak_rest(call.call_id, pid, text, turn_token)

    async def _speak_when_streaming(
        self, hub: MediaHubLike, call: CallRecord, pid: str, text: str, turn_token: str | None
    ) -> None:
        gone = self._stream_gone.get(call.call_id)
        if await speak_over_stream(
            hub,
            call,
            text,
            turn_token,
            wait_seconds=STREAM_WAIT_SECONDS,
            fallback="actions/speak",
            abandon=gone,
        ):
            if call.call_id in self._streamed:
                self._last_stream_speech[call.call_id] = (text, turn_token)
            return
        if pid in self._ended:
            return
        self._forget_stream(call.call_id)
        await self._speak_rest(call.call_id, pid, text, turn_token)

    async def _speak_rest(self, call_id: str, pid: str, text: str, turn_token: str | None) -> None:
        """`actions/speak`; with a turn token, `transcription_start` once per call."""
        kind, value = ("turn", turn_token) if turn_token else ("speak", "")
        await self._action(
            pid, "speak", self._speak(call_id, text, encode_client_state(call_id, kind, value))
        )
        if turn_token:
            await self._transcribe(call_id, pid, turn_token)

    async def _transcribe(self, call_id: str, pid: str, turn_token: str) -> None:
        """`transcription_start` on the caller's track, once per call."""
        if pid in self._transcribing:
            return
        state = encode_client_state(call_id, "turn", turn_token)
        try:
            await self._action(
                pid,
                "transcription_start",
                transcription_payload(state, f"voicecall-transcribe-{call_id}"),
            )
        except ProviderRequestError as exc:
            if exc.details.get("status") != 422:
                raise
            # 422 here means transcription already runs (e.g. started before a restart).
            logger.info(
                "call %s: transcription_start refused (%s); assuming it runs", call_id, exc.message
            )
        self._transcribing.add(pid)

    async def send_dtmf(self, call: CallRecord, digits: str) -> None:
        """`actions/send_dtmf` (Telnyx plays w/W as 0.5 s / 1 s pauses)."""
        await self._action(
            self._pid(call),
            "send_dtmf",
            {"digits": digits, "command_id": f"voicecall-{uuid.uuid4()}"},
        )

    async def answer(self, call: CallRecord) -> None:
        """`actions/answer`; a caller who hung up meanwhile ends the call as hangup-user."""
        self._note_number(call)
        pid = self._pid(call)
        result = await self._action(
            pid,
            "answer",
            answer_payload(call.call_id, self._stream(call.call_id, pid)),
            tolerate_gone=True,
        )
        if result is None and self._sink is not None:
            await self._sink(
                [
                    ProviderEvent(
                        EventType.ENDED, pid, call_id=call.call_id, end_state=CallState.HANGUP_USER
                    )
                ]
            )

    async def reject(
        self, call: CallRecord, *, reply: ReplyDraft | None = None, busy: bool = False
    ) -> None:
        """`actions/reject` for a call the inbound policy refused (cause `CALL_REJECTED`), or
        with ``busy`` one the daemon has no room for now (`USER_BUSY`: a busy signal)."""
        await self._action(
            self._pid(call),
            "reject",
            {
                "cause": "USER_BUSY" if busy else "CALL_REJECTED",
                "command_id": f"voicecall-reject-{call.call_id}",
            },
            tolerate_gone=True,
        )

    async def hangup(self, call: CallRecord, *, reply: ReplyDraft | None = None) -> None:
        """`actions/hangup`; a call already gone (404, 422/90018) is not an error."""
        if not call.provider_call_id:
            self._stream_ended(call.call_id)
            return
        pid = self._pid(call)
        self._leg(pid).bot_hangup = True
        try:
            await self._action(
                pid,
                "hangup",
                {"command_id": f"voicecall-hangup-{call.call_id}"},
                tolerate_gone=True,
            )
        finally:
            self._stream_ended(call.call_id)

    async def fetch_status(self, call: CallRecord) -> RemoteStatus:
        """`GET /calls/{id}`: `is_alive` false or 404 -> ended; anything else unclear -> unknown.

        An ended call that had been answered is `completed`; one that never was, `no-answer`.
        """
        try:
            result = await self._request("GET", f"/calls/{self._pid(call)}", tolerate_gone=True)
        except ProviderError as exc:
            return RemoteStatus(RemoteState.UNKNOWN, detail=exc.message)
        ended = CallState.COMPLETED if call.answered_at is not None else CallState.NO_ANSWER
        if result is None:
            return RemoteStatus(RemoteState.ENDED, ended, "not found at telnyx")
        data = result.get("data")
        alive = data.get("is_alive") if isinstance(data, dict) else None
        if alive is True:
            return RemoteStatus(RemoteState.LIVE)
        if alive is False:
            return RemoteStatus(RemoteState.ENDED, ended, "is_alive is false")
        return RemoteStatus(RemoteState.UNKNOWN, detail="telnyx gave no is_alive")

    # ------------------------------------------------------------------ webhooks

    def has_signature_headers(self, headers: Mapping[str, str]) -> bool:
        """`telnyx-signature-ed25519` and `telnyx-timestamp` are both present."""
        return has_signature_headers(self.name, headers)

    def verify(self, request: WebhookRequest) -> str:
        """Ed25519 over `timestamp|raw body`, 300 s window; returns the replay key."""
        return self._verifier.verify_request(request)

    def _on_stream_failed(self, call_id: str | None, failure: str) -> None:
        """`streaming.failed`: usually the stream never connected (speech still waiting for it
        falls back by itself); if one was live, what it still had to say is said again."""
        if not call_id:
            return
        hub = self._media()
        session = hub.session(call_id) if hub is not None else None
        unheard = bool(getattr(session, "speaking", False))
        self._fall_back(call_id, f"streaming.failed: {failure}", unheard=unheard)

    def _leg_facts(self, hook: TelnyxWebhook) -> LegFacts | None:
        """Note what this webhook says about its leg; what we know of the leg, None once it
        ended."""
        pid, state = hook.call_control_id, hook.client_state
        if pid in self._ended:
            return None
        leg = self._leg(pid)
        if hook.event_type == "call.initiated":
            leg.direction = direction_of(hook.payload) or leg.direction
        elif hook.event_type == "call.answered":
            leg.answered = True
        if state is not None:
            leg.call_id = state.call_id
        return LegFacts(leg.direction, leg.answered, leg.bot_hangup)

    async def handle_webhook(self, request: WebhookRequest) -> WebhookReply:
        """Parse, apply, answer 200 (Telnyx ignores the body); a non-JSON body is 400."""
        try:
            hook = parse_webhook(request.body)
        except TelnyxPayloadError as exc:
            return WebhookReply(400, "text/plain", str(exc).encode())
        if hook is None:
            return WebhookReply()
        pid = hook.call_control_id
        state = hook.client_state
        if hook.event_type == "call.initiated" and pid in self._ended:
            logger.info("telnyx call.initiated after call.hangup for %s: ignored", pid)
            return WebhookReply()
        failure = stream_failure(hook)
        if failure is not None:
            self._on_stream_failed(state.call_id if state else self._call_id_of(pid), failure)
            return WebhookReply()
        if hook.event_type == "call.dtmf.received" and self._stream_live(state, pid):
            # The live stream reports the same key as a `dtmf` frame: count it once.
            return WebhookReply()
        events = to_events(hook, leg=self._leg_facts(hook))
        report = telnyx_report(hook.event_type, hook.payload)
        if report is not None:
            events = [
                ProviderEvent(
                    EventType.MACHINE,
                    pid,
                    call_id=state.call_id if state else self._call_id_of(pid),
                    machine=report,
                    dedupe_key=f"telnyx:{hook.event_id}" if hook.event_id else None,
                )
            ]
        if hook.event_type == "call.hangup":
            call_id = state.call_id if state else self._call_id_of(pid)
            self._remember_ended(pid)
            self._stream_ended(call_id)
        if events and self._sink is not None:
            await self._sink(events)
        if hook.event_type == "call.speak.ended" and state is not None and state.kind == "notify":
            self._schedule_notify_hangup(pid, state.call_id, state.value)
        return WebhookReply()

    def replay_reply(self, first: WebhookReply | None) -> WebhookReply:
        """Repeat the first answer (always a plain 200 for Telnyx)."""
        return first or WebhookReply()

    def _stream_live(self, state: ClientState | None, pid: str) -> bool:
        """The call has a started media stream right now."""
        call_id = state.call_id if state else self._call_id_of(pid)
        hub = self._media()
        return bool(
            call_id
            and call_id in self._streamed
            and hub is not None
            and hub.session(call_id) is not None
        )

    def _call_id_of(self, pid: str) -> str | None:
        leg = self._legs.get(pid)
        if leg is not None and leg.call_id:
            return leg.call_id
        return next((c for c, p in self._streamed.items() if p == pid), None)

    def _remember_ended(self, pid: str) -> None:
        self._ended[pid] = None
        self._ended.move_to_end(pid)
        while len(self._ended) > REMEMBERED_HANGUPS:
            self._ended.popitem(last=False)
        self._legs.pop(pid, None)
        self._transcribing.discard(pid)
        self._notify_scheduled.discard(pid)

    def _schedule_notify_hangup(self, pid: str, call_id: str, delay_text: str) -> None:
        if pid in self._notify_scheduled or pid in self._ended:
            return
        try:
            delay = max(0.0, float(delay_text))
        except ValueError:
            delay = float(self._config.outbound.notify_hangup_delay_seconds)
        self._notify_scheduled.add(pid)
        self._tasks.spawn(
            self._notify_hangup(pid, call_id, delay), f"telnyx-notify-hangup-{call_id}"
        )

    async def _notify_hangup(self, pid: str, call_id: str, delay: float) -> None:
        """Hang up `delay` s after playback ended, then report the bot's hang-up."""
        await asyncio.sleep(delay)
        if pid not in self._ended:
            self._leg(pid).bot_hangup = True
        try:
            await self._action(
                pid, "hangup", {"command_id": f"voicecall-hangup-{call_id}"}, tolerate_gone=True
            )
        except ProviderError as exc:
            logger.warning("call %s: notify hang-up failed: %s", call_id, exc.message)
            self._notify_scheduled.discard(pid)
            return
        if self._sink is not None:
            await self._sink(
                [
                    ProviderEvent(
                        EventType.ENDED, pid, call_id=call_id, end_state=CallState.HANGUP_BOT
                    )
                ]
            )
