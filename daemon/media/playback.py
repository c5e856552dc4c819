"""Outbound audio of one stream: a bounded frame queue on its own play clock, marks, clear.

Frames are turned into complete websocket frames (:func:`daemon.media.wire.text_frame`) when
the audio arrives, so the pacer's tick only pops and writes. The stream's play clock
(``next_play``) is the time its next frame will start playing at the far end; a frame is sent
once ``next_play <= now + lead``. So the first ``lead`` of an utterance leaves at once (the
first frame goes out the moment audio exists, not at the next tick), after which one frame
leaves per tick, always ``lead`` ahead: a tick up to ``lead - 20 ms`` late is inaudible. When
the queue runs dry the clock restarts at the next frame (a gap the caller hears as silence).

Each synthesised sentence is a :class:`Segment`; a mark follows its last frame and the
provider echoes the mark when the caller has heard it. Barge-in (:meth:`Playback.clear`) drops
the queue, sends ``clear`` and works out how much of each segment was actually played, from
the play clock: frames sent but still in the provider's buffer were not heard.
"""

from __future__ import annotations

import asyncio
import itertools
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from enum import StrEnum

from daemon.media.pacer import DEFAULT_LEAD_SECONDS, FRAME_SECONDS, Pacer
from daemon.media.protocols import MediaFraming
from daemon.media.wire import AudioFrames, text_frame

DEFAULT_CAPACITY_FRAMES = 150
"""Frames queued per stream (3 s, about 45 KiB): synthesis pauses when it is this far ahead."""
MARK_GRACE_SECONDS = 2.0
"""A mark not echoed this long after its audio should have played counts as heard anyway."""

_names = itertools.count(1)


class SegmentState(StrEnum):
    """How a segment ended."""

    PENDING = "pending"
    HEARD = "heard"
    """The provider echoed its mark: every frame was played."""
    CUT = "cut"
    """Barge-in or hang-up stopped it; ``heard_frames`` says how much was played."""
    FAILED = "failed"
    """Synthesis failed; ``heard_frames`` were played before it did."""


class Segment:
    """One sentence on its way to the caller."""

    __slots__ = (
        "first_play",
        "frames_queued",
        "frames_sent",
        "heard_frames",
        "mark",
        "mark_deadline",
        "play_end",
        "state",
        "synthesized",
        "text",
    )

    def __init__(self, text: str) -> None:
        self.text = text
        self.mark = f"vc-{next(_names)}"
        self.frames_queued = 0
        self.frames_sent = 0
        self.first_play = -1.0
        """Play-clock time of its first frame; negative until one was sent."""
        self.play_end = -1.0
        self.mark_deadline = 0.0
        self.synthesized = False
        self.state = SegmentState.PENDING
        self.heard_frames = 0

    @property
    def done(self) -> bool:
        """True once the segment was heard, cut or failed."""
        return self.state is not SegmentState.PENDING

    def heard_fraction(self, chars_per_second: float = 14.0) -> float:
        """Share of the text the caller heard (by frames; estimated while still synthesising)."""
        if self.state is SegmentState.HEARD:
            return 1.0
        total = self.frames_queued
        if not self.synthesized:
            total = max(total, round(len(self.text) / chars_per_second / FRAME_SECONDS))
        return min(1.0, self.heard_frames / total) if total else 0.0


SegmentCallback = Callable[[Segment], None]


