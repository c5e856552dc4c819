"""Engine section: conversation turns: speak, continue (wait for the caller), DTMF entries,
transcripts, the auto-responder, and lines the realtime model said or the caller cut short."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from dataclasses import replace
from typing import Any

from daemon.engine.core import DTMF_ENTRY_GAP_SECONDS, EngineCore, Followup, Responder, speakable
from daemon.engine.live import LiveCall, TranscriptWaiter
from daemon.errors import (
    CallError,
    CallNotFoundError,
    InvalidParamsError,
    MediaError,
    OperationTimeoutError,
    VoicecallError,
    WaitCancelledError,
)
from daemon.model.events import Direction, EventType, ProviderEvent
from daemon.model.record import CallRecord, TranscriptEntry, utc_now
from daemon.model.state import CallState, can_transition
from daemon.speech.responder import APOLOGY

logger = logging.getLogger("daemon.engine.calls")  # one logger name for every engine section


class Turns(EngineCore):
    """Speaking, listening, keys and replies."""

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
            raise CallError(
                f"call {live.record.call_id} is already waiting for a transcript",
                callId=live.record.call_id,
            )
        token = self._new_turn(live)
        waiter = TranscriptWaiter(token, asyncio.get_running_loop().create_future())
        live.waiter = waiter
        timeout = (timeout_ms or self.config.transcript_timeout_ms) / 1000.0
        try:
            await self._say(live, message, token)
            waiter.listen_started = time.monotonic()
            async with live.lock:
                if not live.record.is_ended and can_transition(
                    live.record.state, CallState.LISTENING
                ):
                    await self._commit(live, lambda r: r.move_to(CallState.LISTENING))
            try:
                async with asyncio.timeout(timeout):
                    return await waiter.future
            except TimeoutError:
                raise OperationTimeoutError(
                    f"no reply from the caller on call {live.record.call_id} within "
                    f"{timeout:g}s; try again with a longer --timeout",
                    callId=live.record.call_id,
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
        logger.info(
            "call %s: the pending continue was cancelled by its client", live.record.call_id
        )
        waiter.future.set_exception(
            WaitCancelledError(
                f"the wait for a reply on call {live.record.call_id} was cancelled",
                callId=live.record.call_id,
            )
        )
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
                    "answered",
                    callId=live.record.call_id,
                    state=live.record.state.value,
                )
        if not live.record.is_connected:
            raise CallError(
                f"call {live.record.call_id} is not connected yet (state {live.record.state}); "
                "wait for it to be answered",
                callId=live.record.call_id,
                state=live.record.state.value,
            )
        return live

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

        if not await self._commit(live, heard, EventType.SPEECH, data, dedupe_key=event.dedupe_key):
            return None  # a retried delivery
        if waiter is not None and not waiter.future.done():
            waiter.future.set_result(text)
            return None
        if (
            record.direction is Direction.INBOUND
            and self._responder_for(record) is not None
            and not (self.answers_itself is not None and self.answers_itself(record.call_id))
        ):
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
        stored = await self._commit(
            live, None, EventType.DTMF, {"digits": digits}, dedupe_key=event.dedupe_key
        )
        waiter = live.waiter
        if (
            not stored
            or not digits
            or waiter is None
            or waiter.future.done()
            or (event.turn_token is not None and event.turn_token != waiter.turn_token)
        ):
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
            lambda: self.spawn(self._keys_done(live, waiter), f"dtmf-{live.record.call_id}"),
        )

    async def _keys_done(self, live: LiveCall, waiter: TranscriptWaiter) -> None:
        async with live.lock:
            live.dtmf_timer = None
            if not live.record.is_ended and live.waiter is waiter and not waiter.future.done():
                try:
                    await self._answer_with_keys(live, waiter)
                except VoicecallError as exc:
                    logger.warning(
                        "call %s: keys not applied: %s", live.record.call_id, exc.message
                    )

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
                responder.sentences(history, record.from_number)
            ) as sentences:
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
            if isinstance(exc, MediaError):
                # The stream closed under the reply (the caller hung up, or the media leg
                # broke): an apology could not be heard either, and trying it would only fail.
                return
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
                    record.metadata["interruptedUtterances"] = (
                        int(record.metadata.get("interruptedUtterances", 0)) + 1
                    )
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

    async def record_tool_call(
        self, call_id: str, tool_call_id: str, name: str, arguments: dict[str, Any]
    ) -> None:
        """The realtime model called a relayed tool: store and publish ``call.tool`` for the
        agent, who answers with ``voicecall.tool_result``."""
        live = await self._require_live(call_id)
        async with live.lock:
            await self._commit(
                live,
                None,
                EventType.TOOL,
                {"toolCallId": tool_call_id, "name": name, "arguments": arguments},
            )
