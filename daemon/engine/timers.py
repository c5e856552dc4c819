"""The engine's timers (SPEC section 6): max duration from answer, the resumed notify hang-up
of a restored call, and the stale-call reaper.

Timers never touch a call themselves: when one fires it asks the engine to end the call
(hang up at the provider, then record the end state), through the `end` callback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from daemon.engine.live import LiveCall
from daemon.model.record import parse_time
from daemon.model.state import CallState

EndCall = Callable[[LiveCall, CallState], Coroutine[Any, Any, None]]
Spawn = Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]]

REAPER_INTERVAL_SECONDS = 30.0


class CallTimers:
    """Schedules the ends that no provider event will bring."""

    def __init__(
        self,
        end: EndCall,
        spawn: Spawn,
        lives: Callable[[], Iterable[LiveCall]],
        *,
        reaper_interval: float = REAPER_INTERVAL_SECONDS,
    ) -> None:
        self._end = end
        self._spawn = spawn
        self._lives = lives
        self._reaper_interval = reaper_interval
        self._reaper: asyncio.Task[None] | None = None

    def _later(
        self, live: LiveCall, seconds: float, state: CallState, name: str
    ) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(
            seconds, lambda: self._spawn(self._end(live, state), f"{name}-{live.record.call_id}")
        )

    def arm_max_duration(self, live: LiveCall, seconds: float) -> None:
        """End the call as `timeout` after `seconds` (re-arming replaces the old timer)."""
        if live.max_duration_timer is not None:
            live.max_duration_timer.cancel()
        live.max_duration_timer = self._later(live, seconds, CallState.TIMEOUT, "max-duration")

    def resume_notify(self, live: LiveCall, delay: float) -> None:
        """A restored notify call: its hang-up lived in the old process; do it after `delay`."""
        live.resume_timer = self._later(live, delay, CallState.HANGUP_BOT, "notify-resume")

    def retry_end(self, live: LiveCall, state: CallState, seconds: float) -> None:
        """An end could not be stored (store fault): ask for it again after `seconds`."""
        if live.resume_timer is not None:
            live.resume_timer.cancel()
        live.resume_timer = self._later(live, seconds, state, "end-retry")

    def start_reaper(self, threshold: float) -> None:
        """End calls never answered within `threshold` seconds, checking every
        min(30 s, threshold / 2)."""
        interval = min(self._reaper_interval, max(threshold / 2, 0.05))

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                await self.reap_stale(threshold)

        self._reaper = asyncio.create_task(loop(), name="stale-call-reaper")

    def stop(self) -> None:
        """Stop the reaper (per-call timers are cancelled with their calls)."""
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None

    async def reap_stale(self, threshold: float) -> int:
        """End calls never answered within `threshold` seconds; return how many."""
        now = time.time()
        reaped = 0
        for live in list(self._lives()):
            record = live.record
            if record.answered_at is not None or live.reaping:
                continue
            if now - parse_time(record.started_at).timestamp() > threshold:
                live.reaping = True
                await self._end(live, CallState.TIMEOUT)
                reaped += 1
        return reaped
