"""The call engine: applies provider events, runs turns and timers, publishes events.

Rules it keeps (SPEC section 6):
- every event is written to the store before it is acted on or published: a change is made on a
  draft of the record, the draft is stored, and only then adopted by the live record, published
  and acted on (:meth:`CallEngine._commit`). A write the store refuses (disk full) raises
  StoreError and leaves memory as it was: no live call, slot, waiter or state that the store
  does not also hold;
- a call is never re-dialled automatically, also not after a restart;
- one transcript waiter per call, and each listening turn has a fresh token: a transcript with a
  stale or foreign token is ignored.

Locking: each live call has a lock held only while its record is mutated and persisted. Follow-up
actions (speaking a greeting, hanging up) run after the lock is released, in the same task, so a
provider can fold them into the webhook reply it is rendering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from daemon.engine import machine as amd
from daemon.engine.live import LiveCall, TranscriptWaiter
from daemon.engine.policy import admits
from daemon.engine.routing import greeting, number_key
from daemon.engine.timers import REAPER_INTERVAL_SECONDS, CallTimers
from daemon.errors import (
    CallError,
    CallNotFoundError,
    ConfigError,
    InvalidParamsError,
    LimitReachedError,
    OperationTimeoutError,
    StoreError,
    VoicecallError,
    WaitCancelledError,
)
from daemon.model.events import (
    CallEvent,
    CallMode,
    Direction,
    EventType,
    MachineResult,
    ProviderEvent,
)
from daemon.model.record import CallRecord, TranscriptEntry, parse_time, utc_now
from daemon.model.state import CallState, can_transition
from daemon.providers.base import DialRequest, Provider, RemoteState
from daemon.providers.machine import decision_seconds
from daemon.speech.responder import APOLOGY
from daemon.store.base import Store
from daemon.tasks import TaskSet

if TYPE_CHECKING:
    from daemon.config.model import Config

logger = logging.getLogger(__name__)

E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_UNSPEAKABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff\ud800-\udfff]")


def speakable(text: str) -> str:
    """`text` without control characters: no TTS says them, and XML (TwiML, Plivo XML)
    cannot carry them, so one would turn a webhook answer into an error and drop the call."""
    return _UNSPEAKABLE.sub(" ", text).strip()
MOCK_FROM_NUMBER = "+15550000000"
RECONCILE_TIMEOUT_SECONDS = 5.0
STORE_RETRY_SECONDS = 5.0
"""How soon a timer whose end could not be stored (store fault) tries again."""
DTMF_ENTRY_GAP_SECONDS = 2.0
"""Keys reported one at a time end an entry after this long without another key."""
_SPEAKING_STATES = frozenset({CallState.SPEAKING, CallState.LISTENING})

Subscriber = Callable[[CallEvent], None]
Followup = Callable[[], Awaitable[None]] | None
"""What to do after an event is applied, once the call's lock is released."""


class Responder(Protocol):
    """The auto-responder (daemon.speech.responder.AutoResponder)."""

    def sentences(
        self, history: Sequence[tuple[str, str]], from_number: str
    ) -> AsyncGenerator[str, None]:
        """The bot's next utterance, sentence by sentence as the model writes it."""


