"""Two frames per write while the loop is behind (daemon.media.widening), in the policy alone
and in the pacer driving a real playback with a fake clock."""

from __future__ import annotations

import base64
import logging

import pytest

from daemon.loopload import LoopLoad
from daemon.media.pacer import FRAME_SECONDS, Pacer
from daemon.media.playback import Playback, Segment
from daemon.media.protocols import TwilioFraming
from daemon.media.widening import (
    BEHIND_SECONDS,
    BUSY_AT,
    NARROW_BELOW,
    STALL_SECONDS,
    Widening,
)
from tests.unit.test_media_pacer import LEAD, FakeLoop, Wire, frames

BASE, WIDE = 0.02, 0.04


class Gauge:
    """The loop's load as a test sets it: samples taken, the newest one's share."""

    def __init__(self) -> None:
        self.taken = 0
        self.latest = 0.0

    def second(self, load: float) -> None:
        self.taken += 1
        self.latest = load


def frames_late(widening: Widening, late: float, points: int = 30) -> None:
    for _ in range(points):
        widening.observe(late)


def test_widens_when_frames_leave_late_and_narrows_after_a_quiet_second_at_the_wide_period() -> (
    None
):
    gauge = Gauge()
    widening = Widening(BASE, WIDE, gauge)
    frames_late(widening, 0.015)
    assert widening.period() == BASE, "late, but under 20 ms on average"
    widening.observe(0.150)  # one long stall alone
    assert not widening.behind and widening.period() == BASE
    frames_late(widening, BEHIND_SECONDS + 0.005)
    assert widening.period() == WIDE and widening.widened == 1
    frames_late(widening, 0.0)
    gauge.second(0.3)  # this second began at the narrow period: it says nothing yet
    assert widening.period() == WIDE
    gauge.second(NARROW_BELOW)  # a whole second at the wide period, not quiet enough
    assert widening.period() == WIDE
    gauge.second(0.5)
    frames_late(widening, 0.03)
    assert widening.period() == WIDE, "never while the frames are late"
    frames_late(widening, 0.0)
    assert widening.period() == BASE
    assert not widening.is_wide
    frames_late(widening, 0.03)
    assert widening.period() == WIDE and widening.widened == 2
    widening.reset()
    assert widening.period() == BASE


def test_widens_when_the_loop_was_busy_a_whole_second_and_a_frame_stalled() -> None:
    """Past its core the loop sends most frames on time and the rest hundreds of ms late,
    behind long turns: its load and one such stall say so before any average of the frames'
    lateness. A busy second with every frame on time is no reason to widen."""
    gauge = Gauge()
    widening = Widening(BASE, WIDE, gauge)
    frames_late(widening, 0.004)
    gauge.second(BUSY_AT + 0.03)
    assert widening.period() == BASE, "busy, but the frames on time"
    widening.observe(STALL_SECONDS)
    gauge.second(BUSY_AT - 0.01)
    assert widening.period() == BASE, "a stall, but the loop had room that second"
    gauge.second(BUSY_AT)
    assert widening.period() == BASE, "a busy second after it, without one"
    widening.observe(STALL_SECONDS)
    assert widening.period() == WIDE, "a stall since the busy second"
    frames_late(widening, 0.0)
    gauge.second(0.8)  # the first wide second: the calls cost a sixth less, still too much
    gauge.second(NARROW_BELOW + 0.01)
    assert widening.period() == WIDE
    gauge.second(NARROW_BELOW - 0.01)
    assert widening.period() == BASE
    gauge.second(1.0)
    gauge.second(1.0)
    assert widening.period() == BASE, "an old stall does not count"


def test_loop_load_counts_its_samples_and_keeps_the_newest_second() -> None:
    now, run = [100.0], [0.0]
    load = LoopLoad(clock=lambda: now[0], times=lambda: (run[0], 0.0))
    load.sample()
    assert (load.taken, load.latest) == (0, 0.0)
    for busy in (0.9, 0.2):
        now[0] += 1.0
        run[0] += busy
        load.sample()
    assert load.taken == 2
    assert load.latest == pytest.approx(0.2)
    assert load.share == pytest.approx(0.55)


