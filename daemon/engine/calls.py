"""The call engine: applies provider events, runs turns and timers, publishes events.

Rules it keeps (SPEC section 6):
- every event is written to the store before it is acted on or published: a change is made on a
  draft of the record, the draft is stored, and only then adopted by the live record, published
  and acted on (:meth:`EngineCore._commit`). A write the store refuses (disk full) raises
  StoreError and leaves memory as it was: no live call, slot, waiter or state that the store
  does not also hold;
- a call is never re-dialled automatically, also not after a restart;
- one transcript waiter per call, and each listening turn has a fresh token: a transcript with a
  stale or foreign token is ignored.

Sections (each a base class of :class:`CallEngine` over :class:`daemon.engine.core.EngineCore`,
which holds the live calls and the commit rule): `admission` (outbound dials, inbound offers),
`answering` (opening line, machine detection), `turns` (speak, continue, DTMF, transcripts, the
auto-responder) and `lifecycle` (restore and reconcile at start, stop, timer endings). This module
dispatches provider events to them through one handler per event type.

Locking: each live call has a lock held only while its record is mutated and persisted. Follow-up
actions (speaking a greeting, hanging up) run after the lock is released, in the same task, and
are given the `ReplyDraft` the provider passed in with the events: a provider can fold them into
the webhook answer it is rendering (Twilio TwiML, Plivo XML). Nothing else carries that draft.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from daemon.engine.admission import Admission
from daemon.engine.answering import Answering
from daemon.engine.core import EngineCore, Followup, Responder, speakable
from daemon.engine.lifecycle import Lifecycle
from daemon.engine.live import LiveCall
from daemon.engine.timers import REAPER_INTERVAL_SECONDS
from daemon.engine.turns import Turns
from daemon.errors import StoreError, VoicecallError
from daemon.model.events import Direction, EventType, ProviderEvent
from daemon.model.record import CallRecord, utc_now
from daemon.model.state import CallState, can_transition
from daemon.providers.base import Provider, ReplyDraft
from daemon.store.base import Store

if TYPE_CHECKING:
    from daemon.config.model import Config

__all__ = ["CallEngine", "Responder", "speakable"]

logger = logging.getLogger(__name__)
_SPEAKING_STATES = frozenset({CallState.SPEAKING, CallState.LISTENING})


class CallEngine(Lifecycle, Admission, Answering, Turns, EngineCore):
    """Owns every live call of the daemon: its sections (bases) plus provider-event dispatch."""

    def __init__(
        self,
        config: Config,
        store: Store,
        provider: Provider,
        *,
        responder: Responder | None = None,
        reaper_interval: float = REAPER_INTERVAL_SECONDS,
    ) -> None:
        super().__init__(
            config, store, provider, responder=responder, reaper_interval=reaper_interval
        )
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

    async def apply(self, events: Sequence[ProviderEvent], reply: ReplyDraft | None = None) -> None:
        """The provider's event sink: store, apply and publish each event in order; `reply`,
        the draft of the answer to the webhook the events came in, goes to the follow-ups."""
        for event in events:
            try:
                await self._apply_one(event, reply)
            except StoreError:
                raise  # not durable, so not done: the webhook answers 503 and is retried
            except VoicecallError as exc:
                logger.warning(
                    "event %s for %s not applied: %s",
                    event.type,
                    event.call_id or event.provider_call_id,
                    exc.message,
                )

    async def _apply_one(self, event: ProviderEvent, reply: ReplyDraft | None = None) -> None:
        live = None
        if event.call_id:
            live = self._live.get(event.call_id)
        if live is None:
            live = self._find_live(event.provider_call_id)
        if live is None and event.previous_provider_call_id:
            live = self._find_live(event.previous_provider_call_id)
        if live is None:
            pid = event.provider_call_id
            if (
                event.direction is Direction.INBOUND
                and event.type in (EventType.INITIATED, EventType.RINGING, EventType.ANSWERED)
                and pid not in self._offering
            ):
                # Claim the provider id before any await: a second delivery of the same new
                # call arriving meanwhile waits for the first to register it.
                self._offering[pid] = asyncio.get_running_loop().create_future()
                try:
                    if await self.store.find_by_provider_id(pid) is None:
                        await self._inbound(event, reply)
                finally:
                    self._offering.pop(pid).set_result(None)
                return
            if pid in self._offering:
                await asyncio.shield(self._offering[pid])
                if self._find_live(pid) is not None:
                    await self._apply_one(event, reply)
                return
            else:
                logger.debug(
                    "ignoring %s for unknown or ended call %s",
                    event.type.value,
                    event.call_id or event.provider_call_id,
                )
            return
        followup: Followup = None
        async with live.lock:
            if live.record.is_ended:
                return
            await self._rekey(live, event.provider_call_id)
            followup = await self._apply_locked(live, event)
        if followup is not None:
            await followup(reply)

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
            return lambda reply: self._reject(live, reply, busy=live.rejected_busy)
        handler = self._handlers.get(event.type)
        return None if handler is None else await handler(live, event)

    async def _on_ringing(self, live: LiveCall, event: ProviderEvent) -> Followup:
        if live.record.state is CallState.INITIATED:
            await self._commit(
                live,
                lambda r: r.move_to(CallState.RINGING),
                event.type,
                dedupe_key=event.dedupe_key,
            )
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
            return lambda reply: self._answered_then_settle(live, reply)
        if live.opening_lost:
            # The answer was stored but its opening line was not (a store fault): the
            # provider's retry of that delivery says it now (SPEC 6: the retry is processed).
            live.opening_lost = False
            return lambda reply: self._answered_then_settle(live, reply)
        return None

    async def _on_active(self, live: LiveCall, event: ProviderEvent) -> Followup:
        state = live.record.state
        if can_transition(state, CallState.ACTIVE) and state not in _SPEAKING_STATES:
            await self._commit(
                live, lambda r: r.move_to(CallState.ACTIVE), event.type, dedupe_key=event.dedupe_key
            )
        return None

    async def _on_dtmf_event(self, live: LiveCall, event: ProviderEvent) -> Followup:
        await self._on_dtmf(live, event)
        return None

    async def _on_ended(self, live: LiveCall, event: ProviderEvent) -> Followup:
        await self._finish_locked(
            live, event.end_state or CallState.COMPLETED, dedupe_key=event.dedupe_key
        )
        return None

    async def _on_error(self, live: LiveCall, event: ProviderEvent) -> Followup:
        await self._commit(
            live,
            None,
            event.type,
            {"error": event.error or "unknown error"},
            dedupe_key=event.dedupe_key,
        )
        return None
