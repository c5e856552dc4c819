"""Runtime state the engine keeps for a live call, beside its durable record."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from daemon.engine.machine import MachineWatch
from daemon.model.record import CallRecord


@dataclass(slots=True)
class TranscriptWaiter:
    """A `continue` waiting for the caller's next final transcript."""

    turn_token: str
    future: asyncio.Future[str]
    started: float = field(default_factory=time.monotonic)
    """When the turn began (before our speech)."""
    listen_started: float = field(default_factory=time.monotonic)
    """When we began listening (after our speech was handed to the provider)."""


@dataclass(slots=True)
class LiveCall:
    """A live call: its record plus locks, timers and the current turn."""

    record: CallRecord
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    turn_token: str | None = None
    """The token of the current listening turn; transcripts with another token are stale."""
    waiter: TranscriptWaiter | None = None
    max_duration_timer: asyncio.TimerHandle | None = None
    resume_timer: asyncio.TimerHandle | None = None
    """A restored notify call's pending hang-up."""
    responder_task: asyncio.Task[None] | None = None
    initial_message: str | None = None
    """What to say once answered (outbound message or inbound greeting)."""
    reaping: bool = False
    opening_lost: bool = False
    """The answer was stored but the opening line after it could not be (store fault): the
    next delivery of the answer (the provider's retry) says it."""
    rejection_lost: bool = False
    """An inbound call refused whose end could not be stored (store fault): the provider's
    retry of the offer finishes the rejection."""
    rejected_busy: bool = False
    """That refusal was for want of room (a busy signal), not the policy's."""
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the call is answered or has ended (operations wait for it while it rings)."""
    machine: MachineWatch | None = None
    """Machine detection of an outbound call that asked for it (SPEC 13)."""
    dtmf_entry: str = ""
    """Keys pressed so far during the current `continue` (answered as one entry)."""
    dtmf_timer: asyncio.TimerHandle | None = None
    """Ends a key-by-key entry after a gap."""

    def reset_dtmf(self) -> None:
        """Forget a half-typed entry (its turn is over)."""
        self.dtmf_entry = ""
        if self.dtmf_timer is not None:
            self.dtmf_timer.cancel()
            self.dtmf_timer = None

    def cancel_timers(self) -> None:
        """Stop every timer and background task of this call."""
        for timer in (self.max_duration_timer, self.resume_timer):
            if timer is not None:
                timer.cancel()
        self.max_duration_timer = self.resume_timer = None
        self.reset_dtmf()
        if self.responder_task is not None and not self.responder_task.done():
            self.responder_task.cancel()
        self.responder_task = None
