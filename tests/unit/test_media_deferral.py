"""Synthesis ahead of need waits while the loop is behind (daemon/media/deferral.py): the
policy on its own, then a real session whose pacer is driven by a fake clock, late or on time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from daemon.media.deferral import FLOOR_FRAMES, RELEASE_PER_TICK, STRAIN_SECONDS, Deferral
from daemon.media.hub import MediaHub
from daemon.media.pacer import Pacer
from daemon.media.prefetch import Prefetch
from tests.unit.test_media_hub import Calls, Transport, make_session
from tests.unit.test_media_pacer import FakeLoop

LATE = STRAIN_SECONDS * 5


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def strain(deferral: Deferral) -> None:
    while not deferral.strained:
        deferral.tick(LATE)


class Depth:
    """A speaker's queue depth, set by the test."""

    def __init__(self, frames: int) -> None:
        self.frames = frames

    def __call__(self) -> int:
        return self.frames


async def test_nothing_waits_while_the_loop_keeps_up() -> None:
    deferral = Deferral()
    deferral.tick(0.001)
    await asyncio.wait_for(deferral.wait(Depth(1000)), 0.1)
    assert deferral.deferred == 0


async def test_one_late_tick_is_not_an_overload_a_run_of_them_is() -> None:
    deferral = Deferral()
    deferral.tick(0.02)  # one loop turn of 20 ms
    assert not deferral.strained
    for _ in range(3):
        deferral.tick(0.02)
    assert deferral.strained
    for _ in range(3):  # and a few ticks on time end it
        deferral.tick(0.0)
    assert not deferral.strained


async def test_below_the_floor_nothing_waits_even_when_strained() -> None:
    deferral = Deferral()
    strain(deferral)
    await asyncio.wait_for(deferral.wait(Depth(FLOOR_FRAMES - 1)), 0.1)
    assert deferral.deferred == 0


async def test_parked_speakers_go_a_few_per_tick_oldest_first_once_ticks_are_on_time() -> None:
    deferral = Deferral()
    strain(deferral)
    order: list[int] = []

    async def speaker(n: int) -> None:
        await deferral.wait(Depth(100))
        order.append(n)

    tasks = [asyncio.create_task(speaker(n)) for n in range(RELEASE_PER_TICK * 2 + 1)]
    await settle()
    assert deferral.parked == len(tasks) and order == []
    deferral.tick(LATE)  # still behind: nobody goes
    await settle()
    assert order == []
    while deferral.strained:
        deferral.tick(0.0)
    await settle()
    assert order == list(range(RELEASE_PER_TICK))
    deferral.tick(0.0)
    await settle()
    assert order == list(range(RELEASE_PER_TICK * 2))
    deferral.tick(0.0)
    await asyncio.gather(*tasks)
    assert deferral.parked == 0


async def test_a_speaker_whose_queue_played_down_to_the_floor_goes_at_once() -> None:
    deferral = Deferral()
    strain(deferral)
    depth = Depth(100)
    waiting = asyncio.create_task(deferral.wait(depth))
    await settle()
    depth.frames = FLOOR_FRAMES - 1
    deferral.tick(LATE)
    await asyncio.wait_for(waiting, 0.1)
    assert deferral.strained


async def test_a_cancelled_speaker_leaves_no_trace_and_release_all_frees_the_rest() -> None:
    deferral = Deferral()
    strain(deferral)
    cancelled = asyncio.create_task(deferral.wait(Depth(100)))
    kept = asyncio.create_task(deferral.wait(Depth(100)))
    await settle()
    cancelled.cancel()
    await settle()
    assert deferral.parked == 1
    deferral.release_all()
    await asyncio.wait_for(kept, 0.1)
    assert deferral.parked == 0 and not deferral.strained


# ---------------------------------------------------------------------- through a session


class ChunkTts:
    """Yields `chunks` chunks of 5 frames, each only when pulled; counts what was pulled."""

    name = "chunks"

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.pulled = 0

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.pulled += 1
            yield b"\x01" * 800


async def test_a_strained_loop_keeps_a_stream_at_the_floor_then_lets_it_fill() -> None:
    clock = FakeLoop()
    pacer = Pacer(clock=clock.time, call_at=clock.call_at)
    tts = ChunkTts(chunks=100)  # 500 frames: more than the queue holds
    hub = MediaHub(Calls().apply, calls=Calls(), tts=tts, pacer=pacer, end_grace_seconds=0.01)
    session = make_session(hub, Transport())
    for _ in range(8):
        pacer.deferral.tick(LATE)  # the loop was behind before this speech began
    await session.speak("A long answer.", turn_token=None)
    await settle()
    playback = session.playback
    # Up to the floor at once (the first words are never deferred), then parked.
    assert FLOOR_FRAMES <= playback.queued < FLOOR_FRAMES + 5
    assert pacer.deferral.parked == 1
    # Late ticks play the queue down; at the floor the speaker adds a chunk and parks again.
    for _ in range(10):
        clock.run_next(late=LATE)
        await settle()
        assert playback.queued >= FLOOR_FRAMES - 1
    assert pacer.deferral.parked == 1
    # Ticks on time again: the speaker goes and fills the queue.
    for _ in range(6):
        clock.run_next()
        await settle()
    assert pacer.deferral.parked == 0
    assert playback.queued >= playback.capacity - 5
    await session.close()


async def test_audio_synthesised_before_the_stream_waits_too_but_not_below_the_floor() -> None:
    deferral = Deferral()
    strain(deferral)
    tts = ChunkTts(chunks=100)
    fetch = Prefetch(tts, "Hello.", deferral)
    await settle()
    assert fetch.buffered == FLOOR_FRAMES * 160  # five chunks of five frames, then parked
    assert deferral.parked == 1
    deferral.release_all()
    await settle()
    assert fetch.buffered > FLOOR_FRAMES * 160
    fetch.cancel()


async def test_a_pacer_that_stops_lets_every_parked_speaker_go() -> None:
    clock = FakeLoop()
    pacer = Pacer(clock=clock.time, call_at=clock.call_at)
    strain(pacer.deferral)
    waiting = asyncio.create_task(pacer.deferral.wait(Depth(100)))
    await settle()
    pacer.close()  # no tick will come to let it go
    await asyncio.wait_for(waiting, 0.1)
