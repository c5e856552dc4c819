"""The engine's shared core: live calls, the commit rule, queries, speaking and ending.

Every section of the engine (admission, answering, turns, lifecycle; `calls.py` ties them
together) builds on :class:`EngineCore`. The commit rule of SPEC section 6 lives here, once:
a change is made on a draft of the record, the draft is stored, and only then adopted by the
live record, published and acted on (:meth:`EngineCore._commit`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from daemon.engine.live import LiveCall
from daemon.engine.timers import REAPER_INTERVAL_SECONDS, CallTimers
from daemon.errors import (
    CallError,
    CallNotFoundError,
    InvalidParamsError,
    LimitReachedError,
    StoreError,
)
from daemon.model.events import CallEvent, EventType, ProviderEvent
from daemon.model.record import CallRecord, TranscriptEntry, utc_now
from daemon.model.state import CallState
from daemon.providers.base import Provider, ReplyDraft
from daemon.store.base import Store
from daemon.tasks import TaskSet

if TYPE_CHECKING:
    from daemon.config.model import Config


logger = logging.getLogger("daemon.engine.calls")  # one logger name for every engine section

E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_UNSPEAKABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff\ud800-\udfff]")


def speakable(text: str) -> str:
    """`text` without control characters: no TTS says them, and XML (TwiML, Plivo XML)
    cannot carry them, so one would turn a webhook answer into an error and drop the call."""
    return _UNSPEAKABLE.sub(" ", text).strip()


RECONCILE_TIMEOUT_SECONDS = 5.0
STORE_RETRY_SECONDS = 5.0
"""How soon a timer whose end could not be stored (store fault) tries again."""
DTMF_ENTRY_GAP_SECONDS = 2.0
"""Keys reported one at a time end an entry after this long without another key."""

Subscriber = Callable[[CallEvent], None]
Followup = Callable[[ReplyDraft | None], Awaitable[None]] | None
"""What to do after an event is applied, once the call's lock is released; it is given the
draft of the webhook answer the event came with (None outside one), for the provider actions."""


class Responder(Protocol):
    """The auto-responder (daemon.speech.responder.AutoResponder)."""

    def sentences(
        self, history: Sequence[tuple[str, str]], from_number: str
    ) -> AsyncGenerator[str, None]:
        """The bot's next utterance, sentence by sentence as the model writes it."""


class LoadGauge(Protocol):
    """How busy the daemon's event loop has been (daemon.loopload.LoopLoad)."""

    @property
    def share(self) -> float:
        """Share of the last seconds the loop ran or waited for a CPU (0 to 1)."""

    @property
    def projected(self) -> float:
        """The share with the calls taken since those seconds counted in."""

    def describe(self) -> str:
        """The figure as a person reads it."""


