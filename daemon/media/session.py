"""One live media stream bound to a call: speech out (TTS -> frames), audio in (-> STT), DTMF.

The contract the telephony providers code against is small: :meth:`MediaSession.speak` queues
text and returns, :meth:`MediaSession.wait_idle` returns once everything queued was heard (the
mark after the last sentence came back) or dropped, :meth:`MediaSession.clear` is barge-in.

Speech goes out sentence by sentence (``split_sentences``): the first sentence is synthesised
and streamed while the vendor still works on it, the next one is synthesised as soon as the
previous synthesis ends (the bounded frame queue is the prefetch window). Caller speech start
reported by STT stops playback at once, except while an outbound conversation call plays its
greeting (the callee's "hello?" must not cut it: OpenClaw's rule) and on notify calls, which
are one-way announcements. What was actually heard is kept per utterance
(:class:`UtteranceResult`), for the transcript.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from daemon.errors import MediaError, SpeechError
from daemon.media.framing import Framer
from daemon.media.pacer import FRAME_SECONDS
from daemon.media.playback import Playback, Segment, SegmentState
from daemon.media.protocols import MediaFraming, StreamEvent, StreamMessage
from daemon.media.wire import FrameWriter, text_frame
from daemon.model.events import EventType, ProviderEvent
from daemon.speech.sentences import split_sentences

if TYPE_CHECKING:
    from daemon.media.hub import MediaHub
    from daemon.speech.stt.base import SttSession

logger = logging.getLogger(__name__)

CLOSE_TRY_AGAIN = 1013
"""Websocket close code "try again later": overload and back-pressure (SPEC 9)."""
HISTORY = 16
"""Utterance results kept per session."""


@dataclass(frozen=True, slots=True)
class UtteranceResult:
    """What became of one ``speak`` call."""

    text: str
    """What was asked to be said."""
    heard_text: str
    """The part the caller heard: whole sentences heard, plus the words of a cut sentence
    in proportion to its frames played (an estimate: speech rate is not uniform)."""
    interrupted: bool
    """True when barge-in, a hang-up or a synthesis failure stopped it early."""
    heard_ms: int


class SpeechAgent(Protocol):
    """A voice that speaks for the call instead of TTS: the realtime model (SPEC 15).

    It plays through the session's :class:`Playback` (same pacer, marks and ``clear``), is
    told when each of its segments settles, and keeps the session busy while it has speech
    requested or playing, so ``wait_idle`` covers it.
    """

    @property
    def busy(self) -> bool:
        """True while speech is requested, being generated or still playing."""

    async def say(self, text: str) -> None:
        """Have ``text`` said (returns once it is requested)."""

    def segment_done(self, segment: Segment) -> None:
        """One of its segments was heard, cut or failed."""


class _Utterance:
    __slots__ = ("first", "segments", "text")

    def __init__(self, text: str, segments: list[Segment], first: bool) -> None:
        self.text = text
        self.segments = segments
        self.first = first

    def result(self) -> UtteranceResult:
        heard: list[str] = []
        frames = 0
        interrupted = False
        for segment in self.segments:
            frames += segment.heard_frames
            if segment.state is SegmentState.HEARD:
                heard.append(segment.text)
                continue
            interrupted = True
            words = segment.text.split()
            count = round(len(words) * segment.heard_fraction())
            if count:
                heard.append(" ".join(words[:count]))
        return UtteranceResult(
            self.text, " ".join(heard), interrupted, round(frames * FRAME_SECONDS * 1000)
        )


class MediaSession:
    """A started, authorised stream of one call."""

    def __init__(
        self,
        hub: MediaHub,
        *,
        call_id: str,
        provider_call_id: str,
        stream_id: str,
        framing: MediaFraming,
        writer: FrameWriter,
        close: Callable[[int, str], None],
        suppress_first: bool = False,
        barge_in: bool = True,
    ) -> None:
        """``close(code, reason)`` asks the socket owner to close the websocket."""
        self.hub = hub
        self.call_id = call_id
        self.provider_call_id = provider_call_id
        self.stream_id = stream_id
        self.framing = framing
        self._writer = writer
        self._close_socket = close
        self.received = 0
        """Messages received (``daemon.media.readbatch`` watches it for a stalled socket)."""
        self.playback = Playback(
            framing,
            self._write,
            hub.pacer,
            self._segment_done,
            lead=hub.lead,
            capacity=hub.capacity,
        )
        self._pending: deque[Segment] = deque()
        self._utterances: deque[_Utterance] = deque()
        self._speaker: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._spoken = False
        self._suppress = suppress_first
        self._barge_in = barge_in
        self._outbox: deque[ProviderEvent] = deque()
        self._emitter: asyncio.Task[None] | None = None
        self.stt: SttSession | None = None
        self.agent: SpeechAgent | None = None
        """Set in realtime mode: it speaks instead of TTS (and is also ``stt``, the audio sink)."""
        self.closed = False
        self.replaced = False
        """A newer stream of the same call took over (its close does not end the call)."""
        self.revoked = False
        """The call ended or the daemon stops (its close does not end the call either)."""
        self._close_requested = False
        self.history: deque[UtteranceResult] = deque(maxlen=HISTORY)
        """The latest utterance results, oldest first."""

    # ------------------------------------------------------------------ speaking

    async def speak(self, text: str, *, turn_token: str | None = None) -> None:
        """Queue ``text`` to be synthesised and streamed; returns once it is queued.

        ``turn_token`` is accepted for the provider interface; stream transcripts are not
        token-tagged (the engine takes token-less transcripts for the current turn).

        Raises:
            MediaError: the stream has closed, or no TTS engine is configured.
        """
        if self.closed:
            raise MediaError(f"media stream of call {self.call_id} has closed")
        if self.agent is not None:
            await self.agent.say(text)
            return
        if self.hub.tts_for(self.call_id) is None:
            raise MediaError("no TTS engine is configured for media streams; set tts.provider")
        sentences = split_sentences(text) or ([text.strip()] if text.strip() else [])
        if not sentences:
            return
        segments = [Segment(sentence) for sentence in sentences]
        self._utterances.append(_Utterance(text, segments, first=not self._spoken))
        self._spoken = True
        self._pending.extend(segments)
        self._idle.clear()
        if self._speaker is None:
            self._speaker = asyncio.create_task(self._speak_loop(), name=f"tts-{self.call_id}")

    async def wait_idle(self) -> None:
        """Return once everything queued has been heard (or was cleared, or the stream ended)."""
        await self._idle.wait()

    @property
    def speaking(self) -> bool:
        """True while speech is queued, being synthesised or still playing."""
        return not self._idle.is_set()

    def clear(self) -> None:
        """Barge-in: stop speaking now. Sends ``clear``, drops queued audio and sentences."""
        if self.closed or not self.speaking:
            return
        self._stop_speaking(send_clear=True)

    def _stop_speaking(self, *, send_clear: bool) -> None:
        if self._speaker is not None:
            self._speaker.cancel()
            self._speaker = None
        pending, self._pending = list(self._pending), deque()
        self.playback.clear(self.hub.pacer.now(), send=send_clear)
        for segment in pending:
            segment.state = SegmentState.CUT
            self._segment_done(segment)
        self._check_idle()

    async def _speak_loop(self) -> None:
        tts = self.hub.tts_for(self.call_id)
        assert tts is not None
        playback = self.playback
        deferral = self.hub.pacer.deferral

        def queued() -> int:
            return playback.queued

        while self._pending:
            segment = self._pending.popleft()
            playback.begin(segment)
            framer = Framer()
            failed = False
            chunks = self.hub.take_prefetch(self.call_id, segment.text) or tts.synthesize(
                segment.text
            )
            try:
                async for chunk in chunks:
                    frames = framer.push(chunk)
                    if frames:
                        playback.add_frames(segment, frames)
                        if playback.queued >= playback.capacity:
                            await playback.wait_room()
                        if deferral.strained:  # the loop is behind: audio ahead can wait
                            await deferral.wait(queued)
                tail = framer.flush()
                if tail is not None:
                    playback.add_frames(segment, (tail,))
            except SpeechError as exc:
                failed = True
                logger.warning("call %s: speech synthesis failed: %s", self.call_id, exc.message)
                self._emit(
                    ProviderEvent(
                        EventType.ERROR,
                        self.provider_call_id,
                        call_id=self.call_id,
                        error=exc.message,
                    )
                )
            except Exception:
                failed = True
                logger.exception("call %s: speech synthesis failed", self.call_id)
            finally:
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
            playback.end(segment, failed=failed)
        self._speaker = None
        self._check_idle()

    def _segment_done(self, segment: Segment) -> None:
        if self.agent is not None:
            self.agent.segment_done(segment)
        while self._utterances and all(s.done for s in self._utterances[0].segments):
            utterance = self._utterances.popleft()
            result = utterance.result()
            self.history.append(result)
            if utterance.first:
                self._suppress = False
            self.hub.utterance_finished(self, result)
        self._check_idle()

    def _check_idle(self) -> None:
        if not (
            self._pending
            or self._speaker is not None
            or self.playback.busy
            or (self.agent is not None and self.agent.busy)
        ):
            self._idle.set()

    def refresh_idle(self) -> None:
        """The agent's busy state changed: follow it."""
        if self.agent is not None and self.agent.busy and not self.closed:
            self._idle.clear()
        else:
            self._check_idle()

    def _write(self, frame: bytes) -> bool:
        if self._writer.write(frame):
            return True
        if self._writer.overflowed:
            logger.warning("call %s: media peer stopped reading; closing the stream", self.call_id)
            self.request_close(CLOSE_TRY_AGAIN, "Backpressure: send buffer exceeded")
        return False

    def request_close(self, code: int, reason: str) -> None:
        """Ask the socket owner to close the websocket (once)."""
        if not self._close_requested:
            self._close_requested = True
            self._writer.close()
            self._close_socket(code, reason)

    # ------------------------------------------------------------------ inbound

    def feed(self, text: str) -> bool:
        """Handle one inbound text message (media on the fast path, the rest parsed).

        Returns False for ``stop``: the provider ended the stream.
        """
        self.received += 1
        payload = self.framing.media_payload(text)
        if payload is not None:
            self._audio(payload)
            return True
        message = self.framing.decode(text)
        if message is None:
            return True
        if message.kind is StreamEvent.STOP:
            return False
        self.handle(message)
        return True

    def _audio(self, payload: str) -> None:
        stt = self.stt
        if stt is None:
            return
        try:
            stt.send_audio(binascii.a2b_base64(payload))
        except binascii.Error:
            pass  # a corrupt frame is dropped, like a lost packet

    def handle(self, message: StreamMessage) -> None:
        """Act on a parsed message (``stop`` is the socket owner's business)."""
        kind = message.kind
        if kind is StreamEvent.MEDIA and message.payload is not None:
            self._audio(message.payload)
        elif kind is StreamEvent.MARK and message.name:
            if self.playback.on_mark(message.name):
                self._check_idle()
        elif kind is StreamEvent.DTMF and message.digit:
            self._emit(
                ProviderEvent(
                    EventType.DTMF,
                    self.provider_call_id,
                    call_id=self.call_id,
                    digits=message.digit,
                    is_final=False,
                )
            )
        elif kind is StreamEvent.ERROR:
            self.hub.stream_failed(self, message.error or "error frame")

    # ------------------------------------------------------------------ STT listener

    def on_speech_start(self) -> None:
        """Barge-in, unless suppressed (outbound greeting, notify call)."""
        if self._barge_in and not self._suppress:
            self.clear()

    def on_partial(self, text: str) -> None:
        """Partials are not recorded (they would cost a store write each)."""

    def on_final(self, text: str, confidence: float | None) -> None:
        """A caller turn: hand it to the engine, token-less (the current turn's)."""
        if self._suppress and self.speaking:
            logger.info("call %s: transcript during the outbound greeting dropped", self.call_id)
            return
        self._emit(
            ProviderEvent(
                EventType.SPEECH,
                self.provider_call_id,
                call_id=self.call_id,
                transcript=text,
                is_final=True,
                confidence=confidence,
                turn_token=None,
            )
        )

    def on_error(self, error: SpeechError) -> None:
        """STT gave up for good: report it on the call (the bot can still speak)."""
        self._emit(
            ProviderEvent(
                EventType.ERROR, self.provider_call_id, call_id=self.call_id, error=error.message
            )
        )

    # ------------------------------------------------------------------ events, close

    def emit(self, event: ProviderEvent) -> None:
        """Deliver an event to the engine, in order with the session's own."""
        self._emit(event)

    def _emit(self, event: ProviderEvent) -> None:
        """Deliver events to the engine in order, without blocking the caller."""
        self._outbox.append(event)
        if self._emitter is None:
            self._emitter = self.hub.spawn(self._drain(), f"media-events-{self.call_id}")

    async def _drain(self) -> None:
        try:
            while self._outbox:
                event = self._outbox.popleft()
                try:
                    await self.hub.sink([event])
                except Exception:  # one bad event must not strand the ones behind it
                    logger.exception(
                        "call %s: the engine refused a %s event", self.call_id, event.type.value
                    )
        finally:
            self._emitter = None

    def send_now(self, text: str) -> bool:
        """Write one message immediately, outside the paced queue."""
        return self._write(text_frame(text))

    async def close(self) -> None:
        """The socket is gone: settle speech (as cut), stop STT. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._writer.close()
        self._stop_speaking(send_clear=False)
        self.hub.pacer.discard(self.playback)
        self.playback.detach()
        self._idle.set()
        stt, self.stt = self.stt, None
        if stt is not None:
            try:
                async with asyncio.timeout(5):
                    await stt.close()
            except (TimeoutError, OSError, SpeechError) as exc:
                logger.warning("call %s: closing STT failed: %s", self.call_id, exc)
        self.agent = None  # a realtime bridge refers back to this session: no cycle left
