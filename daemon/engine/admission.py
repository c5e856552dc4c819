"""Engine section: admitting calls, outbound (`initiate`, a failed dial) and inbound (the
policy, capacity, answer or reject)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import replace
from typing import Any

from daemon.engine import machine as amd
from daemon.engine.core import E164, EngineCore, speakable
from daemon.engine.live import LiveCall
from daemon.engine.policy import admits
from daemon.engine.routing import greeting, number_key
from daemon.errors import ConfigError, InvalidParamsError, StoreError, VoicecallError
from daemon.model.events import CallMode, Direction, EventType, ProviderEvent
from daemon.model.record import CallRecord
from daemon.model.state import CallState
from daemon.providers.base import DialRequest, ReplyDraft
from daemon.providers.catalog import spec

logger = logging.getLogger("daemon.engine.calls")  # one logger name for every engine section


class Admission(EngineCore):
    """Outbound dials and inbound offers."""

    async def initiate(self, message: str, to: str | None, mode: str | None) -> CallRecord:
        """Place an outbound call; returns once the provider accepted it."""
        message, to_number, call_mode = self._outbound_request(message, to, mode)
        self._check_capacity()
        declared = spec(self.provider.name)
        from_number = self.config.from_number or (
            declared.default_from_number if declared is not None else None
        )
        if not from_number:
            raise ConfigError(
                "from_number is not set; set it with "
                "`voicecall config set from_number +15550001234`"
            )
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
                record,
                EventType.INITIATED,
                {
                    "direction": "outbound",
                    "from": from_number,
                    "to": to_number,
                    "mode": call_mode.value,
                },
            )
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
            reason = (
                exc.message
                if isinstance(exc, VoicecallError)
                else f"dialling was interrupted ({type(exc).__name__})"
            )
            await asyncio.shield(self._fail_dial(live, reason))
            raise
        async with live.lock:
            if record.provider_call_id is None:
                try:
                    await self._commit(
                        live, lambda r: setattr(r, "provider_call_id", provider_call_id)
                    )
                except StoreError:
                    # The carrier dials a call we cannot keep a record of: hang it up rather
                    # than run it blind. The store still says `initiated` with no provider id,
                    # which the next start ends as failed.
                    with contextlib.suppress(VoicecallError, OSError):
                        await self.provider.hangup(
                            replace(record, provider_call_id=provider_call_id)
                        )
                    self._forget(live)
                    raise
                if not record.is_ended:
                    self._by_provider_id[provider_call_id] = record.call_id
        return record

    def _outbound_request(
        self, message: str, to: str | None, mode: str | None
    ) -> tuple[str, str, CallMode]:
        """The checked message, callee and mode of an `initiate` (InvalidParams/ConfigError)."""
        message = speakable(message or "")
        if not message:
            raise InvalidParamsError("message is empty; say what the call should say")
        to_number = to or self.config.to_number
        if not to_number:
            raise ConfigError(
                "no number to call: pass --to (the `to` parameter) or set `to_number` in the config"
            )
        if not E164.match(to_number):
            raise InvalidParamsError(
                f"to = {to_number!r} is not an E.164 number; use the form +15550001234"
            )
        try:
            call_mode = CallMode(mode or self.config.outbound.default_mode)
        except ValueError:
            raise InvalidParamsError(f"mode = {mode!r}: expected notify or conversation") from None
        return message, to_number, call_mode

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

    async def _inbound(self, event: ProviderEvent, reply: ReplyDraft | None = None) -> None:
        accepted, reason = admits(
            self.config.inbound_policy, event.from_number, self.config.allow_from
        )
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
        busy = False  # refused for want of room, not by the policy: the caller hears busy
        if accepted and self._occupied >= self.config.max_concurrent_calls:
            accepted, reason, busy = False, "max_concurrent_calls reached", True
        if accepted and (overloaded := self._overloaded()) is not None:
            accepted, reason, busy = False, overloaded, True
        # An ANSWERED event keeps its dedupe key for its own application below.
        initiated_key = None if event.type is EventType.ANSWERED else event.dedupe_key
        self._reserved += 1  # hold the slot across the write, released whatever happens
        try:
            stored = await self.store.record(
                record,
                EventType.INITIATED,
                {
                    "direction": "inbound",
                    "from": record.from_number,
                    "to": record.to_number,
                    "accepted": accepted,
                    "reason": reason,
                },
                dedupe_key=initiated_key,
            )
        finally:
            self._reserved -= 1
        if stored is None:  # an already-processed delivery: nothing to admit or answer
            return
        live = self._register(record)
        self._publish(stored)
        if not accepted:
            logger.info("inbound call %s rejected: %s", record.call_id, reason)
            await self._reject(live, reply, busy=busy)
            return
        live.initial_message = greeting(self.config, number)
        await self.provider.answer(record)
        if event.type is EventType.ANSWERED:
            await self._apply_one(event, reply)

    async def _reject(
        self, live: LiveCall, reply: ReplyDraft | None = None, *, busy: bool = False
    ) -> None:
        """End a refused inbound call, then hang it up once at the provider (in `reply`, the
        answer to the offer, when the provider can)."""
        try:
            async with live.lock:
                await self._finish_locked(live, CallState.HANGUP_BOT)
        except StoreError:
            live.rejection_lost = True  # the provider's retry of the offer rejects it
            live.rejected_busy = busy
            raise
        await self.provider.reject(live.record, reply=reply, busy=busy)
