"""Twilio Programmable Voice behind the `Provider` protocol (SPEC section 10).

Call flow:
- notify: `Calls.create(Twiml=<Say/><Pause/><Hangup/>)`. Twilio never fetches anything, the
  `answered` status callback tells the engine, and `play_and_hangup` has nothing left to send.
  Its `completed` is our `<Hangup/>`: the status callback URL carries `mode=notify`, so this
  holds after a restart too (state `hangup-bot`);
- conversation: `Calls.create(Url=<webhook>?callId=..)`. Twilio fetches the Url on answer; the
  engine speaks the opening line while that request is handled, and it goes into the reply;
- inbound: Twilio's voice request is offered to the engine's policy; a rejected caller gets
  `<Reject/>` in that same reply (never a REST hang-up, so it cannot happen twice), an accepted
  one the greeting and a `<Gather>`.
Whatever the engine says *while* we handle a voice request for that call is collected into the
request's TwiML: the request's `PendingReply` goes to the engine's sink with its events and comes
back as the `reply` argument of `speak`, `play_and_hangup`, `hangup` and `reject`. Anything said
without it (later, or during a status callback) is a live update, `Calls(sid).update(twiml=...)`,
retried on Twilio error 21220. Every document ends
with a keep-alive, so the call stays up between turns (see `twilio_twiml`).

Media streams (SPEC 9) are a small separate path, see `_media` and below: with streaming on and
a TTS engine in the media hub, conversation and inbound calls get `<Connect><Stream>` instead of
`<Gather>`, and speech goes through the call's media session.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from daemon.errors import ConfigError, MediaError, ProviderError, ProviderRequestError
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
from daemon.providers.machine import twilio_dial_params, twilio_report
from daemon.providers.streaming import MediaHubLike, MediaSessionLike, media_hub, number_of
from daemon.providers.twilio_parse import TwilioCallback, end_state, parse_callback, to_events
from daemon.providers.twilio_rest import TwilioRest
from daemon.providers.twilio_twiml import (
    XML_CONTENT_TYPE,
    Digits,
    HangUp,
    Listen,
    Pause,
    PendingReply,
    Reject,
    Say,
    Step,
    Stream,
    TwimlContext,
    callback_url,
    empty_response,
    map_voice,
    notify_twiml,
    render,
)
from daemon.webhooks.security import TwilioVerifier, has_signature_headers, parse_form

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")
"""Sent as four repeated `StatusCallbackEvent` values: one joined value loses `completed`."""
REMEMBERED_CALLS = 10_000
MAX_TIME_LIMIT_SECONDS = 14_400
"""Twilio's largest `TimeLimit` (four hours)."""
STREAM_WAIT_SECONDS = 15.0
"""How long speech waits for a call's media stream to start after `<Connect><Stream>`."""


def _folding(reply: ReplyDraft | None, call: CallRecord) -> PendingReply | None:
    """`reply` when it is the TwiML of a voice request still open for `call`, else None."""
    return reply if isinstance(reply, PendingReply) and reply.serves(call) else None


def _xml(text: str) -> WebhookReply:
    return WebhookReply(200, XML_CONTENT_TYPE, text.encode("utf-8"))


