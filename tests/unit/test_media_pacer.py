"""The pacing clock and the per-stream playback queue, driven by a fake clock."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from daemon.config.model import OUTBOUND_BATCHES_MS
from daemon.media.gcpolicy import GcPauses
from daemon.media.pacer import DEFAULT_LEAD_SECONDS, FRAME_SECONDS, Pacer
from daemon.media.playback import MARK_GRACE_SECONDS, Playback, Segment, SegmentState
from daemon.media.protocols import TwilioFraming

LEAD = 0.08


@dataclass
class Timer:
    when: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeLoop:
    """A clock and a timer list; `run_next` jumps to the next timer (optionally late)."""

    now: float = 100.0
    timers: list[Timer] = field(default_factory=list)

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(when, callback)
        self.timers.append(timer)
        return timer

    def pending(self) -> list[Timer]:
        return [t for t in self.timers if not t.cancelled]

    def run_next(self, late: float = 0.0) -> float:
        timer = min(self.pending(), key=lambda t: t.when)
        self.timers.remove(timer)
        self.now = timer.when + late
        timer.callback()
        return timer.when


@dataclass
class Wire:
    """Collects what a playback writes, decoded back to JSON, with the time it was written
    (one write may hold several websocket frames; `writes` counts the calls)."""

    loop: FakeLoop
    sent: list[tuple[float, dict[str, object]]] = field(default_factory=list)
    accept: bool = True
    writes: int = 0

    def write(self, data: bytes) -> bool:
        self.writes += 1
        while data:
            length = data[1] & 0x7F
            start = 2 if length < 126 else 4
            if length == 126:
                length = int.from_bytes(data[2:4], "big")
            self.sent.append((self.loop.now, json.loads(data[start : start + length])))
            data = data[start + length :]
        return self.accept

    def events(self, name: str) -> list[tuple[float, dict[str, object]]]:
        return [(t, m) for t, m in self.sent if m["event"] == name]


def make(loop: FakeLoop, capacity: int = 150) -> tuple[Pacer, Playback, Wire, list[Segment]]:
    pacer = Pacer(clock=loop.time, call_at=loop.call_at)
    framing = TwilioFraming()
    framing.decode('{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1"}}')
    wire = Wire(loop)
    done: list[Segment] = []
    playback = Playback(framing, wire.write, pacer, done.append, lead=LEAD, capacity=capacity)
    return pacer, playback, wire, done


def frames(count: int) -> list[bytes]:
    return [bytes([i % 256]) * 160 for i in range(count)]


def test_first_frames_leave_at_once_up_to_the_lead() -> None:
    """Audio on an idle stream is sent immediately: the frames playing within the lead."""
    loop = FakeLoop()
    _, playback, wire, _ = make(loop)
    segment = Segment("Hello.")
    playback.begin(segment)
    playback.add_frames(segment, frames(20))
    # play times now, +20, +40, +60, +80 ms are all within now + 80 ms
    assert len(wire.events("media")) == int(LEAD / FRAME_SECONDS) + 1
    assert all(t == loop.now for t, _ in wire.sent)


def test_frames_due_together_leave_in_one_write() -> None:
    """The lead's frames at the start, and the frames a late tick finds due, go out in one
    write each (a system call saved per frame when the loop is behind); an on-time tick
    writes its one frame; a segment's mark keeps its place between the frames."""
    loop = FakeLoop()
    _, playback, wire, _ = make(loop)
    first, second = Segment("Hello."), Segment("Bye.")
    playback.begin(first)
    playback.add_frames(first, frames(10))
    playback.end(first)
    playback.begin(second)
    playback.add_frames(second, frames(10))
    playback.end(second)
    lead_frames = int(LEAD / FRAME_SECONDS) + 1
    assert (wire.writes, len(wire.events("media"))) == (1, lead_frames)
    loop.run_next()  # on time: the frame playing at +100 ms
    assert (wire.writes, len(wire.events("media"))) == (2, lead_frames + 1)
    loop.run_next(late=0.045)  # fires at +85 ms: the frames playing at +120, +140, +160
    assert (wire.writes, len(wire.events("media"))) == (3, lead_frames + 4)
    for _ in range(100):
        if not loop.pending():
            break
        loop.run_next()
    kinds = [m["event"] for _, m in wire.sent]
    assert kinds == ["media"] * 10 + ["mark"] + ["media"] * 10 + ["mark"], kinds


