"""Where voicecall keeps its config, state and socket (SPEC section 2).

Stdlib-only: the CLI resolves the same paths as the daemon without importing anything heavy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

STORE_LOCK_NAME = "daemon.lock"
"""The file in the store folder a running daemon holds an exclusive flock on (with its pid).

Free lock + no socket = the daemon is stopped (also when it is a zombie its parent has not
reaped yet, which `kill(pid, 0)` still counts as alive)."""


@dataclass(frozen=True, slots=True)
class Paths:
    """The resolved locations for one invocation."""

    config: Path
    """The TOML config file (it may not exist: no file means all defaults)."""
    state: Path
    """The folder of the SQLite store and the daemon log."""
    socket: Path
    """The daemon's Unix socket."""

    @property
    def log_file(self) -> Path:
        """The daemon's log file."""
        return self.state / "daemon.log"


def _home_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or Path.home())


def resolve_paths(
    env: Mapping[str, str] | None = None,
    *,
    config: str | os.PathLike[str] | None = None,
    socket: str | os.PathLike[str] | None = None,
) -> Paths:
    """Resolve config, state and socket paths from flags, environment and XDG defaults.

    Precedence: an explicit flag, then `VOICECALL_CONFIG` / `VOICECALL_SOCKET`, then
    `VOICECALL_HOME`, then the XDG base directories.
    """
    env = os.environ if env is None else env
    home = env.get("VOICECALL_HOME")
    if home:
        base = Path(home).expanduser()
        cfg_default = base / "config.toml"
        state_default = base / "state"
        sock_default = base / "run" / "daemon.sock"
    else:
        user_home = _home_dir(env)
        xdg_config = Path(env.get("XDG_CONFIG_HOME") or user_home / ".config")
        xdg_state = Path(env.get("XDG_STATE_HOME") or user_home / ".local" / "state")
        cfg_default = xdg_config / "voicecall" / "config.toml"
        state_default = xdg_state / "voicecall"
        runtime = env.get("XDG_RUNTIME_DIR")
        if runtime:
            sock_default = Path(runtime) / "voicecall" / "daemon.sock"
        else:
            sock_default = Path(f"/tmp/voicecall-{os.getuid()}") / "daemon.sock"  # noqa: S108
    cfg = Path(config or env.get("VOICECALL_CONFIG") or cfg_default).expanduser()
    sock = Path(socket or env.get("VOICECALL_SOCKET") or sock_default).expanduser()
    return Paths(config=cfg, state=state_default, socket=sock)
