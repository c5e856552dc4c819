"""Events: what providers report (ProviderEvent) and what the engine records (CallEvent).

Providers parse their wire formats into :class:`ProviderEvent` once, at the edge; dicts never
travel further. The engine turns them into :class:`CallEvent` records, which are written to the
store before anything acts on them and are what `voicecall tail` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from daemon.model.state import CallState


class EventType(StrEnum):
    """The event types of SPEC section 5."""

    INITIATED = "call.initiated"
    RINGING = "call.ringing"
    ANSWERED = "call.answered"
    ACTIVE = "call.active"
    SPEAKING = "call.speaking"
    SPEECH = "call.speech"
    DTMF = "call.dtmf"
    MACHINE = "call.machine"
    ENDED = "call.ended"
    ERROR = "call.error"
    TOOL = "call.tool"


class Direction(StrEnum):
    """Who placed the call."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


class CallMode(StrEnum):
    """How an outbound call behaves once answered."""

    NOTIFY = "notify"
    CONVERSATION = "conversation"


class MachineResult(StrEnum):
    """Who answered an outbound call, as machine detection normalises it (SPEC 13)."""

    HUMAN = "human"
    MACHINE = "machine"
    FAX = "fax"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class MachineReport:
    """One machine-detection fact: a verdict, the end of a machine's greeting, or both
    (Twilio `machine_end_beep` says both at once)."""

    result: MachineResult
    raw: str
    """The vendor's own value (`machine_end_beep`, `human_business`, `Machine=true`)."""
    beep_detected: bool | None = None
    greeting_ended: bool = False
    verdict: bool = True
    """False for a greeting-ended signal alone (Telnyx `call.machine.greeting.ended`)."""


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """One normalised fact a provider reported about a call."""

    type: EventType
    provider_call_id: str
    call_id: str | None = None
    """Our own call id when the provider echoed it back (query string, client_state)."""
    direction: Direction | None = None
    from_number: str | None = None
    to_number: str | None = None
    transcript: str | None = None
    is_final: bool = True
    """Speech: a final transcript. DTMF: a complete entry (False: one key of a key-by-key
    report, more may follow)."""
    confidence: float | None = None
    digits: str | None = None
    end_state: CallState | None = None
    """For ENDED: the state the call ends in."""
    error: str | None = None
    turn_token: str | None = None
    """The per-turn token the provider echoed on a speech callback (SPEC section 6)."""
    dedupe_key: str | None = None
    """A provider-unique id of this fact; a repeated key is ignored."""
    previous_provider_call_id: str | None = None
    """Set when the provider re-keys a call (Plivo request_uuid -> CallUUID)."""
    machine: MachineReport | None = None
    """For MACHINE: what machine detection found."""


@dataclass(frozen=True, slots=True)
class CallEvent:
    """A recorded event, as stored and as `voicecall.tail` publishes it."""

    seq: int
    timestamp: str
    call_id: str
    type: EventType
    data: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        """The camelCase JSON shape of SPEC section 5."""
        return {
            "seq": self.seq,
            "timestamp": self.timestamp,
            "callId": self.call_id,
            "type": self.type.value,
            **self.data,
        }