def test_one_frame_per_tick_on_an_absolute_grid() -> None:
    """After the lead, one frame leaves per tick; late ticks neither drift nor lose frames."""
    loop = FakeLoop()
    pacer, playback, wire, _ = make(loop)
    segment = Segment("Hello.")
    playback.begin(segment)
    playback.add_frames(segment, frames(100))
    start = loop.now
    due = []
    for n in range(60):
        due.append(loop.run_next(late=0.007 if n % 3 == 0 else 0.0))
    # the grid: every tick is due exactly n * 20 ms after the epoch, whatever the lateness
    assert due == pytest.approx([start + (n + 1) * FRAME_SECONDS for n in range(60)])
    sent = len(wire.events("media"))
    assert sent == int(LEAD / FRAME_SECONDS) + 1 + 60
    # the play clock advanced exactly one frame per frame sent: no drift
    assert playback.next_play == pytest.approx(start + sent * FRAME_SECONDS)
    assert pacer.ticks == 60


def test_a_stall_shorter_than_the_lead_is_absorbed() -> None:
    """After a 50 ms stall the tick sends what fell due and the play clock stays continuous."""
    loop = FakeLoop()
    _, playback, wire, _ = make(loop)
    segment = Segment("Hello.")
    playback.begin(segment)
    playback.add_frames(segment, frames(100))
    start = loop.now
    before = len(wire.events("media"))
    loop.run_next(late=0.05)  # tick due at +20 ms runs at +70 ms
    assert len(wire.events("media")) - before == 3  # play times +100, +120, +140 ms
    assert playback.next_play == pytest.approx(start + 8 * FRAME_SECONDS)


def test_a_stall_longer_than_the_lead_restarts_the_play_clock() -> None:
    """The far end ran dry: the clock restarts at now instead of sending audio 'in the past'."""
    loop = FakeLoop()
    _, playback, wire, _ = make(loop)
    segment = Segment("Hello.")
    playback.begin(segment)
    playback.add_frames(segment, frames(100))
    loop.run_next(late=0.2)
    assert playback.next_play - loop.now == pytest.approx(LEAD + FRAME_SECONDS)
    assert len(wire.events("media")) == 2 * (int(LEAD / FRAME_SECONDS) + 1)


def test_mark_follows_the_last_frame_and_its_echo_settles_the_segment() -> None:
    """The mark follows the segment's last frame; its echo settles it; the clock stops."""
    loop = FakeLoop()
    pacer, playback, wire, done = make(loop)
    segment = Segment("Hello.")
    playback.begin(segment)
    playback.add_frames(segment, frames(10))
    playback.end(segment)
    while not wire.events("mark"):
        loop.run_next()
    assert wire.sent[-1][1] == {"event": "mark", "streamSid": "MZ1", "mark": {"name": segment.mark}}
    assert len(wire.events("media")) == 10
    assert playback.busy and not done
    assert playback.on_mark(segment.mark)
    assert done == [segment] and segment.state is SegmentState.HEARD
    assert not playback.on_mark(segment.mark)  # a repeated echo is ignored
    loop.run_next()
    assert pacer.active == 0 and loop.pending() == []


def test_a_mark_never_echoed_counts_as_heard_after_the_grace() -> None:
    """A lost mark echo cannot hang wait_idle: it expires after the audio plus a grace."""
    loop = FakeLoop()
    _, playback, _, done = make(loop)
    segment = Segment("Hi.")
    playback.begin(segment)
    playback.add_frames(segment, frames(3))
    playback.end(segment)
    while not done:
        loop.run_next()
    assert segment.state is SegmentState.HEARD
    assert loop.now >= segment.play_end + MARK_GRACE_SECONDS


