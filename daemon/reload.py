"""Re-read the config file into a running daemon without dropping calls (SPEC section 4).

The new file is checked in full first: with any problem nothing changes and every problem is
reported (-32004). Otherwise the keys a running daemon can take (`daemon.config.live`) are
switched for every part that reads the config per use (engine, provider context, exposure,
webhook policy) and the auto-responder is rebuilt when its keys changed; the other changed keys
are reported in `needsRestart` and keep their old values. Live calls keep running throughout.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

from daemon.config import live
from daemon.config.loader import load_config
from daemon.errors import ConfigError

if TYPE_CHECKING:
    from daemon.config.model import Config
    from daemon.paths import Paths

logger = logging.getLogger(__name__)


class ReloadHost(Protocol):
    """What a reload uses of the daemon (`daemon.app.Daemon` is one), and no more."""

    paths: Paths
    config: Config

    def apply_config(self, config: Config, *, rebuild_responder: bool) -> None:
        """Switch every part that reads the config per use to `config`."""


async def reload_config(daemon: ReloadHost) -> dict[str, Any]:
    """Apply the config file to `daemon`; the `daemon.reload` result.

    Raises:
        ConfigError: the file has problems; `details["problems"]` lists every one, and the
            config in force is unchanged.
    """
    try:
        # The keyring may be slow (D-Bus): off the event loop, like any blocking read.
        new = await asyncio.to_thread(load_config, daemon.paths)
    except ConfigError as exc:
        problems = list(exc.problems)
        error = ConfigError(
            f"config not reloaded, the running daemon keeps its current config: "
            f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in "
            f"{daemon.paths.config}: " + "; ".join(problems),
            problems,
        )
        error.details["problems"] = problems
        raise error from None
    changed = live.changed_keys(daemon.config, new)
    applied = [key for key in changed if live.is_live(key)]
    restart = [key for key in changed if not live.is_live(key)]
    merged = live.merge_live(daemon.config, new)
    daemon.apply_config(
        merged,
        rebuild_responder=any(key.split(".", 1)[0] in live.RESPONDER_KEYS for key in applied),
    )
    for warning in new.warnings:
        logger.warning("config: %s", warning)
    logger.info(
        "config reloaded from %s: applied %s%s",
        daemon.paths.config,
        ", ".join(applied) or "nothing (no change)",
        f"; needs a restart (kept the old values): {', '.join(restart)}" if restart else "",
    )
    return {
        "reloaded": True,
        "changed": applied,
        "needsRestart": restart,
        "warnings": list(new.warnings),
    }
