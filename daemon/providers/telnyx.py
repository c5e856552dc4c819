"""Telnyx Call Control v2 provider (SPEC section 10).

REST goes through the official SDK's `AsyncTelnyx` client: it honours `telnyx.api_base_url`
(`base_url=`), is native asyncio (httpx), authenticates with the Bearer key and maps HTTP errors
to typed exceptions. It is imported in `start()`, not at module import, because importing it
costs most of a second that `voicecall status` and the other providers should not pay. We send
our own payload dicts through the client's generic `post`/`get` (built and unit-tested in
`daemon.providers.telnyx_wire`) rather than its per-endpoint methods, so a payload is one
inspectable dict and a field the SDK's typed signature lacks still goes through.

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
(`context.extras["media"]`), conversation and inbound calls are dialled/answered with
`stream_url` (bidirectional RTP, PCMU); speech then goes through the call's media session
(waiting for the stream to start if needed, falling back to `actions/speak` if it never does)
and caller turns come from the stream's STT, so `transcription_start` is not used. Notify
calls keep `actions/speak`, whose `call.speak.ended` drives the hang-up.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from daemon.engine.record import CallRecord
from daemon.engine.state import CallState
from daemon.errors import (
    ConfigError,
    MediaError,
    ProviderAuthError,
    ProviderError,
    ProviderRequestError,
)
from daemon.events import CallMode, EventType, ProviderEvent
from daemon.providers.base import (
    DialRequest,
    ProviderContext,
    RemoteState,
    RemoteStatus,
    WebhookReply,
    WebhookRequest,
)
from daemon.providers.bound import BoundProvider
from daemon.providers.streaming import (
    MediaHubLike,
    MediaSessionLike,
    media_hub,
    speak_over_stream,
)
from daemon.providers.telnyx_wire import (
    ALREADY_ENDED_CODES,
    TelnyxPayloadError,
    answer_payload,
    dial_payload,
    encode_client_state,
    map_voice,
    parse_webhook,
    speak_payload,
    stream_fields,
    to_events,
    transcription_payload,
)
from daemon.webhooks.security import TelnyxVerifier, has_signature_headers

if TYPE_CHECKING:
    from telnyx import APIStatusError, AsyncTelnyx


logger = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECONDS = 10.0
MAX_RETRIES = 1
"""The SDK retries 408/409/429/5xx and connection errors; dial stays idempotent (command_id)."""
REMEMBERED_HANGUPS = 10_000
STREAM_WAIT_SECONDS = 10.0
"""How long speech waits for a call's media stream to start before using `actions/speak`."""




def _error_codes(exc: APIStatusError) -> set[str]:
    """The `errors[].code` values of a Telnyx error body (`{"errors":[{"code":"90018",...}]}`)."""
    body = exc.body
    if isinstance(body, dict) and "errors" not in body and isinstance(body.get("error"), dict):
        body = {"errors": [body["error"]]}
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return set()
    return {str(e.get("code")) for e in errors if isinstance(e, dict) and e.get("code")}


def _is_gone(exc: APIStatusError) -> bool:
    """404, or 422 with 90018/90055: the call leg no longer exists at Telnyx."""
    if exc.status_code == 404:
        return True
    return exc.status_code == 422 and bool(_error_codes(exc) & ALREADY_ENDED_CODES)