def test_clear_drops_the_queue_and_counts_only_played_frames() -> None:
    """Barge-in: clear is sent, queued frames are dropped, heard = frames whose time passed."""
    loop = FakeLoop()
    pacer, playback, wire, done = make(loop)
    segment = Segment("one two three four five six seven eight nine ten")
    playback.begin(segment)
    playback.add_frames(segment, frames(50))
    playback.end(segment)
    start = loop.now
    for _ in range(10):
        loop.run_next()
    cut = playback.clear(loop.now)
    assert wire.sent[-1][1] == {"event": "clear", "streamSid": "MZ1"}
    assert cut == [segment] and done == [segment]
    assert segment.state is SegmentState.CUT
    assert segment.heard_frames == round((loop.now - start) / FRAME_SECONDS)
    assert segment.frames_sent > segment.heard_frames  # the lead was sent but not heard
    assert segment.heard_fraction() == pytest.approx(segment.heard_frames / 50)
    assert not playback.busy and pacer.active == 0
    loop.timers.clear()
    count = len(wire.sent)
    playback.pump(loop.now + 1)
    assert len(wire.sent) == count


async def test_synthesis_waits_for_room_in_the_queue() -> None:
    """A full queue makes the producer wait until the pacer drained it below half."""
    loop = FakeLoop()
    _, playback, _, _ = make(loop, capacity=20)
    segment = Segment("Hello.")
    playback.begin(segment)
    playback.add_frames(segment, frames(40))
    assert playback.queued >= playback.capacity
    waiter = asyncio.ensure_future(playback.wait_room())
    await asyncio.sleep(0)
    assert not waiter.done()
    while playback.queued >= playback.capacity // 2:
        loop.run_next()
    await asyncio.wait_for(waiter, 1)


def test_a_failed_write_stops_the_stream() -> None:
    """When the writer refuses (peer gone or not reading), the queue is dropped."""
    loop = FakeLoop()
    pacer, playback, wire, _ = make(loop)
    wire.accept = False
    segment = Segment("Hello.")
    playback.begin(segment)
    playback.add_frames(segment, frames(20))
    assert wire.writes == 1, "nothing is written after a refused write"
    assert playback.queued == 0 and pacer.active == 0


def test_recording_keeps_send_and_play_times() -> None:
    """The benchmark hook records (send time, play time) per frame and tick lateness."""
    loop = FakeLoop()
    pacer = Pacer(clock=loop.time, call_at=loop.call_at)
    pacer.record()
    framing = TwilioFraming()
    framing.decode('{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1"}}')
    wire = Wire(loop)
    playback = Playback(framing, wire.write, pacer, lambda s: None, lead=LEAD)
    segment = Segment("Hello.")
    playback.begin(segment)
    playback.add_frames(segment, frames(10))
    loop.run_next(late=0.003)
    assert playback.trace is not None and len(playback.trace) == 2 * 6
    assert pacer.lateness is not None and list(pacer.lateness) == pytest.approx([0.003])


# ---------------------------------------------------------------------- poll: reads in a busy turn


def talking(count: int = 100) -> tuple[FakeLoop, Pacer, Wire]:
    """A stream that has just started an utterance of `count` frames."""
    loop = FakeLoop()
    pacer, playback, wire, _ = make(loop)
    segment = Segment("Hello.")
    playback.begin(segment)
    playback.add_frames(segment, frames(count))
    return loop, pacer, wire


def test_a_read_in_a_busy_loop_turn_sends_the_due_frame_before_the_timer_fires() -> None:
    """A grid point falls due while the loop is still running other callbacks (here: reads of
    media streams): the first read after it sends the frame, and the timer, firing once the
    turn ends, sends nothing more for that grid point."""
    loop, pacer, wire = talking()
    start, first = loop.now, len(wire.events("media"))
    loop.now = start + 0.019
    pacer.poll()
    assert len(wire.events("media")) == first, "not due yet: nothing sent"
    loop.now = start + 0.0215
    pacer.poll()
    pacer.poll()
    assert [t for t, _ in wire.events("media")[first:]] == [start + 0.0215], "one frame, at once"
    loop.run_next(late=0.014)  # the timer of that grid point, 14 ms late
    assert len(wire.events("media")) == first + 1
    loop.run_next()  # the next grid point, on time
    assert len(wire.events("media")) == first + 2
    assert pacer.ticks == 2


