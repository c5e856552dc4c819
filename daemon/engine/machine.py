"""Answering-machine policy (SPEC 13): what an outbound call does once detection has spoken.

Pure decisions and the per-call bookkeeping; the engine (`daemon.engine.calls`) does the
waiting, speaking and hanging up. The rules:
- an outbound call with detection on says nothing until the verdict (at most the provider's
  decision time, `timeout_seconds` as it applies it, plus a grace), so neither a person nor a
  voicemail box hears half a message; no verdict in time counts as `unknown` and the call goes
  on as for a person;
- `human` and `unknown` go on as usual; `fax` is hung up at once (state `voicemail`): nothing
  can be said to a fax; `machine` follows `on_machine_notify` (notify calls) or
  `on_machine_conversation` (conversation calls);
- `leave-message` waits for the end of the greeting (the provider's beep / greeting-ended
  signal, else `greeting_timeout_seconds`), speaks the call's message, hangs up: `voicemail`;
- `hangup` hangs up at once: `voicemail`; `continue` only publishes the event;
- a verdict that arrives after the call went on as for a person still hangs up a conversation
  call whose policy is `hangup` (and any fax); otherwise it is only recorded;
- a call restored after a restart while detection was deciding is held again (a verdict stored
  before the restart is acted on at once).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from daemon.model.events import CallMode, Direction, MachineReport, MachineResult
from daemon.model.state import CallState

if TYPE_CHECKING:
    from daemon.config.model import MachineDetectionConfig
    from daemon.model.record import CallRecord

VERDICT_GRACE_SECONDS = 2.0
"""Added to the provider's decision time: its verdict still has to travel to us."""
VOICEMAIL_ENDINGS = frozenset({CallState.COMPLETED, CallState.HANGUP_BOT, CallState.HANGUP_USER})
"""End states that become `voicemail` once a call was handled as reaching a machine."""


class MachineAction(StrEnum):
    """What the call does about a verdict."""

    PROCEED = "proceed"
    HANGUP = "hangup"
    LEAVE_MESSAGE = "leave-message"


_POLICIES = {
    "hangup": MachineAction.HANGUP,
    "leave-message": MachineAction.LEAVE_MESSAGE,
    "continue": MachineAction.PROCEED,
}


def decide(
    result: MachineResult, mode: CallMode, settings: MachineDetectionConfig
) -> MachineAction:
    """The action for a verdict on a call of `mode`."""
    if result is MachineResult.FAX:
        return MachineAction.HANGUP
    if result is not MachineResult.MACHINE:
        return MachineAction.PROCEED
    policy = (
        settings.on_machine_notify if mode is CallMode.NOTIFY else settings.on_machine_conversation
    )
    return _POLICIES.get(policy, MachineAction.HANGUP)


def late_action(
    result: MachineResult, mode: CallMode, settings: MachineDetectionConfig
) -> MachineAction:
    """The action for a verdict that came after the call already went on as for a person:
    only hanging up still makes sense (a message already started cannot be re-placed)."""
    action = decide(result, mode, settings)
    return MachineAction.HANGUP if action is MachineAction.HANGUP else MachineAction.PROCEED


def hold_seconds(decision_seconds: float) -> float:
    """How long an answered call waits for the verdict before going on as for a person: the
    provider's decision time (`timeout_seconds`, as the provider applies it) plus a grace."""
    return decision_seconds + VERDICT_GRACE_SECONDS


@dataclass(slots=True)
class MachineWatch:
    """Machine detection of one live call: the verdict and the end of the greeting."""

    verdict: asyncio.Future[MachineReport] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    greeting_ended: asyncio.Event = field(default_factory=asyncio.Event)
    decided: bool = False
    """The hold is over (verdict acted on, or timed out): later verdicts are late."""
    voicemail: bool = False
    """The call was handled as reaching a machine: however it ends, it ends `voicemail`."""

    def report(self, report: MachineReport) -> bool:
        """Take a provider report; True when it is the first verdict."""
        if report.greeting_ended:
            self.greeting_ended.set()
        if self.verdict.done():
            return False
        self.verdict.set_result(report)
        return True

    def end_state(self, state: CallState) -> CallState:
        """The state a call ends in, `voicemail` once it was handled as a machine."""
        return CallState.VOICEMAIL if self.voicemail and state in VOICEMAIL_ENDINGS else state


def restore_watch(record: CallRecord) -> MachineWatch | None:
    """The watch of a call restored after a restart while detection was still deciding for it
    (an outbound call with detection that has said nothing yet); None for any other call.

    A verdict stored before the restart (`metadata.answeredBy`) is taken as already reported,
    so the restored hold acts on it at once.
    """
    if record.direction is not Direction.OUTBOUND or not record.metadata.get("machineDetection"):
        return None
    if any(entry.speaker == "bot" for entry in record.transcript):
        return None  # the call already went on (or left its message)
    watch = MachineWatch()
    answered_by = record.metadata.get("answeredBy")
    if answered_by in set(MachineResult):
        beep = record.metadata.get("beepDetected")
        watch.report(
            MachineReport(
                MachineResult(answered_by),
                str(record.metadata.get("answeredByRaw") or answered_by),
                beep_detected=beep if isinstance(beep, bool) else None,
                greeting_ended=isinstance(beep, bool),
            )
        )
    return watch


def event_data(report: MachineReport) -> dict[str, Any]:
    """The type-specific fields of a `call.machine` event."""
    data: dict[str, Any] = {"result": report.result.value}
    if report.beep_detected is not None:
        data["beepDetected"] = report.beep_detected
    if report.greeting_ended:
        data["greetingEnded"] = True
    return data


def note_metadata(record: CallRecord, report: MachineReport) -> None:
    """`metadata.answeredBy` (normalised) and `answeredByRaw` (the vendor's value).

    A greeting-ended signal alone fills them only when no verdict came before it (Telnyx may
    report a beep before its verdict).
    """
    if report.verdict or "answeredBy" not in record.metadata:
        record.metadata["answeredBy"] = report.result.value
        record.metadata["answeredByRaw"] = report.raw
    if report.beep_detected is not None:
        record.metadata["beepDetected"] = report.beep_detected
