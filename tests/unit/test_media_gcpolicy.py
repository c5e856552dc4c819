"""The media GC policy: one debounced freeze per burst of streams, young collections on a timer
while streams are live, unfreeze when idle; the collections timed for the health line."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence

from daemon.media.gcpolicy import GcPauses, GcPolicy
from daemon.media.hub import MediaHub
from daemon.model.events import ProviderEvent


async def test_freeze_once_per_burst_then_unfreeze_when_idle() -> None:
    """Many binds in a burst freeze once; going idle empties the permanent generation."""
    policy = GcPolicy(delay=0.01)
    try:
        for _ in range(50):
            policy.stream_bound()
        deadline = asyncio.get_running_loop().time() + 2
        while policy.freezes == 0 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)
        assert policy.freezes == 1
        assert gc.get_freeze_count() > 0
        policy.idle()
        assert gc.get_freeze_count() == 0
    finally:
        policy.close()
        gc.unfreeze()


async def test_collections_are_timed_while_a_stream_is_live_and_not_after() -> None:
    """Binding a stream starts timing the collector's real runs; going idle stops it (the
    idle collection is not a pause anyone hears)."""
    policy = GcPolicy(delay=60)
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
    policy = GcPolicy(delay=60, young_every=0.005)
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
