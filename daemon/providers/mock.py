"""The network-free provider (SPEC section 10).

It behaves like a carrier would, on timers: it answers after `mock.answer_delay_ms` (or reports
busy, no-answer or failed per `mock.outcome`), "plays" speech instantly, and when asked to listen
it answers with the next of `mock.replies` (cycled; an empty list means the caller never speaks).
Simulated inbound calls (`mock.inbound`) go through the engine's real policy path. It accepts no
webhooks: every webhook is refused as unsigned, so the security pipeline still runs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from daemon.errors import CallNotFoundError, WebhookSignatureError
from daemon.model.events import Direction, EventType, MachineReport, MachineResult, ProviderEvent
from daemon.model.record import CallRecord
from daemon.model.state import CallState
from daemon.model.webhook import WebhookReply
from daemon.providers.base import (
    DialRequest,
    RemoteState,
    RemoteStatus,
    ReplyDraft,
    WebhookRequest,
)
from daemon.providers.bound import BoundProvider

logger = logging.getLogger(__name__)

_OUTCOMES = {
    "busy": CallState.BUSY,
    "no-answer": CallState.NO_ANSWER,
    "failed": CallState.FAILED,
}


MOCK_VERDICT_SECONDS = 0.05
"""How long after answering the mock's machine detection decides."""
MOCK_BEEP_SECONDS = 0.5
"""How long after the verdict the mock voicemail greeting ends with its beep (SPEC 13)."""


