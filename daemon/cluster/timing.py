"""How often daemons sharing a store beat, and when one is dead (SPEC section 16: every 5 s,
dead after 20 s of silence, its calls taken over within 30 s).

`VOICECALL_CLUSTER_HEARTBEAT_SECONDS` shortens the beat (tests: a dead daemon is found in seconds,
not half a minute); death stays four beats of silence and the check runs every beat.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from daemon.errors import ConfigError

ENV = "VOICECALL_CLUSTER_HEARTBEAT_SECONDS"
HEARTBEAT_SECONDS = 5.0


def heartbeat_seconds(env: Mapping[str, str]) -> float:
    """The heartbeat interval: 5 s, or the environment's override (0.1 to 5 s)."""
    raw = env.get(ENV, "").strip()
    if not raw:
        return HEARTBEAT_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0.1 <= value <= HEARTBEAT_SECONDS:
        raise ConfigError(
            f"{ENV} = {raw!r}: expected seconds between 0.1 and 5 (unset it for the default, 5)"
        )
    return value