class CallEngine:
    """Owns every live call of the daemon."""

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
        self._live: dict[str, LiveCall] = {}
        self._by_provider_id: dict[str, str] = {}
        self._offering: dict[str, asyncio.Future[None]] = {}
        """Provider ids of new inbound calls being admitted right now."""
        self._reserved = 0
        """Slots held by new calls whose first record is being written (not yet live)."""
        self._subscribers: set[Subscriber] = set()
        self._tasks = TaskSet("engine")
        self.timers = CallTimers(self._end_by_timer, self.spawn, lambda: self._live.values(),
                                 reaper_interval=reaper_interval)
        self._stopping = False
        self._handlers: dict[EventType, Callable[[LiveCall, ProviderEvent], Awaitable[Followup]]]
        self._handlers = {
            EventType.RINGING: self._on_ringing,
            EventType.ANSWERED: self._on_answer,
            EventType.ACTIVE: self._on_active,
            EventType.SPEECH: self._on_speech,
            EventType.DTMF: self._on_dtmf_event,
            EventType.MACHINE: self._on_machine,
            EventType.ENDED: self._on_ended,
            EventType.ERROR: self._on_error,
        }
        """What each provider event type does to a live call (INITIATED, SPEAKING and TOOL
        have no handler: a known call's repeated offer, and the engine's own events)."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Restore live calls from the store and reconcile them with the provider."""
        restored = [self._register(record)
                    for record in await self.store.list_calls(live=True, limit=100_000)]
        orphans = [live for live in restored if live.record.provider_call_id is None
                   and live.record.direction is Direction.OUTBOUND
                   and live.record.state is CallState.INITIATED]
        for live in orphans:
            # Stored before the dial, but the provider's answer never was: we cannot know or
            # reach the call, so it must not hold a slot (SPEC section 6). Never re-dialled.
            logger.warning("call %s was being dialled when the daemon stopped; it has no provider "
                           "call id and ends as failed", live.record.call_id)
            await self._fail_dial(live, "the daemon stopped while dialling; not re-dialled")
        restored = [live for live in restored if live not in orphans]
        # All at once: a provider whose status API hangs costs one timeout, not one per call.
        await asyncio.gather(*(self._reconcile(live) for live in restored))
        if self.config.stale_call_reaper_seconds > 0:
            self.timers.start_reaper(float(self.config.stale_call_reaper_seconds))

    async def stop(self) -> None:
        """Stop timers and background work; live calls stay live in the store."""
        self._stopping = True
        self.timers.stop()
        for live in self._live.values():
            live.cancel_timers()
            if live.waiter is not None and not live.waiter.future.done():
                live.waiter.future.set_exception(CallError("the daemon is shutting down"))
        await self._tasks.cancel()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run a background task the engine owns (cancelled at stop)."""
        return self._tasks.spawn(coro, name)

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
                logger.warning("call %s: provider status unknown after restart (%s)",
                               record.call_id, getattr(exc, "message", None) or repr(exc))
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

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call `subscriber` with every event after it is stored; returns the unsubscribe."""
        self._subscribers.add(subscriber)
        return lambda: self._subscribers.discard(subscriber)

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
                StoreError("the call could not be stored; it was dropped"))
        self._live.pop(live.record.call_id, None)
        if live.record.provider_call_id:
            self._by_provider_id.pop(live.record.provider_call_id, None)

    @property
    def subscriber_count(self) -> int:
        """How many event subscribers (`voicecall tail` clients) are attached."""
        return len(self._subscribers)

    # ------------------------------------------------------------------ queries

    @property
    def live_count(self) -> int:
        """How many calls are live."""
        return len(self._live)

    def live_calls(self) -> list[CallRecord]:
        """Live call records, newest first."""
        return sorted((lc.record for lc in self._live.values()),
                      key=lambda r: r.started_at, reverse=True)

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
        raise CallError(f"call {record.call_id} has ended ({record.state}); place a new call",
                        callId=record.call_id, state=record.state.value)

    def _register(self, record: CallRecord) -> LiveCall:
        live = LiveCall(record)
        self._live[record.call_id] = live
        if record.provider_call_id:
            self._by_provider_id[record.provider_call_id] = record.call_id
        return live

    # ------------------------------------------------------------------ outbound

    async def initiate(self, message: str, to: str | None, mode: str | None) -> CallRecord:
        """Place an outbound call; returns once the provider accepted it."""
        message = speakable(message or "")
        if not message:
            raise InvalidParamsError("message is empty; say what the call should say")
        to_number = to or self.config.to_number
        if not to_number:
            raise ConfigError("no number to call: pass --to (the `to` parameter) or set "
                              "`to_number` in the config")
        if not E164.match(to_number):
            raise InvalidParamsError(f"to = {to_number!r} is not an E.164 number; "
                                     "use the form +15550001234")
        try:
            call_mode = CallMode(mode or self.config.outbound.default_mode)
        except ValueError:
            raise InvalidParamsError(f"mode = {mode!r}: expected notify or conversation") from None
        self._check_capacity()
        from_number = self.config.from_number or (
            MOCK_FROM_NUMBER if self.provider.name == "mock" else None)
        if not from_number:
            raise ConfigError("from_number is not set; set it with "
                              "`voicecall config set from_number +15550001234`")
        detection = self.config.machine_detection
        metadata: dict[str, Any] = {"turnCount": 0, "initialMessage": message}
        if detection.enabled:
            metadata["machineDetection"] = detection.mode
        record = CallRecord(
            call_id=str(uuid.uuid4()),
            provider=self.provider.name,
            direction=Direction.OUTBOUND,
            mode=call_mode,
            from_number=from_number,
            to_number=to_number,
            metadata=metadata,
        )
        self._reserved += 1  # hold the slot across the write, released whatever happens
        try:
            event = await self.store.record(
                record, EventType.INITIATED, {"direction": "outbound", "from": from_number,
                                              "to": to_number, "mode": call_mode.value})
        finally:
            self._reserved -= 1
        live = self._register(record)
        if event is not None:
            self._publish(event)
        live.initial_message = message.strip()
        if detection.enabled:
            live.machine = amd.MachineWatch()
        request = DialRequest(
            call_id=record.call_id,
            to_number=to_number,
            from_number=from_number,
            mode=call_mode,
            message=live.initial_message,
            ring_timeout_seconds=self.config.ring_timeout_seconds,
            notify_hangup_delay_seconds=self.config.outbound.notify_hangup_delay_seconds,
            machine_detection=detection if detection.enabled else None,
        )
        try:
            provider_call_id = await self.provider.place_call(request)
        except BaseException as exc:
            # Whatever stopped the dial (provider refusal, a bug, cancellation at shutdown),
            # the call must not stay "live" with no provider id: it would hold a slot forever.
            reason = (exc.message if isinstance(exc, VoicecallError)
                      else f"dialling was interrupted ({type(exc).__name__})")
            await asyncio.shield(self._fail_dial(live, reason))
            raise
        async with live.lock:
            if record.provider_call_id is None:
                try:
                    await self._commit(live, lambda r: setattr(r, "provider_call_id",
                                                               provider_call_id))
                except StoreError:
                    # The carrier dials a call we cannot keep a record of: hang it up rather
                    # than run it blind. The store still says `initiated` with no provider id,
                    # which the next start ends as failed.
                    with contextlib.suppress(VoicecallError, OSError):
                        await self.provider.hangup(replace(record,
                                                           provider_call_id=provider_call_id))
                    self._forget(live)
                    raise
                if not record.is_ended:
                    self._by_provider_id[provider_call_id] = record.call_id
        return record

    async def _fail_dial(self, live: LiveCall, reason: str) -> None:
        async with live.lock:
            if live.record.is_ended:
                return
            try:
                await self._commit(live, None, EventType.ERROR, {"error": reason})
                await self._finish_locked(live, CallState.FAILED)
            except StoreError:
                # Stored `initiated` with no provider id: the next start ends it as failed.
                # Meanwhile it must not hold a slot here.
                self._forget(live)

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

    # ------------------------------------------------------------------ operations

    async def speak(self, call_id: str, message: str) -> None:
        """Say something on a connected call without waiting for an answer."""
        live = await self._require_connected(call_id)
        if live.record.direction is Direction.INBOUND:
            token: str | None = self._new_turn(live)
        elif live.waiter is not None and not live.waiter.future.done():
            token = live.turn_token  # a `continue` is listening: keep its turn open
        else:
            token = None
        await self._say(live, message, token)

    async def continue_call(self, call_id: str, message: str, timeout_ms: int | None) -> str:
        """Speak, then wait for the caller's next final transcript and return it."""
        live = await self._require_connected(call_id)
        if live.waiter is not None and not live.waiter.future.done():
            raise CallError(f"call {live.record.call_id} is already waiting for a transcript",
                            callId=live.record.call_id)
        token = self._new_turn(live)
        waiter = TranscriptWaiter(token, asyncio.get_running_loop().create_future())
        live.waiter = waiter
        timeout = (timeout_ms or self.config.transcript_timeout_ms) / 1000.0
        try:
            await self._say(live, message, token)
            waiter.listen_started = time.monotonic()
            async with live.lock:
                if not live.record.is_ended and can_transition(live.record.state,
                                                               CallState.LISTENING):
                    await self._commit(live, lambda r: r.move_to(CallState.LISTENING))
            try:
                async with asyncio.timeout(timeout):
                    return await waiter.future
            except TimeoutError:
                raise OperationTimeoutError(
                    f"no reply from the caller on call {live.record.call_id} within "
                    f"{timeout:g}s; try again with a longer --timeout", callId=live.record.call_id
                ) from None
        finally:
            if live.waiter is waiter:
                live.waiter = None
                live.reset_dtmf()

    async def cancel_wait(self, call_id: str) -> bool:
        """Fail the call's pending `continue` at once; the call itself stays up.

        What a CLI sends when Ctrl-C interrupts `continue`: without it the abandoned waiter
        would block every further `continue` until it timed out. Returns whether a wait was
        pending.
        """
        live = self._find_live(call_id)
        if live is None:
            if await self.get(call_id) is None:
                raise CallNotFoundError(call_id)
            return False
        waiter = live.waiter
        if waiter is None or waiter.future.done():
            return False
        logger.info("call %s: the pending continue was cancelled by its client",
                    live.record.call_id)
        waiter.future.set_exception(WaitCancelledError(
            f"the wait for a reply on call {live.record.call_id} was cancelled",
            callId=live.record.call_id))
        return True

    async def send_dtmf(self, call_id: str, digits: str) -> None:
        """Send DTMF digits."""
        if not digits or not re.fullmatch(r"[0-9*#wW]+", digits):
            raise InvalidParamsError(f"digits = {digits!r}: use 0-9, *, # and w (pause)")
        live = await self._require_connected(call_id)
        await self.provider.send_dtmf(live.record, digits)

    async def end(self, call_id: str) -> None:
        """Hang up; an already-ended call is a success."""
        live = self._find_live(call_id)
        if live is None:
            if await self.get(call_id) is None:
                raise CallNotFoundError(call_id)
            return
        await self.provider.hangup(live.record)
        async with live.lock:
            await self._finish_locked(live, CallState.HANGUP_BOT)

    async def _require_connected(self, call_id: str) -> LiveCall:
        """A connected call; one still ringing is waited for, up to the ring timeout."""
        live = await self._require_live(call_id)
        held = live.machine is not None and not live.settled.is_set()
        if live.record.state in (CallState.INITIATED, CallState.RINGING) or held:
            wait = self.config.ring_timeout_seconds + 1.0
            if live.machine is not None:  # answered, waiting for the machine verdict
                detection = self.config.machine_detection
                wait += self._hold_seconds() + detection.greeting_timeout_seconds
            try:
                async with asyncio.timeout(wait):
                    await live.settled.wait()
            except TimeoutError:
                pass
            if live.record.is_ended:
                raise CallError(
                    f"call {live.record.call_id} ended ({live.record.state}) before it was "
                    "answered", callId=live.record.call_id, state=live.record.state.value)
        if not live.record.is_connected:
            raise CallError(
                f"call {live.record.call_id} is not connected yet (state {live.record.state}); "
                "wait for it to be answered", callId=live.record.call_id,
                state=live.record.state.value)
        return live

    def _new_turn(self, live: LiveCall) -> str:
        live.turn_token = secrets.token_urlsafe(12)
        return live.turn_token

    async def _say(self, live: LiveCall, text: str, turn_token: str | None) -> None:
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
        await self.provider.speak(live.record, text, turn_token=turn_token)

    # ------------------------------------------------------------------ provider events

    async def apply(self, events: Sequence[ProviderEvent]) -> None:
        """The provider's event sink: store, apply and publish each event in order."""
        for event in events:
            try:
                await self._apply_one(event)
            except StoreError:
                raise  # not durable, so not done: the webhook answers 503 and is retried
            except VoicecallError as exc:
                logger.warning("event %s for %s not applied: %s", event.type,
                               event.call_id or event.provider_call_id, exc.message)

    async def _apply_one(self, event: ProviderEvent) -> None:
        live = None
        if event.call_id:
            live = self._live.get(event.call_id)
        if live is None:
            live = self._find_live(event.provider_call_id)
        if live is None and event.previous_provider_call_id:
            live = self._find_live(event.previous_provider_call_id)
        if live is None:
            pid = event.provider_call_id
            if (event.direction is Direction.INBOUND
                    and event.type in (EventType.INITIATED, EventType.RINGING, EventType.ANSWERED)
                    and pid not in self._offering):
                # Claim the provider id before any await: a second delivery of the same new
                # call arriving meanwhile waits for the first to register it.
                self._offering[pid] = asyncio.get_running_loop().create_future()
                try:
                    if await self.store.find_by_provider_id(pid) is None:
                        await self._inbound(event)
                finally:
                    self._offering.pop(pid).set_result(None)
                return
            if pid in self._offering:
                await asyncio.shield(self._offering[pid])
                if self._find_live(pid) is not None:
                    await self._apply_one(event)
                return
            else:
                logger.debug("ignoring %s for unknown or ended call %s", event.type.value,
                            event.call_id or event.provider_call_id)
            return
        followup: Followup = None
        async with live.lock:
            if live.record.is_ended:
                return
            await self._rekey(live, event.provider_call_id)
            followup = await self._apply_locked(live, event)
        if followup is not None:
            await followup()

    async def _rekey(self, live: LiveCall, provider_call_id: str) -> None:
        old = live.record.provider_call_id
        if not provider_call_id or old == provider_call_id:
            return

        def change(record: CallRecord) -> None:
            if old:
                # Kept (and persisted with the record): a provider may still need the old id,
                # e.g. Plivo cancels a still-ringing call by its request_uuid.
                record.metadata.setdefault("previousProviderCallIds", []).append(old)
            record.provider_call_id = provider_call_id

        await self._commit(live, change)
        if old:
            self._by_provider_id.pop(old, None)
        self._by_provider_id[provider_call_id] = live.record.call_id

    async def _apply_locked(self, live: LiveCall, event: ProviderEvent) -> Followup:
        """Apply one event to a live call (its lock held) through the per-type table; return
        what to do once the lock is released."""
        if event.type is EventType.INITIATED and live.rejection_lost:
            # Refused and stored, but its end was not (a store fault): the retried offer
            # finishes the rejection.
            live.rejection_lost = False
            return lambda: self._reject(live)
        handler = self._handlers.get(event.type)
        return None if handler is None else await handler(live, event)

    async def _on_ringing(self, live: LiveCall, event: ProviderEvent) -> Followup:
        if live.record.state is CallState.INITIATED:
            await self._commit(live, lambda r: r.move_to(CallState.RINGING), event.type,
                               dedupe_key=event.dedupe_key)
        return None

    async def _on_answer(self, live: LiveCall, event: ProviderEvent) -> Followup:
        if live.record.answered_at is None:
            def answered(r: CallRecord) -> None:
                # A reordered `call.bridged` may have made it active already: no step back.
                r.move_to(CallState.ANSWERED, unless_behind=True)
                r.answered_at = utc_now()

            if not await self._commit(live, answered, event.type, dedupe_key=event.dedupe_key):
                return None  # a retried delivery
            self.timers.arm_max_duration(live, float(self.config.max_duration_seconds))
            return lambda: self._answered_then_settle(live)
        if live.opening_lost:
            # The answer was stored but its opening line was not (a store fault): the
            # provider's retry of that delivery says it now (SPEC 6: the retry is processed).
            live.opening_lost = False
            return lambda: self._answered_then_settle(live)
        return None

    async def _on_active(self, live: LiveCall, event: ProviderEvent) -> Followup:
        state = live.record.state
        if can_transition(state, CallState.ACTIVE) and state not in _SPEAKING_STATES:
            await self._commit(live, lambda r: r.move_to(CallState.ACTIVE), event.type,
                               dedupe_key=event.dedupe_key)
        return None

    async def _on_dtmf_event(self, live: LiveCall, event: ProviderEvent) -> Followup:
        await self._on_dtmf(live, event)
        return None

    async def _on_ended(self, live: LiveCall, event: ProviderEvent) -> Followup:
        await self._finish_locked(live, event.end_state or CallState.COMPLETED,
                                  dedupe_key=event.dedupe_key)
        return None

    async def _on_error(self, live: LiveCall, event: ProviderEvent) -> Followup:
        await self._commit(live, None, event.type, {"error": event.error or "unknown error"},
                           dedupe_key=event.dedupe_key)
        return None

    async def _on_speech(self, live: LiveCall, event: ProviderEvent) -> Followup:
        record = live.record
        text = (event.transcript or "").strip()
        if event.turn_token is not None and event.turn_token != live.turn_token:
            logger.info("call %s: ignoring a transcript with a stale turn token", record.call_id)
            return None
        if not text:
            return None
        data: dict[str, Any] = {"transcript": text, "isFinal": event.is_final}
        if event.confidence is not None:
            data["confidence"] = event.confidence
        if not event.is_final:
            await self._commit(live, None, EventType.SPEECH, data, dedupe_key=event.dedupe_key)
            return None
        waiter = live.waiter
        now = time.monotonic()
        if waiter is not None and not waiter.future.done():
            data["turnLatencyMs"] = round((now - waiter.started) * 1000, 1)
            data["listenWaitMs"] = round((now - waiter.listen_started) * 1000, 1)

        def heard(r: CallRecord) -> None:
            r.transcript.append(TranscriptEntry(utc_now(), "user", text))
            if "turnLatencyMs" in data:
                r.metadata["turnCount"] = int(r.metadata.get("turnCount", 0)) + 1
                r.metadata["lastTurnLatencyMs"] = data["turnLatencyMs"]
                r.metadata["lastTurnListenWaitMs"] = data["listenWaitMs"]

        if not await self._commit(live, heard, EventType.SPEECH, data,
                                  dedupe_key=event.dedupe_key):
            return None  # a retried delivery
        if waiter is not None and not waiter.future.done():
            waiter.future.set_result(text)
            return None
        if (record.direction is Direction.INBOUND and self._responder_for(record) is not None
                and not (self.answers_itself is not None
                         and self.answers_itself(record.call_id))):
            self._schedule_response(live)
        return None

    async def _on_dtmf(self, live: LiveCall, event: ProviderEvent) -> None:
        """Record `call.dtmf`; keys pressed during a `continue` answer it (docs/behaviour.md).

        A provider that collected a whole entry (Twilio `<Gather>`, Plivo `<GetInput>`: a final
        event) answers at once. Keys reported one by one (stream `dtmf`, Telnyx
        `call.dtmf.received`: `is_final` False) are collected: `#` ends the entry, else it ends
        `DTMF_ENTRY_GAP_SECONDS` after the last key. The answer is the keys as pressed.
        """
        digits = event.digits or ""
        stored = await self._commit(live, None, EventType.DTMF, {"digits": digits},
                                    dedupe_key=event.dedupe_key)
        waiter = live.waiter
        if (not stored or not digits or waiter is None or waiter.future.done()
                or (event.turn_token is not None and event.turn_token != waiter.turn_token)):
            return
        live.dtmf_entry += digits
        if live.dtmf_timer is not None:
            live.dtmf_timer.cancel()
            live.dtmf_timer = None
        if event.is_final or digits.endswith("#"):
            await self._answer_with_keys(live, waiter)
            return
        live.dtmf_timer = asyncio.get_running_loop().call_later(
            DTMF_ENTRY_GAP_SECONDS,
            lambda: self.spawn(self._keys_done(live, waiter), f"dtmf-{live.record.call_id}"))

    async def _keys_done(self, live: LiveCall, waiter: TranscriptWaiter) -> None:
        async with live.lock:
            live.dtmf_timer = None
            if not live.record.is_ended and live.waiter is waiter and not waiter.future.done():
                try:
                    await self._answer_with_keys(live, waiter)
                except VoicecallError as exc:
                    logger.warning("call %s: keys not applied: %s", live.record.call_id,
                                   exc.message)

    async def _answer_with_keys(self, live: LiveCall, waiter: TranscriptWaiter) -> None:
        """Answer the waiting `continue` with the keys collected (a caller turn, lock held)."""
        keys, live.dtmf_entry = live.dtmf_entry, ""
        if not keys:
            return

        def pressed(r: CallRecord) -> None:
            r.transcript.append(TranscriptEntry(utc_now(), "user", keys))
            r.metadata["turnCount"] = int(r.metadata.get("turnCount", 0)) + 1

        await self._commit(live, pressed)
        waiter.future.set_result(keys)

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

        if not await self._commit(live, ended, EventType.ENDED, {"reason": state.value},
                                  dedupe_key=dedupe_key):
            return  # a retried delivery
        if live.machine is not None:
            if not live.machine.verdict.done():
                live.machine.verdict.cancel()  # ends a hold still waiting for it
            live.machine.greeting_ended.set()
        live.cancel_timers()
        live.settled.set()
        if live.waiter is not None and not live.waiter.future.done():
            live.waiter.future.set_exception(
                CallError(f"call {record.call_id} ended ({state.value}) before the caller "
                          "answered", callId=record.call_id, state=state.value))
        self._live.pop(record.call_id, None)
        if record.provider_call_id:
            self._by_provider_id.pop(record.provider_call_id, None)

    async def _finish(self, live: LiveCall, state: CallState) -> None:
        async with live.lock:
            await self._finish_locked(live, state)

    # ------------------------------------------------------------------ answered / inbound

    async def _answered_then_settle(self, live: LiveCall) -> None:
        """Speak the opening line, then release operations that waited for the answer.

        With machine detection the opening line waits for the verdict, in the background: the
        webhook that reported the answer must not be held that long.
        """
        if live.machine is not None and not live.machine.decided:
            self.spawn(self._machine_hold(live), f"machine-{live.record.call_id}")
            return
        try:
            await self._on_answered(live)
        except StoreError:
            live.opening_lost = True
            raise
        finally:
            live.settled.set()

    # ------------------------------------------------------------------ machine detection

    async def _on_machine(self, live: LiveCall, event: ProviderEvent) -> Followup:
        """Record a `call.machine` fact; a verdict after the hold may still hang up."""
        report, watch, record = event.machine, live.machine, live.record
        if report is None:
            return None
        if not await self._commit(live, lambda r: amd.note_metadata(r, report), EventType.MACHINE,
                                  amd.event_data(report), dedupe_key=event.dedupe_key):
            return None  # a retried delivery
        if watch is None:
            return None
        first = watch.report(report)
        if first and watch.decided and not watch.voicemail:
            action = amd.late_action(report.result, record.mode, self.config.machine_detection)
            if action is amd.MachineAction.HANGUP:
                watch.voicemail = True
                return lambda: self._end_as_voicemail(live)
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
                logger.info("call %s: no machine-detection verdict in time; going on",
                            record.call_id)
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
                    logger.info("call %s: no end-of-greeting signal; speaking after %ss",
                                record.call_id, settings.greeting_timeout_seconds)
            if not record.is_ended:
                await self._speak_then_hang_up(live, self._opening(live))
        finally:
            live.settled.set()

    def _hold_seconds(self) -> float:
        return amd.hold_seconds(decision_seconds(self.provider.name,
                                                 self.config.machine_detection))

    async def _end_as_voicemail(self, live: LiveCall) -> None:
        try:
            await self.provider.hangup(live.record)
        except VoicecallError as exc:
            logger.warning("call %s: hang-up failed: %s", live.record.call_id, exc.message)
        await self._finish(live, CallState.VOICEMAIL)

    def _opening(self, live: LiveCall) -> str:
        return live.initial_message or str(live.record.metadata.get("initialMessage") or "")

    async def _on_answered(self, live: LiveCall) -> None:
        record = live.record
        message = self._opening(live)
        if record.direction is Direction.INBOUND:
            await self._say(live, message or self.config.inbound_greeting, self._new_turn(live))
        elif record.mode is CallMode.NOTIFY:
            await self._speak_then_hang_up(live, message)
        elif message:
            await self._say(live, message, None)

    async def _speak_then_hang_up(self, live: LiveCall, message: str) -> None:
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
            record, message, float(self.config.outbound.notify_hangup_delay_seconds))

    async def _inbound(self, event: ProviderEvent) -> None:
        accepted, reason = admits(self.config.inbound_policy, event.from_number,
                                  self.config.allow_from)
        metadata: dict[str, Any] = {"turnCount": 0}
        number = number_key(self.config.numbers, event.to_number)
        if number is not None:
            metadata["number"] = number  # which [numbers."+E164"] table applies
        record = CallRecord(
            call_id=str(uuid.uuid4()),
            provider=self.provider.name,
            direction=Direction.INBOUND,
            mode=CallMode.CONVERSATION,
            from_number=event.from_number or "",
            to_number=event.to_number or "",
            provider_call_id=event.provider_call_id,
            metadata=metadata,
        )
        if accepted and self._occupied >= self.config.max_concurrent_calls:
            accepted, reason = False, "max_concurrent_calls reached"
        # An ANSWERED event keeps its dedupe key for its own application below.
        initiated_key = None if event.type is EventType.ANSWERED else event.dedupe_key
        self._reserved += 1  # hold the slot across the write, released whatever happens
        try:
            stored = await self.store.record(
                record, EventType.INITIATED,
                {"direction": "inbound", "from": record.from_number, "to": record.to_number,
                 "accepted": accepted, "reason": reason},
                dedupe_key=initiated_key)
        finally:
            self._reserved -= 1
        if stored is None:  # an already-processed delivery: nothing to admit or answer
            return
        live = self._register(record)
        self._publish(stored)
        if not accepted:
            logger.info("inbound call %s rejected: %s", record.call_id, reason)
            await self._reject(live)
            return
        live.initial_message = greeting(self.config, number)
        await self.provider.answer(record)
        if event.type is EventType.ANSWERED:
            await self._apply_one(event)

    async def _reject(self, live: LiveCall) -> None:
        """End a refused inbound call, then hang it up once at the provider."""
        try:
            async with live.lock:
                await self._finish_locked(live, CallState.HANGUP_BOT)
        except StoreError:
            live.rejection_lost = True  # the provider's retry of the offer rejects it
            raise
        await self.provider.reject(live.record)

    def _schedule_response(self, live: LiveCall) -> None:
        if live.responder_task is not None and not live.responder_task.done():
            live.responder_task.cancel()  # a newer caller turn replaces a stale reply
        live.responder_task = self.spawn(self._respond(live), f"respond-{live.record.call_id}")

    def _responder_for(self, record: CallRecord) -> Responder | None:
        """The number table's auto-responder when it overrides one, else the top-level one."""
        key = record.metadata.get("number")
        if isinstance(key, str) and key in self.number_responders:
            return self.number_responders[key]
        return self.responder

    async def _respond(self, live: LiveCall) -> None:
        """Answer the caller's last turn; cancelled (mid-stream too) by a newer turn."""
        record = live.record
        responder = self._responder_for(record)
        assert responder is not None
        history = [(t.speaker, t.text) for t in record.transcript]
        streamed = self.streams_speech is not None and self.streams_speech(record.call_id)
        spoken = False
        held: list[str] = []
        try:
            async with contextlib.aclosing(
                    responder.sentences(history, record.from_number)) as sentences:
                async for sentence in sentences:
                    if record.is_ended:
                        return
                    if not streamed:
                        held.append(sentence)
                        continue
                    token = live.turn_token if spoken else self._new_turn(live)
                    await self._say(live, sentence, token)
                    spoken = True
        except VoicecallError as exc:
            logger.warning("auto-responder failed on call %s: %s", record.call_id, exc.message)
            async with live.lock:
                await self._commit(live, None, EventType.ERROR, {"error": exc.message})
            if not spoken and not held:
                held = [APOLOGY]
        reply = " ".join(held)
        if not record.is_ended and reply.strip():
            await self._say(live, reply, self._new_turn(live))

    def note_heard(self, call_id: str, text: str, heard_text: str) -> None:
        """Barge-in cut an utterance short: keep only what the caller heard in the transcript.

        The media plane reports it once the utterance settled; the bot line recorded at speak
        time is rewritten (and flagged) so the transcript is what was actually said.
        """
        live = self._find_live(call_id)
        if live is None or heard_text == text:
            return

        def rewrite(record: CallRecord) -> None:
            for index in range(len(record.transcript) - 1, -1, -1):
                entry = record.transcript[index]
                if entry.speaker == "bot" and entry.text == text:
                    record.transcript[index] = replace(entry, text=heard_text.strip() or "…")
                    record.metadata["interruptedUtterances"] = int(
                        record.metadata.get("interruptedUtterances", 0)) + 1
                    return

        async def _rewrite() -> None:
            async with live.lock:
                if any(e.speaker == "bot" and e.text == text for e in live.record.transcript):
                    await self._commit(live, rewrite)

        self.spawn(_rewrite(), f"heard-{call_id}")

    def note_spoken(self, call_id: str, text: str) -> None:
        """A line the call's voice agent (the realtime model) said of its own accord, as much
        of it as was heard: a bot transcript line and a ``call.speaking`` event."""
        live = self._find_live(call_id)
        text = speakable(text)
        if live is None or not text:
            return

        def change(record: CallRecord) -> None:
            record.transcript.append(TranscriptEntry(utc_now(), "bot", text))

        async def _record_line() -> None:
            async with live.lock:
                if not live.record.is_ended:
                    await self._commit(live, change, EventType.SPEAKING, {"text": text})

        self.spawn(_record_line(), f"spoken-{call_id}")

    async def record_tool_call(self, call_id: str, tool_call_id: str, name: str,
                               arguments: dict[str, Any]) -> None:
        """The realtime model called a relayed tool: store and publish ``call.tool`` for the
        agent, who answers with ``voicecall.tool_result``."""
        live = await self._require_live(call_id)
        async with live.lock:
            await self._commit(live, None, EventType.TOOL,
                               {"toolCallId": tool_call_id, "name": name, "arguments": arguments})

    # ------------------------------------------------------------------ timers

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