def speaking(loop: FakeLoop, gauge: Gauge | None) -> tuple[Pacer, Playback, Wire]:
    """A pacer (widening with `gauge`; none without) and a stream that has begun 300 frames."""
    widening = Widening(BASE, WIDE, gauge) if gauge is not None else None
    pacer = Pacer(clock=loop.time, call_at=loop.call_at, widening=widening)
    framing = TwilioFraming()
    framing.decode('{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1"}}')
    wire = Wire(loop)
    playback = Playback(framing, wire.write, pacer, lambda _: None, lead=LEAD, capacity=400)
    segment = Segment("Hello.")
    playback.begin(segment)
    playback.add_frames(segment, frames(300))
    return pacer, playback, wire


def test_the_pacer_writes_two_frames_a_tick_while_behind_and_one_again_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ticks 35 ms late make the loop behind: the grid's period becomes 40 ms from the last
    point pumped, each tick writes two frames, none leaves later than `lead - 40 ms` before
    it plays; once the loop has had a quiet second at that period, one frame a tick again,
    on the same lattice. The play clock loses and repeats nothing throughout."""
    caplog.set_level(logging.INFO, logger="daemon.media.pacer")
    loop, gauge = FakeLoop(), Gauge()
    pacer, playback, wire = speaking(loop, gauge)
    start = loop.now
    for _ in range(5):
        loop.run_next(late=0.035)
    assert pacer.interval == BASE, "a few late ticks are not yet behind"
    for _ in range(5):
        loop.run_next(late=0.035)
    assert pacer.interval == WIDE
    assert "the event loop is behind" in caplog.text and "40 ms at a time" in caplog.text
    [armed] = loop.pending()
    lattice = (armed.when - start) / FRAME_SECONDS
    assert lattice == pytest.approx(round(lattice)), "the wide grid is on the first one's lattice"
    loop.run_next()  # the first wide grid point: what the late ticks had not sent yet
    widened_at = len(wire.events("media"))
    writes = wire.writes
    for _ in range(10):  # the loop keeps up at the wide period
        before = len(wire.events("media"))
        loop.run_next()
        assert len(wire.events("media")) - before == 2
    assert wire.writes - writes == 10, "two frames, one write"
    assert len(wire.events("media")) - widened_at == 20
    gauge.second(0.9)
    gauge.second(0.4)
    loop.run_next()
    assert pacer.interval == BASE
    assert "has room again" in caplog.text
    for _ in range(10):
        before = len(wire.events("media"))
        due = loop.run_next()
        assert len(wire.events("media")) - before == 1
        lattice = (due - start) / FRAME_SECONDS
        assert lattice == pytest.approx(round(lattice))
    sent = wire.events("media")
    assert playback.next_play == pytest.approx(start + len(sent) * FRAME_SECONDS)
    payloads = [base64.b64decode(m["media"]["payload"]) for _, m in sent]  # type: ignore[index]
    assert payloads == frames(len(sent)), "every frame once, in order"
    margins = [start + i * FRAME_SECONDS - at for i, (at, _) in enumerate(sent)]
    assert max(margins) <= LEAD + 1e-9
    assert min(margins[widened_at:]) >= LEAD - WIDE - 1e-9


def test_a_stopped_clock_starts_again_at_the_base_period() -> None:
    loop, gauge = FakeLoop(), Gauge()
    pacer, playback, _ = speaking(loop, gauge)
    for _ in range(10):
        loop.run_next(late=0.035)
    assert pacer.interval == WIDE
    pacer.discard(playback)
    assert pacer.interval == BASE and loop.pending() == []
    assert pacer.widening is not None and not pacer.widening.is_wide


def test_no_widening_when_the_wide_period_is_not_wider() -> None:
    """`outbound_batch_overload_ms` at or below `outbound_batch_ms`: the period never changes
    (the daemon builds no widening then; a pacer without one keeps its interval)."""
    loop = FakeLoop()
    pacer, _, _ = speaking(loop, None)
    for _ in range(10):
        loop.run_next(late=0.035)
    assert pacer.deferral.strained and pacer.interval == BASE
