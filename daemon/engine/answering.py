"""Engine section: what happens once a call is answered: the opening line, and machine
detection's hold, verdict and voicemail (SPEC 13)."""

from __future__ import annotations

import asyncio
import logging

from daemon.engine import machine as amd
from daemon.engine.core import EngineCore, Followup
from daemon.engine.live import LiveCall
from daemon.errors import StoreError, VoicecallError
from daemon.model.events import CallMode, Direction, EventType, MachineResult, ProviderEvent
from daemon.model.record import CallRecord, TranscriptEntry, utc_now
from daemon.model.state import CallState
from daemon.providers.base import ReplyDraft
from daemon.providers.machine import decision_seconds

logger = logging.getLogger("daemon.engine.calls")  # one logger name for every engine section


class Answering(EngineCore):
    """The answered call: opening line and machine detection."""

    async def _answered_then_settle(self, live: LiveCall, reply: ReplyDraft | None) -> None:
        """Speak the opening line (into `reply`, the answer to the webhook that reported the
        answer, when the provider can), then release operations that waited for the answer.

        With machine detection the opening line waits for the verdict, in the background: the
        webhook that reported the answer must not be held that long.
        """
        if live.machine is not None and not live.machine.decided:
            self.spawn(self._machine_hold(live), f"machine-{live.record.call_id}")
            return
        try:
            await self._on_answered(live, reply)
        except StoreError:
            live.opening_lost = True
            raise
        finally:
            live.settled.set()

    async def _on_machine(self, live: LiveCall, event: ProviderEvent) -> Followup:
        """Record a `call.machine` fact; a verdict after the hold may still hang up."""
        report, watch, record = event.machine, live.machine, live.record
        if report is None:
            return None
        if not await self._commit(
            live,
            lambda r: amd.note_metadata(r, report),
            EventType.MACHINE,
            amd.event_data(report),
            dedupe_key=event.dedupe_key,
        ):
            return None  # a retried delivery
        if watch is None:
            return None
        first = watch.report(report)
        if first and watch.decided and not watch.voicemail:
            action = amd.late_action(report.result, record.mode, self.config.machine_detection)
            if action is amd.MachineAction.HANGUP:
                watch.voicemail = True
                return lambda reply: self._end_as_voicemail(live, reply)
        return None

    async def _machine_hold(self, live: LiveCall) -> None:
        """Wait for the verdict, then act on it (SPEC 13); releases waiting operations."""
        watch, record = live.machine, live.record
        assert watch is not None
        settings = self.config.machine_detection
        try:
            try:
                async with asyncio.timeout(self._hold_seconds()):
                    report = await asyncio.shield(watch.verdict)
                result = report.result
            except TimeoutError:
                logger.info(
                    "call %s: no machine-detection verdict in time; going on", record.call_id
                )
                result = MachineResult.UNKNOWN
            watch.decided = True
            if record.is_ended:
                return
            action = amd.decide(result, record.mode, settings)
            if action is amd.MachineAction.PROCEED:
                await self._on_answered(live)
                return
            watch.voicemail = True
            if action is amd.MachineAction.HANGUP:
                await self._end_as_voicemail(live)
                return
            if not watch.greeting_ended.is_set():
                try:
                    async with asyncio.timeout(settings.greeting_timeout_seconds):
                        await watch.greeting_ended.wait()
                except TimeoutError:
                    logger.info(
                        "call %s: no end-of-greeting signal; speaking after %ss",
                        record.call_id,
                        settings.greeting_timeout_seconds,
                    )
            if not record.is_ended:
                await self._speak_then_hang_up(live, self._opening(live))
        finally:
            live.settled.set()

    def _hold_seconds(self) -> float:
        return amd.hold_seconds(decision_seconds(self.provider.name, self.config.machine_detection))

    async def _end_as_voicemail(self, live: LiveCall, reply: ReplyDraft | None = None) -> None:
        try:
            await self.provider.hangup(live.record, reply=reply)
        except VoicecallError as exc:
            logger.warning("call %s: hang-up failed: %s", live.record.call_id, exc.message)
        await self._finish(live, CallState.VOICEMAIL)

    def _opening(self, live: LiveCall) -> str:
        return live.initial_message or str(live.record.metadata.get("initialMessage") or "")

    async def _on_answered(self, live: LiveCall, reply: ReplyDraft | None = None) -> None:
        record = live.record
        message = self._opening(live)
        if record.direction is Direction.INBOUND:
            greeting = message or self.config.inbound_greeting
            await self._say(live, greeting, self._new_turn(live), reply)
        elif record.mode is CallMode.NOTIFY:
            await self._speak_then_hang_up(live, message, reply)
        elif message:
            await self._say(live, message, None, reply)

    async def _speak_then_hang_up(
        self, live: LiveCall, message: str, reply: ReplyDraft | None = None
    ) -> None:
        """Say `message`, hang up `notify_hangup_delay_seconds` after it has played."""
        record = live.record

        def speaking(r: CallRecord) -> None:
            r.move_to(CallState.SPEAKING)
            r.transcript.append(TranscriptEntry(utc_now(), "bot", message))

        async with live.lock:
            if record.is_ended:
                return
            await self._commit(live, speaking, EventType.SPEAKING, {"text": message})
        await self.provider.play_and_hangup(
            record, message, float(self.config.outbound.notify_hangup_delay_seconds), reply=reply
        )
