"""The media GC policy: young collections on a timer while streams are live, each freezing what
survived it; the frozen cycles of ended streams reclaimed in batches, everything when idle; the
collections timed for the health line."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from daemon.media.gcpolicy import RECLAIM_AFTER_ENDED_MAX, GcPauses, GcPolicy, next_threshold
from daemon.media.hub import MediaHub
from daemon.model.events import ProviderEvent


class Cycle:
    """Garbage only a collection finds: it refers to itself."""

    def __init__(self) -> None:
        self.me = self


def watch(obj: object) -> list[int]:
    """A list that gets an item once ``obj`` is freed."""
    freed: list[int] = []
    weakref.finalize(obj, freed.append, 1)
    return freed


async def young_collections(count: int) -> None:
    """Wait until ``count`` young collections have run (the policy's timer runs them)."""
    seen: list[int] = []

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 0:
            seen.append(1)

    gc.callbacks.append(note)
    try:
        await until(lambda: len(seen) >= count)
    finally:
        gc.callbacks.remove(note)


async def until(condition: Callable[[], bool]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not condition() and loop.time() < deadline:
        await asyncio.sleep(0.005)
    assert condition()


async def frozen_garbage() -> list[int]:
    """Make a cycle while a stream is live, let the policy freeze it, drop it: the returned
    list gets an item once a collection frees it."""
    cycle = Cycle()
    freed = watch(cycle)
    await young_collections(2)
    return freed


@asynccontextmanager
async def live(policy: GcPolicy) -> AsyncIterator[GcPolicy]:
    """``policy`` with a stream bound; stopped and everything unfrozen afterwards."""
    try:
        policy.stream_bound()
        yield policy
    finally:
        policy.close()
        gc.unfreeze()


async def test_what_outlives_a_young_collection_is_frozen_until_idle() -> None:
    """While streams are live every young collection freezes its survivors, so no automatic
    collection walks them (a full one does not find a dropped cycle); going idle unfreezes
    and collects everything."""
    async with live(GcPolicy(young_every=0.005)) as policy:
        freed = await frozen_garbage()
        gc.collect()
        assert freed == []
        policy.idle()
        assert freed == [1]
        assert gc.get_freeze_count() == 0


async def test_cycles_of_ended_streams_are_reclaimed_while_others_stay_live() -> None:
    """A daemon that always carries some call never goes idle: once enough streams have ended
    their frozen cycles are collected anyway, and the timer goes on."""
    async with live(GcPolicy(young_every=0.005, reclaim_after_ended=3)) as policy:
        freed = await frozen_garbage()
        policy.stream_ended(live=3)
        policy.stream_ended(live=2)
        await young_collections(2)
        assert freed == []  # two ended: not yet
        assert policy.reclaims == 0
        policy.stream_ended(live=1)
        await until(lambda: freed == [1])
        assert policy.reclaims == 1
        fresh = await frozen_garbage()
        gc.collect()
        assert fresh == []  # still live: freezing goes on after a reclaim


async def test_frozen_cycles_are_reclaimed_after_a_while_even_if_no_stream_ends() -> None:
    """Other work (webhook connections) leaves cycles too: a reclaim also comes on time."""
    async with live(GcPolicy(young_every=0.005, reclaim_every=0.05)) as policy:
        freed = await frozen_garbage()
        await until(lambda: freed == [1])
        assert policy.reclaims >= 1


async def test_collections_are_timed_while_a_stream_is_live_and_not_after() -> None:
    """Binding a stream starts timing the collector's real runs; going idle stops it (the
    idle collection is not a pause anyone hears)."""
    policy = GcPolicy(young_every=60)
    try:
        policy.stream_bound()
        policy.stream_bound()
        assert gc.callbacks.count(policy.pauses._callback) == 1
        gc.collect()
        count, total, worst = policy.pauses.take()
        assert count >= 1
        assert 0 < worst <= total
        assert policy.pauses.take() == (0, 0.0, 0.0)
        policy.idle()
        assert policy.pauses._callback not in gc.callbacks
        gc.collect()
        assert policy.pauses.take() == (0, 0.0, 0.0)
    finally:
        policy.close()
        gc.unfreeze()


def test_pauses_are_summed_with_the_worst_kept() -> None:
    """Each start/stop pair is one collection; the worst is the longest pair."""
    moments = iter([1.0, 1.002, 2.0, 2.010, 3.0, 3.001])
    pauses = GcPauses(clock=lambda: next(moments))
    for _ in range(3):
        pauses._callback("start", {"generation": 0})
        pauses._callback("stop", {"generation": 0})
    count, total, worst = pauses.take()
    assert count == 3
    assert abs(total - 0.013) < 1e-9
    assert abs(worst - 0.010) < 1e-9


async def test_the_young_generation_is_collected_on_a_timer_while_streams_are_live() -> None:
    """Steady streams free old objects as fast as they make new ones, so CPython's own trigger
    (allocations less deallocations) hardly fires: the policy collects on a timer instead,
    from the first stream until the daemon is idle."""
    policy = GcPolicy(young_every=0.005)
    loop = asyncio.get_running_loop()
    young: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 0:
            young.append(1)

    gc.callbacks.append(count)
    gc.disable()  # only explicit collections run: the policy's
    try:
        policy.stream_bound()
        deadline = loop.time() + 5
        while len(young) < 3 and loop.time() < deadline:
            await asyncio.sleep(0.005)
        assert len(young) >= 3
        policy.idle()
        young.clear()
        await asyncio.sleep(0.03)  # six periods: a timer left running would collect here
        assert young == []
    finally:
        gc.enable()
        gc.callbacks.remove(count)
        policy.close()
        gc.unfreeze()


async def test_the_media_hubs_health_line_reports_its_policys_pauses() -> None:
    """The pacer writes the health line; the hub's policy times the collections: the hub
    wires the one to the other, so the line has figures and not zeros."""

    async def ignore(events: Sequence[ProviderEvent]) -> None:
        del events

    hub = MediaHub(ignore, tts=None)
    try:
        assert hub.pacer.gc_pauses is hub.gc_policy.pauses
    finally:
        await hub.close()


def test_the_reclaim_threshold_doubles_while_reclaims_find_nothing() -> None:
    """Ended calls leave no cycles, so a reclaim usually finds nothing and is a pause for
    nothing: the next waits for twice as many ended streams, up to a cap; one that finds
    something brings the threshold back down, so cycles that appear are not kept long."""
    assert next_threshold(1000, found=0, ended=1000, base=1000) == 2000
    assert next_threshold(2000, found=900, ended=2000, base=1000) == 4000
    assert next_threshold(RECLAIM_AFTER_ENDED_MAX, 0, 5, base=1000) == RECLAIM_AFTER_ENDED_MAX
    assert next_threshold(8000, found=8000, ended=8000, base=1000) == 1000
    assert next_threshold(8000, found=3, ended=0, base=1000) == 1000  # the hourly one found some
    assert next_threshold(8000, found=0, ended=0, base=1000) == 16000
