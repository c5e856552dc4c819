"""The one interface every telephony provider implements (SPEC section 10).

The engine speaks to providers only through :class:`Provider`; a provider speaks back only through
the :data:`EventSink` it is bound to. Webhook transport concerns (paths, limits, signatures, replay)
live in `daemon.webhooks`; a provider only verifies, parses and answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from daemon.model.events import CallMode, ProviderEvent
from daemon.model.record import CallRecord
from daemon.model.state import CallState
from daemon.model.webhook import WebhookReply

if TYPE_CHECKING:
    from daemon.config.model import Config, MachineDetectionConfig
    from daemon.providers.streaming import MediaHubLike


class ReplyDraft(Protocol):
    """The answer a provider is building for the webhook it is handling right now (Twilio
    TwiML, Plivo XML), into which the engine's actions for that delivery can be folded.

    The provider makes one per webhook and passes it to the :class:`EventSink` with that
    webhook's events; the engine hands it back, unopened, to each action it takes for them in
    the same task (`speak`, `play_and_hangup`, `hangup`, `reject`). A provider folds an action
    into the draft it made when `serves` holds, and sends anything else by REST. The draft is
    closed once the sink returns. Nothing else carries it: no context variable, no global.
    """

    def serves(self, call: CallRecord) -> bool:
        """Whether an action on `call` still belongs in this answer."""


class EventSink(Protocol):
    """How a provider hands events to the engine; returns once they are stored and applied
    (and the follow-ups taken, with `reply` passed to them)."""

    def __call__(
        self, events: Sequence[ProviderEvent], reply: ReplyDraft | None = None
    ) -> Awaitable[None]:
        """Store, apply and publish `events` in order."""


@dataclass(frozen=True, slots=True)
class DialRequest:
    """Everything a provider needs to place one outbound call."""

    call_id: str
    to_number: str
    from_number: str
    mode: CallMode
    message: str
    ring_timeout_seconds: int
    notify_hangup_delay_seconds: int
    machine_detection: MachineDetectionConfig | None = None
    """Set when the provider must detect answering machines on this call (SPEC 13)."""


class RemoteState(StrEnum):
    """What the provider's status API says about a call (restart reconciliation)."""

    LIVE = "live"
    ENDED = "ended"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class RemoteStatus:
    """The provider's view of one call."""

    state: RemoteState
    end_state: CallState | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """A webhook request that passed the transport checks, with its body read."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    headers: Mapping[str, str]
    """Case-insensitive mapping of the request headers."""
    body: bytes
    remote: str | None
    verify_url: str
    """The URL as the provider signed it (public origin + request path and query)."""

    def query_value(self, name: str) -> str | None:
        """The first value of a query parameter."""
        for key, value in self.query:
            if key == name:
                return value
        return None


@dataclass(slots=True)
class ProviderContext:
    """What the daemon hands a provider when it starts it."""

    config: Config
    webhook_url: str
    """The webhook URL as the provider must call it (public URL, tunnel or local)."""
    stream_url: str | None = None
    """The media-stream websocket URL (wss://...) when streaming is enabled."""
    media: MediaHubLike | None = None
    """The media hub when streaming is on (the daemon sets it once the hub exists)."""


class WebhookPlane(Protocol):
    """What the webhook server needs of a provider, and nothing more: verify, handle, replay.

    :class:`Provider` includes it; the server is typed against this narrow part.
    """

    name: str

    def has_signature_headers(self, headers: Mapping[str, str]) -> bool:
        """True when the request carries this provider's signature headers (checked pre-body)."""

    def verify(self, request: WebhookRequest) -> str:
        """Check the signature; return the replay key. Raise WebhookSignatureError."""

    async def handle_webhook(self, request: WebhookRequest) -> WebhookReply:
        """Parse a verified webhook, feed its events to the sink, render the reply."""

    def replay_reply(self, first: WebhookReply | None) -> WebhookReply:
        """The answer to a replayed delivery, given the first delivery's answer if remembered."""


@runtime_checkable
class Provider(Protocol):
    """A telephony provider: control plane (REST) and webhook plane."""

    name: str

    def bind(self, sink: EventSink, context: ProviderContext) -> None:
        """Attach the engine's event sink and the daemon context; called once before start."""

    async def start(self) -> None:
        """Open clients; called once the webhook server is up."""

    async def close(self) -> None:
        """Release clients and timers."""

    async def place_call(self, request: DialRequest) -> str:
        """Dial; return the provider's call id. Raise ProviderError on refusal."""

    async def play_and_hangup(
        self,
        call: CallRecord,
        text: str,
        delay_seconds: float,
        *,
        reply: ReplyDraft | None = None,
    ) -> None:
        """Notify mode: speak `text`, wait `delay_seconds` after playback ends, hang up.

        `reply` (here and below): the draft of the webhook answer being handled, if any."""

    async def speak(
        self,
        call: CallRecord,
        text: str,
        *,
        turn_token: str | None,
        reply: ReplyDraft | None = None,
    ) -> None:
        """Speak `text`; with a turn token, listen afterwards and tag transcripts with it."""

    async def send_dtmf(self, call: CallRecord, digits: str) -> None:
        """Send DTMF digits on a connected call."""

    async def answer(self, call: CallRecord) -> None:
        """Accept an inbound call the policy admitted."""

    async def reject(
        self, call: CallRecord, *, reply: ReplyDraft | None = None, busy: bool = False
    ) -> None:
        """Refuse an inbound call (hang it up once): one the policy refused, or with ``busy``
        one the daemon has no room for now (the caller hears a busy signal where the provider
        has one, and may try again)."""

    async def hangup(self, call: CallRecord, *, reply: ReplyDraft | None = None) -> None:
        """Hang up; a call already ended at the provider is not an error."""

    async def fetch_status(self, call: CallRecord) -> RemoteStatus:
        """Ask the provider about a call after a restart; errors give UNKNOWN, never ENDED."""

    def has_signature_headers(self, headers: Mapping[str, str]) -> bool:
        """True when the request carries this provider's signature headers (checked pre-body)."""

    def verify(self, request: WebhookRequest) -> str:
        """Check the signature; return the replay key. Raise WebhookSignatureError."""

    async def handle_webhook(self, request: WebhookRequest) -> WebhookReply:
        """Parse a verified webhook, feed its events to the sink, render the reply."""

    def replay_reply(self, first: WebhookReply | None) -> WebhookReply:
        """The answer to a replayed delivery, given the first delivery's answer if remembered.

        Twilio answers an empty `<Response/>`; the others repeat the first answer.
        """
