"""The media GC policy: one debounced freeze per burst of streams, unfreeze when idle."""

from __future__ import annotations

import asyncio
import gc

from daemon.media.gcpolicy import GcPolicy


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