class EngineCore:
    """State and rules every engine section shares."""

    def __init__(
        self,
        config: Config,
        store: Store,
        provider: Provider,
        *,
        responder: Responder | None = None,
        reaper_interval: float = REAPER_INTERVAL_SECONDS,
    ) -> None:
        self.config = config
        self.store = store
        self.provider = provider
        self.responder = responder
        self.streams_speech: Callable[[str], bool] | None = None
        """True when a call's speech goes out over its media stream (set by the daemon): each
        reply sentence is then spoken as soon as it exists. Without one, the provider's own
        voice takes the whole reply at once (a live TwiML update would cut the sentence before)."""
        self.answers_itself: Callable[[str], bool] | None = None
        """True when a call's own voice agent (the realtime model) answers the caller, so the
        auto-responder stays out of it (set by the daemon)."""
        self.number_responders: dict[str, Responder | None] = {}
        """Auto-responders of `[numbers."+E164"]` tables that override its settings."""
        self.loop_load: LoadGauge | None = None
        """The event loop's load (set by the daemon): above `max_loop_load` new calls are
        refused, so the calls already up keep their voice (:meth:`_overloaded`)."""
        self._live: dict[str, LiveCall] = {}
        self._by_provider_id: dict[str, str] = {}
        self._offering: dict[str, asyncio.Future[None]] = {}
        """Provider ids of new inbound calls being admitted right now."""
        self._reserved = 0
        """Slots held by new calls whose first record is being written (not yet live)."""
        self._subscribers: set[Subscriber] = set()
        self._tasks = TaskSet("engine")
        self.timers = CallTimers(
            self._end_by_timer,
            self.spawn,
            lambda: self._live.values(),
            reaper_interval=reaper_interval,
        )
        self._stopping = False

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run a background task the engine owns (cancelled at stop)."""
        return self._tasks.spawn(coro, name)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call `subscriber` with every event after it is stored; returns the unsubscribe."""
        self._subscribers.add(subscriber)
        return lambda: self._subscribers.discard(subscriber)

    def relay(self, event: CallEvent) -> None:
        """Publish an event another daemon sharing the store stored (so `tail` here sees
        every call's events, SPEC section 16)."""
        self._publish(event)

    def runs(self, call_ref: str) -> bool:
        """True when this daemon runs the live call (by our id or the provider's)."""
        return self._find_live(call_ref) is not None

    def _publish(self, event: CallEvent) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:
                logger.exception("event subscriber failed; dropping it")
                self._subscribers.discard(subscriber)

    async def _commit(
        self,
        live: LiveCall,
        change: Callable[[CallRecord], None] | None,
        event_type: EventType | None = None,
        data: dict[str, Any] | None = None,
        *,
        dedupe_key: str | None = None,
    ) -> bool:
        """Apply `change` to a draft of the record, store it with the event, then adopt it.

        Returns False when `dedupe_key` was already processed (nothing written or changed).
        Raises StoreError when the store refuses the write: the live record is untouched.
        """
        draft = live.record.draft()
        if change is not None:
            change(draft)
        event = await self.store.record(draft, event_type, data, dedupe_key=dedupe_key)
        if event is None and event_type is not None:
            return False
        live.record.adopt(draft)
        if event is not None:
            self._publish(event)
        return True

    def _forget(self, live: LiveCall) -> None:
        """Drop a call from memory without storing anything (its store write failed)."""
        live.cancel_timers()
        live.settled.set()
        if live.waiter is not None and not live.waiter.future.done():
            live.waiter.future.set_exception(
                StoreError("the call could not be stored; it was dropped")
            )
        self._live.pop(live.record.call_id, None)
        if live.record.provider_call_id:
            self._by_provider_id.pop(live.record.provider_call_id, None)

    @property
    def subscriber_count(self) -> int:
        """How many event subscribers (`voicecall tail` clients) are attached."""
        return len(self._subscribers)

    @property
    def live_count(self) -> int:
        """How many calls are live."""
        return len(self._live)

    def live_calls(self) -> list[CallRecord]:
        """Live call records, newest first."""
        return sorted(
            (lc.record for lc in self._live.values()), key=lambda r: r.started_at, reverse=True
        )

    async def get(self, call_id: str) -> CallRecord | None:
        """A call, live or ended, by our id or the provider's."""
        live = self._find_live(call_id)
        if live is not None:
            return live.record
        return await self.store.get_call(call_id) or await self.store.find_by_provider_id(call_id)

    def _find_live(self, call_id: str) -> LiveCall | None:
        live = self._live.get(call_id)
        if live is None and call_id in self._by_provider_id:
            live = self._live.get(self._by_provider_id[call_id])
        return live

    async def _require_live(self, call_id: str) -> LiveCall:
        live = self._find_live(call_id)
        if live is not None:
            return live
        record = await self.get(call_id)
        if record is None:
            raise CallNotFoundError(call_id)
        raise CallError(
            f"call {record.call_id} has ended ({record.state}); place a new call",
            callId=record.call_id,
            state=record.state.value,
        )

    def _register(self, record: CallRecord) -> LiveCall:
        live = LiveCall(record)
        self._live[record.call_id] = live
        if record.provider_call_id:
            self._by_provider_id[record.provider_call_id] = record.call_id
        return live

    @property
    def _occupied(self) -> int:
        """Slots in use: live calls plus new calls being stored right now."""
        return len(self._live) + self._reserved

    def _check_capacity(self) -> None:
        limit = self.config.max_concurrent_calls
        if self._occupied >= limit:
            raise LimitReachedError(
                f"max_concurrent_calls ({limit}) reached: {self._occupied} calls are live; "
                "end one with `voicecall end` or raise max_concurrent_calls",
                limit=limit,
            )
        overloaded = self._overloaded()
        if overloaded is not None:
            raise LimitReachedError(
                f"{overloaded}: a new call now would make the audio of every live call late; "
                "retry in a few seconds, end a call, or raise max_loop_load (1 turns this off)",
                limit=self.config.max_loop_load,
            )

    def _overloaded(self) -> str | None:
        """Why a new call must wait for the loop to have room (None: it may come).

        One event loop carries every call: once it is busy all the time, every stream's
        frames leave late and every call degrades at once, so past `max_loop_load` the
        daemon refuses new calls instead (daemon.loopload). The figure counts the calls taken
        since the load was measured: a burst is otherwise all admitted before it shows.
        """
        gauge, limit = self.loop_load, self.config.max_loop_load
        if gauge is None or limit >= 1.0 or gauge.projected <= limit:
            return None
        return (
            f"the daemon's event loop is overloaded ({gauge.describe()}; max_loop_load {limit:g})"
        )

    def _new_turn(self, live: LiveCall) -> str:
        live.turn_token = secrets.token_urlsafe(12)
        return live.turn_token

    async def _say(
        self,
        live: LiveCall,
        text: str,
        turn_token: str | None,
        reply: ReplyDraft | None = None,
    ) -> None:
        text = speakable(text)
        if not text:
            raise InvalidParamsError("message is empty; say what to say")

        def change(record: CallRecord) -> None:
            record.move_to(CallState.SPEAKING, unless_behind=True)
            record.transcript.append(TranscriptEntry(utc_now(), "bot", text))

        async with live.lock:
            if live.record.is_ended:
                raise CallError(f"call {live.record.call_id} has ended")
            await self._commit(live, change, EventType.SPEAKING, {"text": text})
        await self.provider.speak(live.record, text, turn_token=turn_token, reply=reply)

    async def _finish_locked(
        self, live: LiveCall, state: CallState, *, dedupe_key: str | None = None
    ) -> None:
        record = live.record
        if record.is_ended:
            return
        if live.machine is not None:
            state = live.machine.end_state(state)

        def ended(r: CallRecord) -> None:
            r.move_to(state)
            r.ended_at = utc_now()
            r.end_reason = state.value

        if not await self._commit(
            live, ended, EventType.ENDED, {"reason": state.value}, dedupe_key=dedupe_key
        ):
            return  # a retried delivery
        if live.machine is not None:
            if not live.machine.verdict.done():
                live.machine.verdict.cancel()  # ends a hold still waiting for it
            live.machine.greeting_ended.set()
        live.cancel_timers()
        live.settled.set()
        if live.waiter is not None and not live.waiter.future.done():
            live.waiter.future.set_exception(
                CallError(
                    f"call {record.call_id} ended ({state.value}) before the caller answered",
                    callId=record.call_id,
                    state=state.value,
                )
            )
        self._live.pop(record.call_id, None)
        if record.provider_call_id:
            self._by_provider_id.pop(record.provider_call_id, None)

    async def _finish(self, live: LiveCall, state: CallState) -> None:
        async with live.lock:
            await self._finish_locked(live, state)

    # Hooks one section calls and another defines (CallEngine's bases); never called here.

    async def _apply_one(self, event: ProviderEvent, reply: ReplyDraft | None = None) -> None:
        raise NotImplementedError  # daemon.engine.calls

    async def _fail_dial(self, live: LiveCall, reason: str) -> None:
        raise NotImplementedError  # daemon.engine.admission

    async def _machine_hold(self, live: LiveCall) -> None:
        raise NotImplementedError  # daemon.engine.answering

    def _hold_seconds(self) -> float:
        raise NotImplementedError  # daemon.engine.answering

    async def _end_by_timer(self, live: LiveCall, state: CallState) -> None:
        raise NotImplementedError  # daemon.engine.lifecycle
