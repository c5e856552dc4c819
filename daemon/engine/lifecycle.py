"""Engine section: start (restore and reconcile live calls with the provider), stop, and
the end of a call by one of its timers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from daemon.engine import machine as amd
from daemon.engine.core import RECONCILE_TIMEOUT_SECONDS, STORE_RETRY_SECONDS, EngineCore
from daemon.engine.live import LiveCall
from daemon.errors import CallError, StoreError, VoicecallError
from daemon.model.events import CallMode, Direction
from daemon.model.record import CallRecord, parse_time
from daemon.model.state import CallState
from daemon.providers.base import RemoteState

logger = logging.getLogger("daemon.engine.calls")  # one logger name for every engine section


class Lifecycle(EngineCore):
    """Start, stop, reconciliation and timer endings."""

    async def start(self) -> None:
        """Restore live calls from the store and reconcile them with the provider."""
        await self.adopt(await self.store.claim_live_calls())
        if self.config.stale_call_reaper_seconds > 0:
            self.timers.start_reaper(float(self.config.stale_call_reaper_seconds))

    async def adopt(self, records: Sequence[CallRecord]) -> None:
        """Run live calls this process did not start under the restart rules (SPEC section 6):
        its own after a restart, or a dead daemon's taken over (SPEC section 16). Each is
        reconciled with the provider's status API, and never re-dialled."""
        restored = [
            self._register(record) for record in records if record.call_id not in self._live
        ]
        orphans = [
            live
            for live in restored
            if live.record.provider_call_id is None
            and live.record.direction is Direction.OUTBOUND
            and live.record.state is CallState.INITIATED
        ]
        for live in orphans:
            # Stored before the dial, but the provider's answer never was: we cannot know or
            # reach the call, so it must not hold a slot (SPEC section 6). Never re-dialled.
            logger.warning(
                "call %s was being dialled when the daemon stopped; it has no provider "
                "call id and ends as failed",
                live.record.call_id,
            )
            await self._fail_dial(live, "the daemon stopped while dialling; not re-dialled")
        restored = [live for live in restored if live not in orphans]
        # All at once: a provider whose status API hangs costs one timeout, not one per call.
        await asyncio.gather(*(self._reconcile(live) for live in restored))

    def release(self, call_id: str) -> None:
        """Let go of a live call another daemon runs now (this one was presumed dead while it
        could not reach the shared store): dropped from memory, nothing written."""
        live = self._live.get(call_id)
        if live is None:
            return
        if live.waiter is not None and not live.waiter.future.done():
            live.waiter.future.set_exception(
                CallError(
                    f"call {call_id} is run by another daemon now (this one lost the shared store "
                    "for too long); ask again: the request reaches that daemon",
                    callId=call_id,
                )
            )
        self._forget(live)

    async def stop(self) -> None:
        """Stop timers and background work; live calls stay live in the store."""
        self._stopping = True
        self.timers.stop()
        for live in self._live.values():
            live.cancel_timers()
            if live.waiter is not None and not live.waiter.future.done():
                live.waiter.future.set_exception(CallError("the daemon is shutting down"))
        await self._tasks.cancel()

    async def _reconcile(self, live: LiveCall) -> None:
        """Ask the provider about a restored call: closed there -> closed here; else kept."""
        record = live.record
        if record.is_connected:
            live.settled.set()
        status = None
        if record.provider == self.provider.name and record.provider_call_id:
            try:
                async with asyncio.timeout(RECONCILE_TIMEOUT_SECONDS):
                    status = await self.provider.fetch_status(record)
            except (VoicecallError, TimeoutError, OSError) as exc:
                logger.warning(
                    "call %s: provider status unknown after restart (%s)",
                    record.call_id,
                    getattr(exc, "message", None) or repr(exc),
                )
        if status is not None and status.state is RemoteState.ENDED:
            logger.info("call %s ended at the provider while we were down", record.call_id)
            await self._finish(live, status.end_state or CallState.COMPLETED)
            return
        logger.info("restored live call %s (%s); left to its timers", record.call_id, record.state)
        live.machine = amd.restore_watch(record)
        if live.machine is not None:
            live.settled.clear()  # operations wait for the verdict again
        if record.answered_at is not None:
            elapsed = time.time() - parse_time(record.answered_at).timestamp()
            remaining = self.config.max_duration_seconds - elapsed
            if remaining <= 0:
                await self._end_by_timer(live, CallState.TIMEOUT)
                return
            self.timers.arm_max_duration(live, remaining)
            if live.machine is not None:  # the verdict was still awaited: wait for it again
                self.spawn(self._machine_hold(live), f"machine-{record.call_id}")
                return
            if record.mode is CallMode.NOTIFY and record.direction is Direction.OUTBOUND:
                # Its message was handed over before the restart, but the hang-up that follows
                # playback lived in the old process: finish the call rather than hold the line
                # open until max_duration_seconds.
                delay = float(self.config.outbound.notify_hangup_delay_seconds)
                self.timers.resume_notify(live, delay)

    async def _end_by_timer(self, live: LiveCall, state: CallState) -> None:
        if live.record.is_ended:
            return
        logger.info("call %s: ending (%s)", live.record.call_id, state.value)
        try:
            await self.provider.hangup(live.record)
        except VoicecallError as exc:
            logger.warning("call %s: hang-up failed: %s", live.record.call_id, exc.message)
        try:
            await self._finish(live, state)
        except StoreError:
            # The end is not durable, so the call is still live here: try again soon (the
            # store logs its fault; the reaper would otherwise skip a call it marked).
            live.reaping = False
            self.timers.retry_end(live, state, STORE_RETRY_SECONDS)