class TelnyxProvider(BoundProvider):
    """Telnyx Call Control v2 behind the `Provider` protocol."""

    name = "telnyx"

    def __init__(self) -> None:
        super().__init__()
        self._client: AsyncTelnyx | None = None
        self._verifier = TelnyxVerifier(None)
        self._transcribing: set[str] = set()
        self._bot_hangups: set[str] = set()
        self._notify_scheduled: set[str] = set()
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._streamed: set[str] = set()
        """Call ids dialled/answered with a media stream, until they end."""

    # ------------------------------------------------------------------ lifecycle

    def _on_bind(self, context: ProviderContext) -> None:
        """The Ed25519 webhook verifier, keyed by `telnyx.public_key`."""
        self._verifier = TelnyxVerifier(context.config.telnyx.public_key)

    async def start(self) -> None:
        """Create the SDK client (lazy import: see the module docstring)."""
        settings = self._config.telnyx
        if not settings.api_key:
            raise ConfigError(
                "telnyx.api_key is not set; set TELNYX_API_KEY or "
                "`voicecall secrets set telnyx.api_key`"
            )
        from telnyx import AsyncTelnyx

        self._client = AsyncTelnyx(
            api_key=settings.api_key,
            base_url=settings.api_base_url.rstrip("/"),
            timeout=REQUEST_TIMEOUT_SECONDS,
            max_retries=MAX_RETRIES,
        )

    async def close(self) -> None:
        """Cancel notify timers and close the HTTP client."""
        await self._tasks.cancel()
        if self._client is not None:
            await self._client.close()
            self._client = None

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
        from telnyx import APIConnectionError, APIStatusError

        if self._client is None:
            raise ProviderRequestError("the telnyx client is not started")
        try:
            if method == "GET":
                result = await self._client.get(path, cast_to=object)
            else:
                result = await self._client.post(path, body=dict(body or {}), cast_to=object)
        except APIStatusError as exc:
            if tolerate_gone and _is_gone(exc):
                logger.info(
                    "telnyx %s %s: call already ended (%d %s)",
                    method,
                    path,
                    exc.status_code,
                    ",".join(sorted(_error_codes(exc))),
                )
                return None
            codes = ",".join(sorted(_error_codes(exc))) or "no code"
            message = f"telnyx {method} {path} failed with HTTP {exc.status_code} ({codes})"
            if exc.status_code in (401, 403):
                raise ProviderAuthError(
                    message + "; check telnyx.api_key", status=exc.status_code
                ) from None
            raise ProviderRequestError(message, status=exc.status_code, codes=codes) from None
        except APIConnectionError as exc:
            raise ProviderRequestError(
                f"telnyx {method} {path} failed: {type(exc).__name__}; is "
                f"telnyx.api_base_url ({self._config.telnyx.api_base_url}) reachable?"
            ) from None
        return result if isinstance(result, dict) else {}

    async def _action(
        self,
        call: CallRecord | str,
        action: str,
        body: Mapping[str, Any],
        *,
        tolerate_gone: bool = False,
    ) -> dict[str, Any] | None:
        pid = call if isinstance(call, str) else self._pid(call)
        return await self._request(
            "POST", f"/calls/{pid}/actions/{action}", body, tolerate_gone=tolerate_gone
        )

    @staticmethod
    def _pid(call: CallRecord) -> str:
        if not call.provider_call_id:
            raise ProviderRequestError(f"call {call.call_id} has no Telnyx call_control_id yet")
        return call.provider_call_id

    def _media(self) -> MediaHubLike | None:
        """The media hub, when streaming is on and the hub can speak (else Telnyx speaks)."""
        return media_hub(self._context)

    def _stream(self, call_id: str, provider_call_id: str | None) -> dict[str, Any] | None:
        """The stream fields of a dial/answer (token in the URL), or None without streaming."""
        hub = self._media()
        if hub is None or self._context is None or self._context.stream_url is None:
            return None
        self._streamed.add(call_id)
        return stream_fields(self._context.stream_url, hub.issue_token(call_id, provider_call_id))

    def _stream_ended(self, call_id: str | None) -> None:
        if call_id and call_id in self._streamed:
            self._streamed.discard(call_id)
            hub = self._media()
            if hub is not None:
                hub.revoke(call_id)

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
        result = await self._request("POST", "/calls", payload) or {}
        data = result.get("data")
        pid = data.get("call_control_id") if isinstance(data, dict) else None
        if not isinstance(pid, str) or not pid:
            raise ProviderRequestError("telnyx POST /calls returned no data.call_control_id")
        return pid

    def _speak(self, call: CallRecord, text: str, client_state: str) -> dict[str, Any]:
        return speak_payload(
            text,
            voice=map_voice(self._config.tts.openai.voice),
            client_state=client_state,
            command_id=f"voicecall-{uuid.uuid4()}",
        )

    async def play_and_hangup(self, call: CallRecord, text: str, delay_seconds: float) -> None:
        """Speak with `notify:<delay>` in client_state; `call.speak.ended` triggers the hang-up."""
        state = encode_client_state(call.call_id, "notify", f"{max(0.0, delay_seconds):g}")
        await self._action(call, "speak", self._speak(call, text, state))

    async def speak(self, call: CallRecord, text: str, *, turn_token: str | None) -> None:
        """Speak through the call's media stream (its STT hears the caller) when it has one;
        else `actions/speak`, and with a turn token make sure the caller's track is being
        transcribed."""
        hub = self._media()
        if hub is not None and call.call_id in self._streamed:
            session = hub.session(call.call_id)
            if isinstance(session, MediaSessionLike):
                try:
                    await session.speak(text, turn_token=turn_token)
                    return
                except MediaError as exc:
                    logger.info("call %s: %s; using actions/speak", call.call_id, exc.message)
                    self._streamed.discard(call.call_id)
            else:
                self._spawn(
                    self._speak_when_streaming(hub, call, text, turn_token),
                    f"telnyx-stream-speak-{call.call_id}",
                )
                return
        await self._speak_rest(call, text, turn_token)

    async def _speak_when_streaming(
        self, hub: MediaHubLike, call: CallRecord, text: str, turn_token: str | None
    ) -> None:
        if await speak_over_stream(hub, call, text, turn_token, wait_seconds=STREAM_WAIT_SECONDS,
                                   fallback="actions/speak"):
            return
        if call.call_id in self._streamed:  # not ended meanwhile
            self._streamed.discard(call.call_id)
            await self._speak_rest(call, text, turn_token)

    async def _speak_rest(self, call: CallRecord, text: str, turn_token: str | None) -> None:
        """`actions/speak`; with a turn token, `transcription_start` once per call."""
        kind, value = ("turn", turn_token) if turn_token else ("speak", "")
        state = encode_client_state(call.call_id, kind, value)
        await self._action(call, "speak", self._speak(call, text, state))
        pid = self._pid(call)
        if turn_token and pid not in self._transcribing:
            try:
                await self._action(
                    call,
                    "transcription_start",
                    transcription_payload(state, f"voicecall-transcribe-{call.call_id}"),
                )
            except ProviderRequestError as exc:
                if exc.details.get("status") != 422:
                    raise
                # 422 here means transcription already runs (e.g. started before a restart).
                logger.info(
                    "call %s: transcription_start refused (%s); assuming it runs",
                    call.call_id,
                    exc.message,
                )
            self._transcribing.add(pid)

    async def send_dtmf(self, call: CallRecord, digits: str) -> None:
        """`actions/send_dtmf` (Telnyx plays w/W as 0.5 s / 1 s pauses)."""
        await self._action(
            call, "send_dtmf", {"digits": digits, "command_id": f"voicecall-{uuid.uuid4()}"}
        )

    async def answer(self, call: CallRecord) -> None:
        """`actions/answer`; a caller who hung up meanwhile ends the call as hangup-user."""
        pid = self._pid(call)
        result = await self._action(
            call,
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

    async def reject(self, call: CallRecord) -> None:
        """`actions/reject` (SIP 603-style refusal) for a call the inbound policy refused."""
        await self._action(
            call,
            "reject",
            {
                "cause": "CALL_REJECTED",
                "command_id": f"voicecall-reject-{call.call_id}",
            },
            tolerate_gone=True,
        )

    async def hangup(self, call: CallRecord) -> None:
        """`actions/hangup`; a call already gone (404, 422/90018) is not an error."""
        if not call.provider_call_id:
            self._stream_ended(call.call_id)
            return
        self._bot_hangups.add(call.provider_call_id)
        try:
            await self._action(
                call,
                "hangup",
                {"command_id": f"voicecall-hangup-{call.call_id}"},
                tolerate_gone=True,
            )
        finally:
            self._stream_ended(call.call_id)

    async def fetch_status(self, call: CallRecord) -> RemoteStatus:
        """`GET /calls/{id}`: `is_alive` false or 404 -> ended; anything else unclear -> unknown."""
        try:
            result = await self._request("GET", f"/calls/{self._pid(call)}", tolerate_gone=True)
        except ProviderError as exc:
            return RemoteStatus(RemoteState.UNKNOWN, detail=exc.message)
        if result is None:
            return RemoteStatus(RemoteState.ENDED, CallState.COMPLETED, "not found at telnyx")
        data = result.get("data")
        alive = data.get("is_alive") if isinstance(data, dict) else None
        if alive is True:
            return RemoteStatus(RemoteState.LIVE)
        if alive is False:
            return RemoteStatus(RemoteState.ENDED, CallState.COMPLETED, "is_alive is false")
        return RemoteStatus(RemoteState.UNKNOWN, detail="telnyx gave no is_alive")

    # ------------------------------------------------------------------ webhooks

    def has_signature_headers(self, headers: Mapping[str, str]) -> bool:
        """`telnyx-signature-ed25519` and `telnyx-timestamp` are both present."""
        return has_signature_headers(self.name, headers)

    def verify(self, request: WebhookRequest) -> str:
        """Ed25519 over `timestamp|raw body`, 300 s window; returns the replay key."""
        return self._verifier.verify_request(request)

    async def handle_webhook(self, request: WebhookRequest) -> WebhookReply:
        """Parse, apply, answer 200 (Telnyx ignores the body); a non-JSON body is 400."""
        try:
            hook = parse_webhook(request.body)
        except TelnyxPayloadError as exc:
            return WebhookReply(400, "text/plain", str(exc).encode())
        if hook is None:
            return WebhookReply()
        pid = hook.call_control_id
        if hook.event_type == "call.initiated" and pid in self._ended:
            logger.info("telnyx call.initiated after call.hangup for %s: ignored", pid)
            return WebhookReply()
        events = to_events(hook, bot_hangup=pid in self._bot_hangups)
        if hook.event_type == "call.hangup":
            self._remember_ended(pid)
            self._stream_ended(hook.client_state.call_id if hook.client_state else None)
        if events and self._sink is not None:
            await self._sink(events)
        state = hook.client_state
        if hook.event_type == "call.speak.ended" and state is not None and state.kind == "notify":
            self._schedule_notify_hangup(pid, state.call_id, state.value)
        return WebhookReply()

    def replay_reply(self, first: WebhookReply | None) -> WebhookReply:
        """Repeat the first answer (always a plain 200 for Telnyx)."""
        return first or WebhookReply()

    def _remember_ended(self, pid: str) -> None:
        self._ended[pid] = None
        self._ended.move_to_end(pid)
        while len(self._ended) > REMEMBERED_HANGUPS:
            self._ended.popitem(last=False)
        self._bot_hangups.discard(pid)
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
        self._tasks.spawn(self._notify_hangup(pid, call_id, delay),
                          f"telnyx-notify-hangup-{call_id}")

    async def _notify_hangup(self, pid: str, call_id: str, delay: float) -> None:
        """Hang up `delay` s after playback ended, then report the bot's hang-up."""
        await asyncio.sleep(delay)
        self._bot_hangups.add(pid)
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
