"""Plivo Voice wire format: callback parsing, end-state mapping and Plivo XML. Pure.

Everything here is synchronous and free of I/O so unit tests can assert exact events and exact
XML; `daemon.providers.plivo` adds the REST client and the per-webhook reply around it. Plivo's
CamelCase parameter names appear only in this module and in `plivo.py` (style guide 2.2).

What we ask Plivo to do is a short list of :data:`Step` values (say, listen, pause, hang up),
rendered into Plivo XML with the SDK's builder (`plivo.plivoxml`), so escaping and attribute
names are Plivo's own. Every rendered document ends in something that keeps the call alive or
ends it on purpose: a `<GetInput>` is followed by a `<Redirect>` back to itself (Plivo's
`executionTimeout` tops out at 60 s, the caller may take longer), and plain speech by a
`<Wait length="300"/>` plus a `<Redirect>` to a keep-alive, so a conversation never drops
because Plivo ran out of XML ("End Of XML Instructions", hangup cause 4010).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from plivo import plivoxml

from daemon.model.events import Direction, EventType, ProviderEvent
from daemon.model.state import CallState

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
EMPTY_RESPONSE = XML_DECLARATION + "<Response></Response>"
KEEPALIVE_SECONDS = 300
LISTEN_TIMEOUT_SECONDS = 60
"""`<GetInput executionTimeout>`: Plivo allows 5-60 s; the `<Redirect>` after it re-listens."""
SPEECH_END_TIMEOUT_SECONDS = 2
DEFAULT_LANGUAGE = "en-US"

SPEECH_PARAMS = (
    "Speech",
    "Transcription",
    "TranscriptionText",
    "SpeechResult",
    "RecognizedSpeech",
    "Text",
)
"""Where a speech result may arrive; Plivo's `<GetInput>` posts `Speech`."""

TERMINAL_STATUSES = frozenset(
    {
        "completed",
        "busy",
        "no-answer",
        "no_answer",
        "failed",
        "cancel",
        "canceled",
        "cancelled",
        "timeout",
    }
)

_POLLY = {
    "alloy": "Polly.Joanna",
    "echo": "Polly.Matthew",
    "fable": "Polly.Amy",
    "onyx": "Polly.Brian",
    "nova": "Polly.Salli",
    "shimmer": "Polly.Kimberly",
}


def map_voice(voice: str | None) -> str:
    """The `<Speak voice>` for our TTS voice: OpenAI names map to Amazon Polly voices, which
    Plivo speaks as `Polly.<Name>`; `WOMAN`, `MAN` and `Polly.*` pass through."""
    name = (voice or "").strip()
    if name.upper() in ("WOMAN", "MAN"):
        return name.upper()
    if name.startswith("Polly."):
        return name
    return _POLLY.get(name.lower(), "Polly.Joanna")


# ---------------------------------------------------------------------------------- end states


def map_end_state(status: str | None, hangup_source: str | None = None) -> CallState:
    """Our end state for a Plivo hang-up callback (`CallStatus`, `HangupSource`).

    `busy`, `no-answer`, `failed` and `cancel` (hangup cause 1000, canceled through the API
    before answer) map directly; `timeout` is the carrier or network giving up while connecting
    (hangup cause 3000), not a callee who let it ring, so it is `failed` (SPEC 10). A
    `completed` call is refined by who hung up: "API Request" and "Answer XML" (our
    `<Hangup/>`) are the bot, "Caller", "Callee"/"Call recipient" and "Carrier" the person on
    the phone.
    """
    value = (status or "").strip().lower()
    if value == "busy":
        return CallState.BUSY
    if value in ("no-answer", "no_answer"):
        return CallState.NO_ANSWER
    if value in ("failed", "timeout"):
        return CallState.FAILED
    if value in ("cancel", "canceled", "cancelled"):
        return CallState.HANGUP_BOT
    source = (hangup_source or "").strip().lower()
    if source in ("api request", "answer xml"):
        return CallState.HANGUP_BOT
    if source in ("caller", "callee", "call recipient", "carrier"):
        return CallState.HANGUP_USER
    return CallState.COMPLETED


def map_cdr_state(
    call_state: str | None, hangup_source: str | None, *, answered: bool
) -> CallState:
    """Our end state from a call detail record (`GET /Call/{uuid}/`) after a restart.

    A record whose `call_state` says nothing decisive is `completed` only if the call was
    answered (`answer_time` set); Plivo's own fixture of an unanswered call has neither, and
    that call is `no-answer`.
    """
    value = (call_state or "").strip().upper().replace("-", "_")
    status = {
        "BUSY": "busy",
        "NO_ANSWER": "no-answer",
        "TIMEOUT": "timeout",
        "EXPIRED": "no-answer",
        "CANCEL": "cancel",
        "CANCELED": "cancel",
        "FAILED": "failed",
    }.get(value)
    if status is None:
        status = "completed" if answered else "no-answer"
    return map_end_state(status, hangup_source)