def test_the_timer_still_sends_a_grid_point_no_read_reached() -> None:
    """A late timer finds the grid point after the polled one due and nobody read since: it
    sends it, and the clock stays on its grid."""
    loop, pacer, wire = talking()
    start, first = loop.now, len(wire.events("media"))
    loop.now = start + 0.021
    pacer.poll()
    due = loop.run_next(late=0.025)  # grid point 1's timer, running in grid point 2's slot
    assert due == pytest.approx(start + 0.02)
    assert len(wire.events("media")) == first + 2
    [armed] = loop.pending()
    assert armed.when == pytest.approx(start + 0.06)


def test_poll_does_nothing_while_no_stream_ticks() -> None:
    """Before any stream, and after the last one left (its clock stopped), a read finds no
    tick to run."""
    loop = FakeLoop()
    pacer, _, wire, _ = make(loop)
    loop.now += 1.0
    pacer.poll()
    assert wire.sent == [] and pacer.ticks == 0 and loop.pending() == []

    class Quiet:
        def pump(self, now: float) -> bool:
            return True

    stream = Quiet()
    pacer.activate(stream)
    loop.run_next()
    pacer.discard(stream)
    ticks = pacer.ticks
    loop.now += 0.5
    pacer.poll()
    assert pacer.ticks == ticks and loop.pending() == []


def test_the_loop_stays_strained_while_reads_keep_the_frames_on_time() -> None:
    """The deferral's overload signal is how late the loop runs its timers, not how late the
    frames left: polled frames are on time while the loop is behind all the same."""
    loop, pacer, _ = talking(200)
    pacer.record()
    for _ in range(20):
        [armed] = loop.pending()
        loop.now = armed.when + 0.0005
        pacer.poll()
        loop.run_next(late=0.018)
    assert pacer.deferral.strained
    assert pacer.loop_late_max == pytest.approx(0.018), "the health line's loop stalls"
    assert pacer.lateness is not None and len(pacer.lateness) == 20
    assert max(pacer.lateness) <= 0.001, "every grid point's frames left within a millisecond"


async def test_on_a_real_loop_a_long_turn_of_reads_does_not_hold_the_frames_back() -> None:
    """One loop turn of 70 ms (a burst of reads, each followed by a poll as the media server
    does) no longer delays the ticks due within it: they run inside the turn, on time."""
    pumped: list[float] = []

    class Stream:
        def pump(self, now: float) -> bool:
            pumped.append(time.monotonic())
            return True

    loop = asyncio.get_running_loop()
    pacer = Pacer()
    pacer.activate(Stream())
    await asyncio.sleep(0.03)  # a couple of ordinary ticks
    before = len(pumped)
    turn_started = time.monotonic()

    def busy_turn() -> None:
        while time.monotonic() - turn_started < 0.07:
            time.sleep(0.001)  # a read's worth of work
            pacer.poll()

    loop.call_soon(busy_turn)
    await asyncio.sleep(0)
    inside = [t for t in pumped[before:] if t < turn_started + 0.07]
    assert len(inside) >= 3, f"ticks inside the 70 ms turn: {len(inside)}"
    gaps = [b - a for a, b in itertools.pairwise(inside)]
    assert max(gaps) < 0.035, gaps
    pacer.close()