class MockProvider(BoundProvider):
    """A provider whose carrier is a handful of timers."""

    name = "mock"

    def __init__(self) -> None:
        super().__init__()
        self._replies: dict[str, itertools.cycle[str] | None] = {}
        self._utterances: dict[str, list[str]] = {}
        self._ended: set[str] = set()

    @property
    def _mock(self) -> Any:
        return self._config.mock

    async def start(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Cancel pending timers."""
        await self._tasks.cancel()

    def _later(self, delay: float, events: Sequence[ProviderEvent]) -> None:
        async def _emit() -> None:
            if delay > 0:
                await asyncio.sleep(delay)
            assert self._sink is not None
            await self._sink(events)

        self._tasks.spawn(_emit(), "mock-carrier")

    # ------------------------------------------------------------------ control plane

    async def place_call(self, request: DialRequest) -> str:
        """'Dial': schedule ringing, then the configured outcome."""
        provider_id = f"mock-{request.call_id}"
        replies = tuple(self._mock.replies)
        self._replies[provider_id] = itertools.cycle(replies) if replies else None
        delay = self._mock.answer_delay_ms / 1000.0
        outcome = _OUTCOMES.get(self._mock.outcome)
        ringing = ProviderEvent(EventType.RINGING, provider_id, call_id=request.call_id)
        self._later(0, [ringing])
        if outcome is None:
            answered = ProviderEvent(EventType.ANSWERED, provider_id, call_id=request.call_id)
            self._later(delay, [answered])
            if request.machine_detection is not None:
                self._detect(request, provider_id, delay)
        else:
            ended = ProviderEvent(
                EventType.ENDED, provider_id, call_id=request.call_id, end_state=outcome
            )
            self._later(delay, [ended])
        return provider_id

    def _detect(self, request: DialRequest, provider_id: str, answered_after: float) -> None:
        """Machine detection: `outcome = "machine"` is a voicemail box whose greeting ends with
        a beep 500 ms after its verdict (reported only in `detect-beep` mode); anything that
        answers otherwise is a person."""
        settings = request.machine_detection
        assert settings is not None
        after = answered_after + MOCK_VERDICT_SECONDS
        machine = self._mock.outcome == "machine"
        verdict = MachineReport(
            MachineResult.MACHINE if machine else MachineResult.HUMAN,
            "machine" if machine else "human",
        )
        self._later(
            after,
            [
                ProviderEvent(
                    EventType.MACHINE,
                    provider_id,
                    call_id=request.call_id,
                    machine=verdict,
                    dedupe_key=f"mock:{provider_id}:verdict",
                )
            ],
        )
        if machine and settings.mode == "detect-beep":
            beep = MachineReport(
                MachineResult.MACHINE,
                "beep",
                beep_detected=True,
                greeting_ended=True,
                verdict=False,
            )
            self._later(
                after + MOCK_BEEP_SECONDS,
                [
                    ProviderEvent(
                        EventType.MACHINE,
                        provider_id,
                        call_id=request.call_id,
                        machine=beep,
                        dedupe_key=f"mock:{provider_id}:beep",
                    )
                ],
            )

    async def play_and_hangup(
        self,
        call: CallRecord,
        text: str,
        delay_seconds: float,
        *,
        reply: ReplyDraft | None = None,
    ) -> None:
        """Playback is instant; hang up `delay_seconds` later."""
        pid = self._pid(call)
        self._later(
            delay_seconds,
            [
                ProviderEvent(
                    EventType.ENDED, pid, call_id=call.call_id, end_state=CallState.HANGUP_BOT
                )
            ],
        )

    async def speak(
        self,
        call: CallRecord,
        text: str,
        *,
        turn_token: str | None,
        reply: ReplyDraft | None = None,
    ) -> None:
        """Instant playback; with a turn token the caller answers with the next reply."""
        if turn_token is None:
            return
        pid = self._pid(call)
        caller_says = self._next_reply(pid)
        if caller_says is not None:
            self._later(
                0,
                [
                    ProviderEvent(
                        EventType.SPEECH,
                        pid,
                        call_id=call.call_id,
                        transcript=caller_says,
                        is_final=True,
                        confidence=1.0,
                        turn_token=turn_token,
                    )
                ],
            )

    def _next_reply(self, pid: str) -> str | None:
        if pid in self._utterances:
            queue = self._utterances[pid]
            return queue.pop(0) if queue else None
        if pid not in self._replies:  # restored after a restart
            replies = tuple(self._mock.replies)
            self._replies[pid] = itertools.cycle(replies) if replies else None
        cycle = self._replies[pid]
        return next(cycle) if cycle is not None else None

    async def send_dtmf(self, call: CallRecord, digits: str) -> None:
        """Nothing to send."""

    async def answer(self, call: CallRecord) -> None:
        """Pick up an admitted inbound call."""
        self._later(
            0,
            [
                ProviderEvent(
                    EventType.ANSWERED,
                    self._pid(call),
                    call_id=call.call_id,
                    direction=Direction.INBOUND,
                )
            ],
        )

    async def reject(
        self, call: CallRecord, *, reply: ReplyDraft | None = None, busy: bool = False
    ) -> None:
        """Hang up a rejected inbound call."""
        self._ended.add(self._pid(call))

    async def hangup(self, call: CallRecord, *, reply: ReplyDraft | None = None) -> None:
        """Forget the call."""
        self._ended.add(self._pid(call))

    async def fetch_status(self, call: CallRecord) -> RemoteStatus:
        """The mock carrier keeps no state across restarts: always unknown."""
        if self._pid(call) in self._ended:
            return RemoteStatus(RemoteState.ENDED, CallState.COMPLETED)
        return RemoteStatus(RemoteState.UNKNOWN, detail="the mock carrier forgets on restart")

    @staticmethod
    def _pid(call: CallRecord) -> str:
        return call.provider_call_id or f"mock-{call.call_id}"

    # ------------------------------------------------------------------ simulated inbound

    async def simulate_inbound(
        self, from_number: str, to_number: str, utterances: Sequence[str]
    ) -> str:
        """Start a simulated inbound call; returns its provider call id."""
        pid = f"mock-in-{uuid.uuid4()}"
        self._utterances[pid] = [u for u in utterances if u.strip()]
        assert self._sink is not None
        await self._sink(
            [
                ProviderEvent(
                    EventType.INITIATED,
                    pid,
                    direction=Direction.INBOUND,
                    from_number=from_number,
                    to_number=to_number,
                )
            ]
        )
        return pid

    # ------------------------------------------------------------------ webhooks

    def has_signature_headers(self, headers: Mapping[str, str]) -> bool:
        """The mock signs nothing, so no webhook ever passes the header gate."""
        return False

    def verify(self, request: WebhookRequest) -> str:
        """Fail closed: the mock carrier sends no webhooks."""
        raise WebhookSignatureError("the mock provider accepts no webhooks")

    async def handle_webhook(self, request: WebhookRequest) -> WebhookReply:
        """Never reached: verify() always refuses."""
        raise CallNotFoundError("mock")

    def replay_reply(self, first: WebhookReply | None) -> WebhookReply:
        """Repeat the first answer."""
        return first or WebhookReply()