# ---------------------------------------------------------------------------------- callbacks


@dataclass(frozen=True, slots=True)
class PlivoCallback:
    """One parsed Plivo request (answer, ring, hangup, GetInput action or XML fetch)."""

    flow: str
    call_id: str | None
    call_uuid: str | None
    request_uuid: str | None
    status: str
    direction: Direction | None
    from_number: str | None
    to_number: str | None
    speech: str | None
    confidence: float | None
    digits: str | None
    turn_token: str | None
    hangup_source: str | None
    event: str
    key: str | None
    """The stash key of an XML fetch (`flow=xml`)."""

    @property
    def provider_call_id(self) -> str:
        """CallUUID once Plivo has one, else the RequestUUID of our create request."""
        return self.call_uuid or self.request_uuid or ""

    @property
    def is_terminal(self) -> bool:
        """A hang-up report (hangup_url, or a terminal CallStatus anywhere)."""
        return self.status in TERMINAL_STATUSES or self.event.lower() == "hangup"


def _first(form: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = (form.get(name) or "").strip()
        if value:
            return value
    return None


def _confidence(text: str | None) -> float | None:
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return None if value is None else max(0.0, min(1.0, value))


def parse_callback(query: Mapping[str, str], form: Mapping[str, str]) -> PlivoCallback:
    """Read our query parameters (`flow`, `callId`, `turnToken`, `key`) and Plivo's form body."""
    direction_text = (form.get("Direction") or "").lower()
    direction = (
        Direction.INBOUND
        if direction_text == "inbound"
        else Direction.OUTBOUND
        if direction_text.startswith("outbound")
        else None
    )
    return PlivoCallback(
        flow=(query.get("flow") or "answer").strip().lower(),
        call_id=(query.get("callId") or "").strip() or None,
        call_uuid=_first(form, "CallUUID", "ALegUUID"),
        request_uuid=_first(form, "RequestUUID", "ALegRequestUUID"),
        status=(form.get("CallStatus") or "").strip().lower(),
        direction=direction,
        from_number=_first(form, "From"),
        to_number=_first(form, "To"),
        speech=_first(form, *SPEECH_PARAMS),
        confidence=_confidence(_first(form, "SpeechConfidenceScore", "Confidence")),
        digits=_first(form, "Digits"),
        turn_token=(query.get("turnToken") or "").strip() or None,
        hangup_source=_first(form, "HangupSource"),
        event=(form.get("Event") or "").strip(),
        key=(query.get("key") or "").strip() or None,
    )


def to_events(cb: PlivoCallback) -> list[ProviderEvent]:
    """The normalised events of one callback.

    Every event carries `previous_provider_call_id` = RequestUUID once the CallUUID is known, so
    the engine re-keys an outbound call from the id `POST /Call/` returned to the real one.
    """
    pid = cb.provider_call_id
    if not pid:
        return []
    previous = cb.request_uuid if cb.call_uuid and cb.request_uuid != cb.call_uuid else None
    common: dict[str, Any] = {"call_id": cb.call_id, "previous_provider_call_id": previous}
    if cb.is_terminal:
        return [
            ProviderEvent(
                EventType.ENDED,
                pid,
                end_state=map_end_state(cb.status, cb.hangup_source),
                dedupe_key=f"plivo:hangup:{pid}",
                **common,
            )
        ]
    events: list[ProviderEvent] = []
    if cb.flow == "getinput":
        if cb.speech:
            digest = hashlib.sha256(cb.speech.encode()).hexdigest()[:16]
            events.append(
                ProviderEvent(
                    EventType.SPEECH,
                    pid,
                    transcript=cb.speech,
                    is_final=True,
                    confidence=cb.confidence,
                    turn_token=cb.turn_token,
                    dedupe_key=f"plivo:speech:{pid}:{cb.turn_token or '-'}:{digest}",
                    **common,
                )
            )
        if cb.digits:
            events.append(
                ProviderEvent(
                    EventType.DTMF,
                    pid,
                    digits=cb.digits,
                    turn_token=cb.turn_token,
                    dedupe_key=f"plivo:dtmf:{pid}:{cb.turn_token or '-'}:{cb.digits}",
                    **common,
                )
            )
        return events
    if cb.flow == "ring" or (cb.status == "ringing" and cb.direction is not Direction.INBOUND):
        return [ProviderEvent(EventType.RINGING, pid, **common)]
    if cb.flow == "answer":
        # Plivo fetches the answer URL when an outbound call is answered, and when an inbound
        # call arrives (it is answered as soon as our XML starts). No dedupe key: the engine
        # treats a repeated answer as a no-op, and an inbound answer is also its first event.
        return [
            ProviderEvent(
                EventType.ANSWERED,
                pid,
                direction=cb.direction,
                from_number=cb.from_number,
                to_number=cb.to_number,
                **common,
            )
        ]
    return []


# ---------------------------------------------------------------------------------- XML


@dataclass(frozen=True, slots=True)
class Say:
    """Speak `text` with Plivo's TTS."""

    text: str


@dataclass(frozen=True, slots=True)
class Listen:
    """Listen for one caller turn (optionally after a prompt), tagged with `turn_token`."""

    prompt: str | None
    turn_token: str


@dataclass(frozen=True, slots=True)
class Pause:
    """Silence (notify: the delay between the message and the hang-up)."""

    seconds: int


@dataclass(frozen=True, slots=True)
class HangUp:
    """End the call from the XML (HangupSource "Answer XML")."""

    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Stream:
    """Hand the call to our media websocket (bidirectional, mu-law 8 kHz) for good.

    `url` already carries `?token=..&callId=..`: Plivo has no per-stream custom parameters,
    and it keeps the query string of a `<Stream>` URL.
    """

    url: str


Step = Say | Listen | Pause | HangUp | Stream

STREAM_CONTENT_TYPE = "audio/x-mulaw;rate=8000"


def callback_url(base: str, **params: str | None) -> str:
    """`base` with our query parameters added (kept short: Plivo signs the whole URL)."""
    parts = urlsplit(base)
    extra = urlencode([(k, v) for k, v in params.items() if v])
    query = f"{parts.query}&{extra}" if parts.query and extra else parts.query or extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


@dataclass(frozen=True, slots=True)
class XmlContext:
    """What rendering needs besides the steps."""

    webhook_url: str
    call_id: str | None
    voice: str
    language: str = DEFAULT_LANGUAGE


def _speak(text: str, ctx: XmlContext) -> plivoxml.SpeakElement:
    return plivoxml.SpeakElement(text, voice=ctx.voice, language=ctx.language)


def _redirect(
    ctx: XmlContext, flow: str, turn_token: str | None = None
) -> plivoxml.RedirectElement:
    url = callback_url(ctx.webhook_url, flow=flow, callId=ctx.call_id, turnToken=turn_token)
    return plivoxml.RedirectElement(url, method="POST")


def render(steps: Sequence[Step], ctx: XmlContext) -> str:
    """Plivo XML for `steps`, ending in a listen loop, a hang-up, a stream or a keep-alive."""
    response = plivoxml.ResponseElement()
    for step in steps:
        if isinstance(step, Say):
            response.add(_speak(step.text, ctx))
        elif isinstance(step, Pause):
            if step.seconds > 0:
                response.add(plivoxml.WaitElement(length=step.seconds))
        elif isinstance(step, HangUp):
            response.add(plivoxml.HangupElement(reason=step.reason))
            return _document(response)
        elif isinstance(step, Stream):
            # keepCallAlive: the call stays on the stream until the socket closes; nothing
            # after it runs before then, so the stream ends the document.
            response.add(
                plivoxml.StreamElement(
                    step.url,
                    bidirectional=True,
                    audioTrack="inbound",
                    contentType=STREAM_CONTENT_TYPE,
                    keepCallAlive=True,
                )
            )
            return _document(response)
        else:
            response.add(_listen(step, ctx))
            response.add(_redirect(ctx, "listen", step.turn_token))
            return _document(response)
    response.add(plivoxml.WaitElement(length=KEEPALIVE_SECONDS))
    response.add(_redirect(ctx, "keepalive"))
    return _document(response)


def _document(response: Any) -> str:
    return XML_DECLARATION + str(response.to_string(False))


def _listen(step: Listen, ctx: XmlContext) -> plivoxml.GetInputElement:
    action = callback_url(
        ctx.webhook_url, flow="getinput", callId=ctx.call_id, turnToken=step.turn_token
    )
    element = plivoxml.GetInputElement(
        action=action,
        method="POST",
        input_type="dtmf speech",
        execution_timeout=LISTEN_TIMEOUT_SECONDS,
        speech_end_timeout=SPEECH_END_TIMEOUT_SECONDS,
        language=ctx.language,
        redirect=True,
    )
    if step.prompt:
        element.add(_speak(step.prompt, ctx))
    return element


def stream_url(base: str, token: str, call_id: str) -> str:
    """The `<Stream>` URL of one call: `base?token=..&callId=..` (the media server reads
    `token` from the query; the call is found by Plivo's `start.callId`, the CallUUID)."""
    return callback_url(base, token=token, callId=call_id)


def form_dict(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """First value of each form parameter (Plivo never repeats one)."""
    result: dict[str, str] = {}
    for name, value in pairs:
        result.setdefault(name, value)
    return result
