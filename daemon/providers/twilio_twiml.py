"""TwiML for the Twilio provider: voice mapping, callback URLs and every document we answer.

Pure functions over small step dataclasses, built with the SDK's own
`twilio.twiml.voice_response.VoiceResponse` (escaping and attribute names are then Twilio's).

Two rules shape every document:
- the line never goes quiet: a document that does not end the call ends with a keep-alive
  (`<Pause>` + `<Redirect>` back to the webhook), so a call stays up between turns and Twilio
  never runs out of TwiML (which would hang up);
- every URL we render carries a fresh nonce `n`: Twilio signs URL + params, and a keep-alive
  loop re-posts identical params, so without the nonce the second identical delivery would be
  taken for a replay (SPEC 8.6) and answered with an empty `<Response/>`, which hangs up.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from twilio.twiml.voice_response import VoiceResponse

if TYPE_CHECKING:
    from daemon.model.record import CallRecord

XML_CONTENT_TYPE = "application/xml"
HOLD_SECONDS = 30
"""Length of the keep-alive `<Pause>`; a live update interrupts it at once."""
LISTEN_TIMEOUT_SECONDS = 10
"""`<Gather timeout>`: how long Twilio waits for the caller to start speaking per round."""
DEFAULT_VOICE = "Polly.Joanna"
POLLY_VOICES = {
    "alloy": "Polly.Joanna",
    "echo": "Polly.Matthew",
    "fable": "Polly.Amy",
    "onyx": "Polly.Brian",
    "nova": "Polly.Salli",
    "shimmer": "Polly.Kimberly",
}
"""OpenAI TTS voice names to the Amazon Polly voices Twilio's `<Say>` offers."""


def map_voice(voice: str | None) -> str:
    """The `<Say voice>` for a configured TTS voice: `Polly.*`/`Google.*` pass through."""
    name = (voice or "").strip()
    if name.startswith(("Polly.", "Google.")):
        return name
    return POLLY_VOICES.get(name.lower(), DEFAULT_VOICE)


def callback_url(base: str, **params: str | None) -> str:
    """`base` with `params` (None values left out) added to its query string."""
    parts = urlsplit(base)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


def nonce() -> str:
    """A short random value that makes each rendered callback URL unique (see module doc)."""
    return secrets.token_hex(4)


# ---------------------------------------------------------------------- steps


@dataclass(frozen=True, slots=True)
class Say:
    """`<Say voice=...>text</Say>`."""

    text: str


@dataclass(frozen=True, slots=True)
class Listen:
    """`<Gather input="dtmf speech">` (the caller answers by voice or keypad) whose action
    carries the turn token, then listen again."""

    turn_token: str


@dataclass(frozen=True, slots=True)
class Pause:
    """`<Pause length=...>` (0 renders nothing)."""

    seconds: int


@dataclass(frozen=True, slots=True)
class Digits:
    """`<Play digits=...>`: DTMF tones (`w` is a half-second pause)."""

    digits: str


@dataclass(frozen=True, slots=True)
class HangUp:
    """`<Hangup/>`."""


@dataclass(frozen=True, slots=True)
class Reject:
    """`<Reject/>`: refuse an inbound call without answering it (no charge to the caller).
    ``busy``: the caller hears a busy signal (the daemon has no room now) instead of Twilio's
    not-in-service message (the number does not take this caller)."""

    busy: bool = False


@dataclass(frozen=True, slots=True)
class Stream:
    """`<Connect><Stream>`: a bidirectional media stream, bound by a per-call token.

    Twilio drops query strings from stream URLs, so the token travels as a `<Parameter>`.
    """

    url: str
    token: str
    call_id: str


Step = Say | Listen | Pause | Digits | HangUp | Reject | Stream
_FINAL = (HangUp, Reject, Stream, Listen)
"""Steps after which nothing else is rendered (they end the call or loop on their own)."""


@dataclass(slots=True)
class PendingReply:
    """The TwiML answer of the voice request being handled, open while its events apply."""

    call_sid: str
    call_id: str | None
    steps: list[Step] = field(default_factory=list)
    listen: str | None = None
    """The turn token to `<Gather>` for after the steps."""
    open: bool = True
    end: Step | None = None
    """`<Hangup/>`, `<Reject/>` or `<Connect><Stream>`: the last verb; nothing may follow."""

    def serves(self, call: CallRecord) -> bool:
        """Whether speech for `call` belongs in this reply (still open, same call)."""
        if not self.open or self.end is not None:
            return False
        if self.call_id is not None and call.call_id == self.call_id:
            return True
        return bool(self.call_sid) and call.provider_call_id == self.call_sid

    def document(self) -> list[Step]:
        """The steps to render: what was collected, then the final verb or the listening."""
        if self.end is not None:
            return [*self.steps, self.end]
        return [*self.steps, Listen(self.listen)] if self.listen else list(self.steps)


@dataclass(frozen=True, slots=True)
class TwimlContext:
    """What a document needs besides its steps."""

    webhook_url: str
    call_id: str | None
    voice: str


def _url(ctx: TwimlContext, **params: str | None) -> str:
    return callback_url(ctx.webhook_url, callId=ctx.call_id, **params, n=nonce())


def _listen(response: VoiceResponse, ctx: TwimlContext, token: str) -> None:
    response.gather(
        input="dtmf speech",
        speech_timeout="auto",
        timeout=LISTEN_TIMEOUT_SECONDS,
        action=_url(ctx, turnToken=token),
        method="POST",
    )
    # Silence ends the Gather without an action request: come back and listen again.
    response.redirect(_url(ctx, flow="listen", turnToken=token), method="POST")


def _hold(response: VoiceResponse, ctx: TwimlContext) -> None:
    response.pause(length=HOLD_SECONDS)
    response.redirect(_url(ctx, flow="hold"), method="POST")


def render(steps: Sequence[Step], ctx: TwimlContext) -> str:
    """A TwiML document for `steps`, ending with a keep-alive unless a step ends it."""
    response = VoiceResponse()
    for step in steps:
        if isinstance(step, Say):
            response.say(step.text, voice=ctx.voice)
        elif isinstance(step, Listen):
            _listen(response, ctx, step.turn_token)
        elif isinstance(step, Pause):
            if step.seconds > 0:
                response.pause(length=step.seconds)
        elif isinstance(step, Digits):
            response.play(digits=step.digits)
        elif isinstance(step, HangUp):
            response.hangup()
        elif isinstance(step, Reject):
            response.reject(reason="busy" if step.busy else None)
        elif isinstance(step, Stream):
            stream = response.connect().stream(url=step.url)
            stream.parameter(name="token", value=step.token)
            stream.parameter(name="callId", value=step.call_id)
        if isinstance(step, _FINAL):
            return str(response)
    _hold(response, ctx)
    return str(response)


def notify_twiml(text: str, voice: str, delay_seconds: int) -> str:
    """The inline `Twiml` of a notify call: say, wait after playback, hang up."""
    return render([Say(text), Pause(delay_seconds), HangUp()], TwimlContext("", None, voice))


@functools.cache
def empty_response() -> str:
    """`<Response/>`: what status callbacks and replays get (Twilio ignores the body).

    Built once: status callbacks are the bulk of webhook traffic.
    """
    return str(VoiceResponse())
