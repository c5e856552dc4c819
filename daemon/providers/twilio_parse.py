"""Twilio webhook parsing: form body + our query parameters -> one `TwilioCallback` -> events.

Twilio posts `application/x-www-form-urlencoded` bodies. Our own parameters ride on the query
string of the URLs we gave Twilio: `callId` (our call id), `type=status` (status callbacks),
`mode` (notify/conversation, on status callbacks), `flow` (`hold`/`listen` keep-alive loops),
`turnToken` (the turn a `<Gather>` belongs to) and `n` (a nonce, see `twilio_twiml`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from daemon.model.events import Direction, EventType, ProviderEvent
from daemon.model.state import CallState

TERMINAL_STATES: Mapping[str, CallState] = {
    "completed": CallState.COMPLETED,
    "busy": CallState.BUSY,
    "no-answer": CallState.NO_ANSWER,
    "failed": CallState.FAILED,
    "canceled": CallState.HANGUP_BOT,
}
"""Twilio's final `CallStatus` values. `canceled` only happens when we cancel a call."""
LIVE_STATUSES = frozenset({"queued", "initiated", "ringing", "in-progress", "answered"})


def end_state(status: str, *, notify: bool) -> CallState | None:
    """The end state for a final status; None while the call is live.

    A notify call's TwiML ends with our `<Hangup/>`, so its `completed` is our hang-up
    (`hangup-bot`). For any other call `completed` means the other side (or Twilio) ended it.
    """
    state = TERMINAL_STATES.get(status)
    if state is CallState.COMPLETED and notify:
        return CallState.HANGUP_BOT
    return state


@dataclass(frozen=True, slots=True)
class TwilioCallback:
    """One Twilio request, parsed once at the edge."""

    call_sid: str
    call_id: str | None
    call_status: str
    direction: Direction | None
    from_number: str | None
    to_number: str | None
    is_status: bool
    """A status callback (our `type=status`, or Twilio's `CallbackSource`): Twilio ignores
    its answer, so nothing may be said through it."""
    notify: bool
    """The status callback of a notify call (`mode=notify`)."""
    conversation: bool
    """The status callback of a conversation call (`mode=conversation`)."""
    flow: str
    speech: str
    confidence: float | None
    digits: str
    turn_token: str | None
    sequence: str
    nonce: str

    @property
    def is_terminal(self) -> bool:
        """Twilio says the call is over."""
        return self.call_status in TERMINAL_STATES


def _direction(value: str) -> Direction | None:
    if value == "inbound":
        return Direction.INBOUND
    if value.startswith("outbound"):  # outbound-api, outbound-dial
        return Direction.OUTBOUND
    return None


def _confidence(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if 0.0 <= number <= 1.0 else None


def parse_callback(
    query: Iterable[tuple[str, str]], form: Iterable[tuple[str, str]]
) -> TwilioCallback:
    """Parse the query parameters and the form body (first value of each name wins)."""
    q: dict[str, str] = {}
    for key, value in query:
        q.setdefault(key, value)
    f: dict[str, str] = {}
    for key, value in form:
        f.setdefault(key, value)
    mode = q.get("mode", "")
    return TwilioCallback(
        call_sid=f.get("CallSid", "").strip(),
        call_id=q.get("callId") or None,
        call_status=f.get("CallStatus", "").strip().lower(),
        direction=_direction(f.get("Direction", "").strip().lower()),
        from_number=f.get("From") or None,
        to_number=f.get("To") or None,
        is_status=q.get("type") == "status" or f.get("CallbackSource") == "call-progress-events",
        notify=mode == "notify",
        conversation=mode == "conversation",
        flow=q.get("flow", ""),
        speech=f.get("SpeechResult", "").strip(),
        confidence=_confidence(f.get("Confidence", "")),
        digits=f.get("Digits", "").strip(),
        turn_token=q.get("turnToken") or None,
        sequence=f.get("SequenceNumber", ""),
        nonce=q.get("n", ""),
    )


def _event(cb: TwilioCallback, kind: EventType, key: str, **fields: object) -> ProviderEvent:
    return ProviderEvent(
        kind,
        cb.call_sid,
        call_id=cb.call_id,
        direction=cb.direction,
        dedupe_key=f"twilio:{cb.call_sid}:{key}",
        **fields,  # type: ignore[arg-type]
    )


def to_events(cb: TwilioCallback, *, bot_hangup: bool = False) -> list[ProviderEvent]:
    """The normalised events of one request (possibly none).

    `bot_hangup` says we hung this call up ourselves: its `completed` status callback may
    arrive before our REST request returns, and must then still read `hangup-bot`.

    Order of precedence, as Twilio puts at most one fact in a request: speech result, digits,
    then the call status. A conversation call's `answered` status callback yields nothing: the
    fetch of its `Url` (same moment) reports the answer, and only that request's TwiML reply can
    carry what the engine says next.
    """
    if not cb.call_sid:
        return []
    if cb.speech:
        return [
            _event(
                cb,
                EventType.SPEECH,
                f"speech:{cb.turn_token or ''}:{cb.nonce}",
                transcript=cb.speech,
                is_final=True,
                confidence=cb.confidence,
                turn_token=cb.turn_token,
            )
        ]
    if cb.digits:
        return [
            _event(
                cb,
                EventType.DTMF,
                f"dtmf:{cb.nonce}:{cb.digits}",
                digits=cb.digits,
                turn_token=cb.turn_token,
            )
        ]
    status = cb.call_status
    status_key = f"{status}:{cb.sequence}"
    if status in TERMINAL_STATES:
        state = end_state(status, notify=cb.notify or bot_hangup)
        return [_event(cb, EventType.ENDED, status_key, end_state=state)]
    if cb.direction is Direction.INBOUND and cb.call_id is None and not cb.is_status:
        # Twilio's voice request for a call to our number: offer it to the policy, answered.
        return [
            _event(cb, kind, key, from_number=cb.from_number, to_number=cb.to_number)
            for kind, key in ((EventType.INITIATED, "offered"), (EventType.ANSWERED, "answered"))
        ]
    if status == "ringing":
        return [_event(cb, EventType.RINGING, status_key)]
    if status in ("in-progress", "answered"):
        if cb.is_status and cb.conversation:
            return []
        return [_event(cb, EventType.ANSWERED, status_key)]
    return []  # queued / initiated: nothing the engine does not already know