def test_a_tick_that_fails_between_reads_does_not_fail_the_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The tick runs inside another stream's read handler: a fault in it is logged there, and
    the timer goes on ticking."""
    loop = FakeLoop()
    pacer = Pacer(clock=loop.time, call_at=loop.call_at)
    calls: list[float] = []

    class Faulty:
        def pump(self, now: float) -> bool:
            calls.append(now)
            if len(calls) == 1:
                raise RuntimeError("broken stream")
            return True

    pacer.activate(Faulty())
    [armed] = loop.pending()
    loop.now = armed.when + 0.001
    pacer.poll()  # must not raise into the read
    assert "a tick run between reads failed" in caplog.text
    loop.run_next(late=0.001)
    loop.run_next()
    assert len(calls) == 2, "the next grid point is pumped by its timer"


def test_the_health_line_reports_the_loops_worst_timer_lateness_and_starts_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ticks run between reads leave on time while the loop itself stalls: the health line
    still shows the stalls, as how late the loop ran the pacer's timer at worst."""
    loop, pacer, _ = talking()
    [armed] = loop.pending()
    loop.now = armed.when + 0.001
    pacer.poll()
    loop.run_next(late=0.037)
    caplog.set_level("INFO", logger="daemon.media.pacer")
    pacer._report(1)
    assert "run between reads); synthesis deferred 0 times; timers up to 37 ms late" in caplog.text
    assert pacer.loop_late_max == 0.0


def test_the_health_line_reports_the_collectors_pauses_and_starts_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A collection stops the loop like any stall: the line says how many ran, for how long
    in all and at worst, from the media hub's timing of them; the next line starts over."""
    _, pacer, _ = talking()
    moments = iter([10.0, 10.004, 20.0, 20.0125])
    pauses = GcPauses(clock=lambda: next(moments))
    pacer.gc_pauses = pauses
    for _ in range(2):
        pauses._callback("start", {"generation": 0})
        pauses._callback("stop", {"generation": 0})
    caplog.set_level("INFO", logger="daemon.media.pacer")
    pacer._report(1)
    assert "; 2 collections took 16 ms, the longest 12.5 ms" in caplog.text
    caplog.clear()
    pacer._report(1)
    assert "; 0 collections took 0 ms, the longest 0.0 ms" in caplog.text


@pytest.mark.parametrize("frames_per_write", [2, 3])
def test_a_longer_period_writes_that_many_frames_at_once_and_each_still_ahead_of_its_time(
    frames_per_write: int,
) -> None:
    """`streaming.outbound_batch_ms` of 40 or 60: every tick writes a stream's next two or
    three frames in one call, each its own message, none later than `lead - period` before
    it plays, and the play clock neither drifts nor loses a frame."""
    loop = FakeLoop()
    period = frames_per_write * FRAME_SECONDS
    pacer = Pacer(clock=loop.time, call_at=loop.call_at, interval=period)
    framing = TwilioFraming()
    framing.decode('{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1"}}')
    wire = Wire(loop)
    done: list[Segment] = []
    playback = Playback(framing, wire.write, pacer, done.append, lead=LEAD, capacity=150)
    segment = Segment("Hello.")
    playback.begin(segment)
    playback.add_frames(segment, frames(100))
    start = loop.now
    lead_frames = int(LEAD / FRAME_SECONDS) + 1
    assert (wire.writes, len(wire.events("media"))) == (1, lead_frames)
    for n in range(20):
        before = len(wire.events("media"))
        due = loop.run_next(late=0.005 if n % 4 == 1 else 0.0)
        assert due == pytest.approx(start + (n + 1) * period)  # an absolute grid
        assert len(wire.events("media")) - before == frames_per_write
    assert wire.writes == 21  # one write per tick, however many frames it held
    sent = len(wire.events("media"))
    assert playback.next_play == pytest.approx(start + sent * FRAME_SECONDS)
    # each frame's play time is start + i * 20 ms; it left at least lead - period before it
    margins = [start + i * FRAME_SECONDS - at for i, (at, _) in enumerate(wire.events("media"))]
    assert min(margins[lead_frames:]) >= LEAD - period - 0.005 - 1e-9
    assert max(margins) <= LEAD + 1e-9


def test_every_allowed_outbound_batch_leaves_frames_ahead_of_their_play_time() -> None:
    """`streaming.outbound_batch_ms` is bounded by the lead: a period as long as the lead
    would send some frames at their play time, no earlier (the key's rule says why)."""
    assert all(ms % 20 == 0 for ms in OUTBOUND_BATCHES_MS)
    assert max(OUTBOUND_BATCHES_MS) / 1000 <= DEFAULT_LEAD_SECONDS - FRAME_SECONDS + 1e-9