class TwilioProvider(BoundProvider):
    """Twilio Programmable Voice behind the `Provider` protocol."""

    name = "twilio"

    def __init__(self) -> None:
        super().__init__()
        self._rest: TwilioRest | None = None
        self._verifier = TwilioVerifier("")
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._rejected: OrderedDict[str, None] = OrderedDict()
        self._hung_up: OrderedDict[str, None] = OrderedDict()
        """CallSids we hung up: their `completed` is `hangup-bot`, whichever arrives first."""
        self._streamed: set[str] = set()

    # ------------------------------------------------------------------ lifecycle

    def _on_bind(self, context: ProviderContext) -> None:
        """The HMAC webhook verifier, keyed by `twilio.auth_token`."""
        self._verifier = TwilioVerifier(context.config.twilio.auth_token or "")

    async def start(self) -> None:
        """Build the SDK client (no request is made)."""
        settings = self._config.twilio
        if not settings.account_sid or not settings.auth_token:
            raise ConfigError(
                "twilio.account_sid and twilio.auth_token must be set "
                "(TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN)"
            )
        self._rest = TwilioRest(
            settings.account_sid,
            settings.auth_token,
            api_base_url=settings.api_base_url,
            region=settings.region,
        )

    async def close(self) -> None:
        """Stop background speech and close the HTTP session."""
        await self._tasks.cancel()
        if self._rest is not None:
            await self._rest.close()
            self._rest = None

    @property
    def rest(self) -> TwilioRest:
        """The REST client (after `start`)."""
        if self._rest is None:
            raise ProviderRequestError("the twilio client is not started")
        return self._rest

    def _ctx(self, call_id: str | None) -> TwimlContext:
        assert self._context is not None
        return TwimlContext(self._context.webhook_url, call_id, map_voice(self._tts_voice(call_id)))

    @staticmethod
    def _pid(call: CallRecord) -> str:
        if not call.provider_call_id:
            raise ProviderRequestError(f"call {call.call_id} has no Twilio CallSid yet")
        return call.provider_call_id

    def _remember(self, table: OrderedDict[str, None], sid: str | None) -> None:
        if sid:
            table[sid] = None
            while len(table) > REMEMBERED_CALLS:
                table.popitem(last=False)

    # ------------------------------------------------------------------ control plane

    async def place_call(self, request: DialRequest) -> str:
        """`Calls.create`: inline TwiML for notify, our webhook as `Url` for conversation."""
        assert self._context is not None
        webhook = self._context.webhook_url
        cid = request.call_id
        params: dict[str, Any] = {
            "to": request.to_number,
            "from_": request.from_number,
            "status_callback": callback_url(
                webhook, callId=cid, type="status", mode=request.mode.value
            ),
            "status_callback_method": "POST",
            "status_callback_event": list(STATUS_EVENTS),
            "timeout": request.ring_timeout_seconds,
            # Twilio's own cap, a safety net should our max-duration timer be lost.
            "time_limit": min(self._config.max_duration_seconds + 60, MAX_TIME_LIMIT_SECONDS),
        }
        if request.machine_detection is not None:
            # The message waits for the verdict (SPEC 13), so even a notify call fetches our
            # webhook on answer and is told what to say by a live update.
            params.update(
                twilio_dial_params(
                    request.machine_detection, callback_url(webhook, callId=cid, type="amd")
                )
            )
        if request.mode is CallMode.NOTIFY and request.machine_detection is None:
            params["twiml"] = notify_twiml(
                request.message,
                map_voice(self._config.tts.openai.voice),
                request.notify_hangup_delay_seconds,
            )
        else:
            params["url"] = callback_url(webhook, callId=cid)
            params["method"] = "POST"
        return await self.rest.create_call(**params)

    async def _update(self, call: CallRecord, steps: list[Step]) -> None:
        await self.rest.update_twiml(self._pid(call), render(steps, self._ctx(call.call_id)))

    async def play_and_hangup(
        self,
        call: CallRecord,
        text: str,
        delay_seconds: float,
        *,
        reply: ReplyDraft | None = None,
    ) -> None:
        """Notify: already in the call's inline TwiML; otherwise Say, Pause, Hangup."""
        session = self._session(call)
        if session is not None:
            self._spawn(
                self._stream_notify(call, session, text, delay_seconds),
                f"twilio-notify-{call.call_id}",
            )
            return
        steps: list[Step] = [Say(text), Pause(round(delay_seconds)), HangUp()]
        pending = _folding(reply, call)
        if pending is not None:
            pending.steps.extend(steps[:2])
            pending.listen = None
            pending.end = HangUp()
            return
        if (
            call.direction is Direction.OUTBOUND
            and call.mode is CallMode.NOTIFY
            and not call.metadata.get("machineDetection")
        ):
            logger.debug("call %s: notify TwiML was sent with the call", call.call_id)
            return
        await self._update(call, steps)

    async def speak(
        self,
        call: CallRecord,
        text: str,
        *,
        turn_token: str | None,
        reply: ReplyDraft | None = None,
    ) -> None:
        """Say `text` (then listen, with a turn token): in the reply, a live update or a stream."""
        pending = _folding(reply, call)
        if await self._speak_streamed(call, text, turn_token, pending):
            return
        if pending is not None:
            pending.call_id = call.call_id
            pending.steps.append(Say(text))
            pending.listen = turn_token or pending.listen
            return
        steps: list[Step] = [Say(text)]
        if turn_token:
            steps.append(Listen(turn_token))
        await self._update(call, steps)

    async def send_dtmf(self, call: CallRecord, digits: str) -> None:
        """`<Play digits>` as a live update (`W` = 1 s, Twilio knows only `w` = 0.5 s)."""
        steps: list[Step] = [Digits(digits.replace("W", "ww"))]
        stream = self._stream_step(call, force=call.call_id in self._streamed)
        if stream is not None:
            steps.append(stream)  # the update ends the stream: reconnect it after the tones
        await self._update(call, steps)

    async def answer(self, call: CallRecord) -> None:
        """Nothing to send: Twilio answers an inbound call when our TwiML has verbs."""
        self._note_number(call)

    async def reject(
        self, call: CallRecord, *, reply: ReplyDraft | None = None, busy: bool = False
    ) -> None:
        """`<Reject/>` (`reason="busy"` with ``busy``) as the voice request's answer; outside
        one, one REST hang-up at most."""
        sid = call.provider_call_id
        pending = _folding(reply, call)
        if pending is not None:
            pending.steps.clear()
            pending.listen = None
            pending.end = Reject(busy=busy)
            self._remember(self._rejected, sid)
            return
        if sid is None or sid in self._rejected:
            return
        self._remember(self._rejected, sid)
        await self.rest.hang_up(sid)

    async def hangup(self, call: CallRecord, *, reply: ReplyDraft | None = None) -> None:
        """`Calls(sid).update(status="completed")`; 404/20404 means it already ended."""
        pending = _folding(reply, call)
        self._forget(call.call_id, call.provider_call_id)
        self._remember(self._hung_up, call.provider_call_id)
        if pending is not None:
            pending.listen = None
            pending.end = HangUp()
        if not call.provider_call_id:
            return
        if not await self.rest.hang_up(call.provider_call_id):
            logger.info("call %s was already over at Twilio", call.call_id)

    async def fetch_status(self, call: CallRecord) -> RemoteStatus:
        """`Calls(sid).fetch()`: final status -> ENDED, 404 -> ENDED completed, error -> UNKNOWN."""
        if not call.provider_call_id:
            return RemoteStatus(RemoteState.UNKNOWN, detail="no CallSid was recorded")
        try:
            status = await self.rest.fetch_status(call.provider_call_id)
        except ProviderError as exc:
            return RemoteStatus(RemoteState.UNKNOWN, detail=exc.message)
        if status is None:
            return RemoteStatus(
                RemoteState.ENDED,
                end_state("completed", notify=False),
                "twilio no longer knows the call (404)",
            )
        notify = call.direction is Direction.OUTBOUND and call.mode is CallMode.NOTIFY
        state = end_state(status, notify=notify)
        if state is None:
            return RemoteStatus(RemoteState.LIVE, detail=status)
        return RemoteStatus(RemoteState.ENDED, state, f"twilio status {status}")

    def _forget(self, call_id: str | None, sid: str | None) -> None:
        """A call ended: stop streaming it and answer its stray requests with `<Hangup/>`."""
        self._remember(self._ended, sid)
        if call_id:
            self._streamed.discard(call_id)
            hub = self._media()
            if hub is not None:
                hub.revoke(call_id)

    # ------------------------------------------------------------------ webhooks

    def has_signature_headers(self, headers: Mapping[str, str]) -> bool:
        """`X-Twilio-Signature` is present."""
        return has_signature_headers(self.name, headers)

    def verify(self, request: WebhookRequest) -> str:
        """HMAC-SHA1 over the public URL + sorted params (port variants); the replay key."""
        return self._verifier.verify_request(request)

    async def handle_webhook(self, request: WebhookRequest) -> WebhookReply:
        """Apply the request's events, then answer TwiML for the call's next step."""
        if request.query_value("type") == "amd":
            return await self._amd_callback(request)
        cb = parse_callback(request.query, parse_form(request.body))
        events = to_events(cb, bot_hangup=cb.call_sid in self._hung_up)
        if cb.is_terminal:
            self._forget(cb.call_id, cb.call_sid)
        if cb.is_status:
            # Twilio ignores a status callback's answer: nothing may be said through it.
            if events and self._sink is not None:
                await self._sink(events)
            return _xml(empty_response())
        pending = PendingReply(cb.call_sid, cb.call_id)
        try:
            if events and self._sink is not None:
                await self._sink(events, pending)
        finally:
            pending.open = False
        if cb.is_terminal:
            return _xml(empty_response())
        steps = pending.document() or self._idle_steps(cb)
        return _xml(render(steps, self._ctx(pending.call_id or cb.call_id)))

    async def _amd_callback(self, request: WebhookRequest) -> WebhookReply:
        """`AsyncAmdStatusCallback`: the verdict (`AnsweredBy`). Twilio ignores the answer."""
        form = dict(parse_form(request.body))
        sid = form.get("CallSid", "").strip()
        report = twilio_report(form.get("AnsweredBy", ""))
        if sid and report is not None and self._sink is not None:
            # No reply draft: nothing may be said through this answer.
            await self._sink(
                [
                    ProviderEvent(
                        EventType.MACHINE,
                        sid,
                        call_id=request.query_value("callId"),
                        machine=report,
                        dedupe_key=f"twilio:{sid}:amd:{report.raw}",
                    )
                ]
            )
        return _xml(empty_response())

    def _idle_steps(self, cb: TwilioCallback) -> list[Step]:
        """What a request that made the engine say nothing gets: mostly, keep the line open."""
        if cb.call_sid in self._rejected:
            return [Reject()]
        if cb.call_sid in self._ended:
            return [HangUp()]
        if cb.flow == "listen" and cb.turn_token:
            return [Listen(cb.turn_token)]
        return []  # render() adds the keep-alive

    def replay_reply(self, first: WebhookReply | None) -> WebhookReply:
        """An empty `<Response/>` (SPEC 8.6): a replay must have no effect on the call."""
        return _xml(empty_response())

    # ------------------------------------------------------------------ media streams

    def _media(self) -> MediaHubLike | None:
        """The media hub, when streaming is on and the hub can speak (else TwiML is used)."""
        return media_hub(self._context)

    def _session(self, call: CallRecord) -> MediaSessionLike | None:
        hub = self._media()
        session = hub.session(call.call_id) if hub is not None else None
        return session if isinstance(session, MediaSessionLike) else None

    def _stream_step(self, call: CallRecord, *, force: bool = False) -> Stream | None:
        hub = self._media()
        context = self._context
        if hub is None or context is None or context.stream_url is None:
            return None
        if not force and hub.session(call.call_id) is None:
            return None
        token = hub.issue_token(call.call_id, call.provider_call_id)
        self._streamed.add(call.call_id)
        return Stream(context.stream_url, token, call.call_id)

    async def _speak_streamed(
        self, call: CallRecord, text: str, turn_token: str | None, pending: PendingReply | None
    ) -> bool:
        """Speak through the call's media stream if it has (or is about to have) one; a
        `pending` reply gets the `<Connect><Stream>`."""
        hub = self._media()
        if hub is None or (call.direction is Direction.OUTBOUND and call.mode is CallMode.NOTIFY):
            return False
        session = self._session(call)
        if session is not None:
            await session.speak(text, turn_token=turn_token)
            return True
        if pending is not None:
            stream = self._stream_step(call, force=True)
            assert stream is not None
            pending.call_id = call.call_id
            pending.end = stream
        elif call.call_id not in self._streamed and call.metadata.get("machineDetection"):
            # Held for the machine verdict, the call got no stream on answer: connect it now.
            stream = self._stream_step(call, force=True)
            assert stream is not None
            await self._update(call, [stream])
        elif call.call_id not in self._streamed:
            return False
        hub.prefetch(call.call_id, number_of(call), text)
        self._spawn(
            self._speak_when_streaming(hub, call.call_id, text, turn_token),
            f"twilio-stream-speak-{call.call_id}",
        )
        return True

    async def _speak_when_streaming(
        self, hub: MediaHubLike, call_id: str, text: str, turn_token: str | None
    ) -> None:
        """Speak once the call's stream starts, however late: a stream that binds after
        `STREAM_WAIT_SECONDS` (a busy daemon, a slow media leg) still hears what is pending.
        The wait ends with the call (the hub fails the waiter when it revokes the token)."""
        waiter = asyncio.ensure_future(hub.wait_session(call_id))
        try:
            try:
                session = await asyncio.wait_for(asyncio.shield(waiter), STREAM_WAIT_SECONDS)
            except TimeoutError:
                logger.warning(
                    "call %s: its media stream has not started %gs after <Connect><Stream>; "
                    "%r will be said when it does",
                    call_id,
                    STREAM_WAIT_SECONDS,
                    text[:40],
                )
                session = await waiter
            await session.speak(text, turn_token=turn_token)
        except MediaError as exc:
            logger.warning("call %s: %s; %r was not said", call_id, exc.message, text[:40])
        finally:
            if not waiter.done():
                waiter.cancel()

    async def _stream_notify(
        self, call: CallRecord, session: MediaSessionLike, text: str, delay: float
    ) -> None:
        await session.speak(text, turn_token=None)
        await session.wait_idle()
        await asyncio.sleep(delay)
        await self.hangup(call)