class Playback:
    """The pacer-driven outbound queue of one stream."""

    __slots__ = (
        "_frames",
        "_mark_due",
        "_marked",
        "_queue",
        "_room",
        "_unsent",
        "_write",
        "capacity",
        "framing",
        "lead",
        "next_play",
        "on_done",
        "pacer",
        "trace",
    )

    def __init__(
        self,
        framing: MediaFraming,
        write: Callable[[bytes], bool],
        pacer: Pacer,
        on_done: SegmentCallback,
        *,
        lead: float = DEFAULT_LEAD_SECONDS,
        capacity: int = DEFAULT_CAPACITY_FRAMES,
    ) -> None:
        """``write`` sends one prepared websocket frame and returns False once it cannot."""
        self.framing = framing
        self._write = write
        self.pacer = pacer
        self.on_done = on_done
        self.lead = lead
        self.capacity = capacity
        self._queue: deque[bytes | Segment] = deque()
        """Prepared media frames; a Segment entry means "send its mark now"."""
        self._unsent: deque[Segment] = deque()
        """Segments whose mark has not been sent; frames popped belong to the first."""
        self._marked: dict[str, Segment] = {}
        self._mark_due = float("inf")
        """The earliest ``mark_deadline`` of ``_marked``: the tick scans them only then."""
        self._room = asyncio.Event()
        self._room.set()
        self._frames = AudioFrames()
        self.next_play = 0.0
        self.trace: array[float] | None = array("d") if pacer.recording else None
        """Benchmark hook: (send time, play time) pairs of every frame, flattened."""

    # ------------------------------------------------------------------ producer side

    @property
    def queued(self) -> int:
        """Entries waiting to be sent."""
        return len(self._queue)

    @property
    def busy(self) -> bool:
        """True while audio is queued or a sent segment awaits its mark."""
        return bool(self._queue or self._unsent or self._marked)

    def begin(self, segment: Segment) -> None:
        """Frames added from now on belong to ``segment``."""
        self._unsent.append(segment)

    def add_frames(self, segment: Segment, frames: Iterable[bytes]) -> None:
        """Queue 160-byte mu-law frames of the current segment, prepared for the wire."""
        queue = self._queue
        before = len(queue)
        queue.extend(self._frames.build(self.framing, frames))
        segment.frames_queued += len(queue) - before
        self._kick()

    def end(self, segment: Segment, *, failed: bool = False) -> None:
        """No more audio for ``segment``: its mark follows its last frame."""
        segment.synthesized = not failed
        if failed and segment.frames_queued == 0:
            if segment in self._unsent:
                self._unsent.remove(segment)
            self._finish(segment, SegmentState.FAILED)
            return
        self._queue.append(segment)
        self._kick()

    async def wait_room(self) -> None:
        """Return once the queue has room (synthesis runs at most ``capacity`` ahead)."""
        while len(self._queue) >= self.capacity:
            self._room.clear()
            await self._room.wait()

    def _kick(self) -> None:
        """An idle stream sends what is due right away (no wait for the next tick), then
        ticks with the rest. A ticking stream is left to the tick: pumping it from here would
        send a frame early and make that tick's interval short and the next one long."""
        pacer = self.pacer
        if not pacer.is_active(self) and self.pump(pacer.now()):
            pacer.activate(self)

    # ------------------------------------------------------------------ pacer side

    def pump(self, now: float) -> bool:
        """Send every frame due by ``now + lead``; True while work (or a mark) remains.

        Runs for every talking stream on every tick (SPEC 12): locals instead of attribute
        round trips, and pending marks are looked at only once the earliest of them is due.
        The frames due together go out in one write: one most ticks, several after a late
        tick, when a write (a system call, and on loopback the reader's wake-up too) saved per
        frame is worth most: the later the loop, the cheaper its catching up.
        """
        queue = self._queue
        if queue:
            next_play = self.next_play
            if next_play < now:
                next_play = self.pacer.align(now)  # idle or starved: restart on the grid
            horizon = now + self.lead + 1e-6  # float sums of 0.02 must not lose a frame
            trace = self.trace
            due = b""
            while queue and next_play <= horizon:
                item = queue.popleft()
                if type(item) is bytes:
                    segment = self._unsent[0]
                    if segment.frames_sent == 0:
                        segment.first_play = next_play
                    segment.frames_sent += 1
                    # A join per frame is fine: a pump sends at most the lead's frames (a
                    # stream further behind restarts on the grid above).
                    due = due + item if due else item
                    if trace is not None:
                        trace.append(now)
                        trace.append(next_play)
                    next_play += FRAME_SECONDS
                elif isinstance(item, Segment):
                    self.next_play = next_play
                    if due and not self._write(due):
                        queue.clear()
                        return False
                    due = b""
                    self._send_mark(item)
            self.next_play = next_play
            if due and not self._write(due):
                queue.clear()
                return False
            if len(queue) < self.capacity // 2 and not self._room.is_set():
                self._room.set()
        if now >= self._mark_due:
            self._expire_marks(now)
        return bool(queue or self._marked)

    def _send_mark(self, segment: Segment) -> None:
        if self._unsent and self._unsent[0] is segment:
            self._unsent.popleft()
        segment.play_end = max(self.next_play, segment.first_play)
        segment.mark_deadline = segment.play_end + MARK_GRACE_SECONDS
        self._marked[segment.mark] = segment
        self._mark_due = min(self._mark_due, segment.mark_deadline)
        self._write(text_frame(self.framing.encode_mark(segment.mark)))

    def _expire_marks(self, now: float) -> None:
        marked = self._marked
        expired = [name for name, segment in marked.items() if now >= segment.mark_deadline]
        segments = [marked.pop(name) for name in expired]
        # An echoed mark only leaves this early (one harmless rescan); set before the
        # callbacks below, which may add marks of their own.
        self._mark_due = min((s.mark_deadline for s in marked.values()), default=float("inf"))
        for segment in segments:
            self._heard(segment)

    def on_mark(self, name: str) -> bool:
        """The provider echoed a mark: that segment was heard. False for unknown marks
        (Twilio also echoes marks that a ``clear`` dropped; those were handled already)."""
        segment = self._marked.pop(name, None)
        if segment is None:
            return False
        self._heard(segment)
        return True

    def _heard(self, segment: Segment) -> None:
        segment.heard_frames = segment.frames_sent
        self._finish(
            segment, SegmentState.FAILED if not segment.synthesized else SegmentState.HEARD
        )

    def detach(self) -> None:
        """Forget the session's callbacks once it ended: they are its bound methods, so the
        session and its playback would otherwise be a reference cycle that only a full
        collection frees (``daemon.media.gcpolicy``: while calls are live nothing old is
        walked). Writes are refused from then on and finished segments go unreported."""
        self._write = _refuse
        self.on_done = _ignore

    def _finish(self, segment: Segment, state: SegmentState) -> None:
        if segment.done:
            return
        segment.state = state
        self.on_done(segment)

    # ------------------------------------------------------------------ barge-in

    def clear(self, now: float, *, send: bool = True) -> list[Segment]:
        """Drop everything queued, tell the provider (``clear``), and settle every segment.

        Returns the segments that were cut (in order), each with ``heard_frames`` set from the
        play clock: a frame counts as heard only if its play time had passed.
        """
        self._queue.clear()
        self._room.set()
        if send:
            self._write(text_frame(self.framing.encode_clear()))
        cut: list[Segment] = []
        for segment in [*self._marked.values(), *self._unsent]:
            if segment.first_play < 0:
                played = 0
            else:
                played = int((now - segment.first_play) / FRAME_SECONDS + 1e-9)
            segment.heard_frames = max(0, min(segment.frames_sent, played))
            if segment.synthesized and segment.heard_frames >= segment.frames_queued:
                self._finish(segment, SegmentState.HEARD)
            else:
                self._finish(segment, SegmentState.CUT)
                cut.append(segment)
        self._marked.clear()
        self._mark_due = float("inf")
        self._unsent.clear()
        self.next_play = 0.0
        self.pacer.discard(self)
        return cut


def _refuse(frame: bytes) -> bool:
    """A detached playback's writer: the stream is gone."""
    del frame
    return False


def _ignore(segment: Segment) -> None:
    """A detached playback's segment callback: nobody is listening."""
    del segment
