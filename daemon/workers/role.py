"""What makes a daemon a worker: its index, the shared port and the parent it answers to.

Kept free of asyncio and aiohttp so the parent and `daemon/__main__.py` can import it cheaply.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerRole:
    """One worker's place among its siblings."""

    index: int
    """1..N; names the worker in logs and its id file (`state/daemon-id-w<index>`)."""
    port: int
    """The webhook/media port the parent reserved; every worker listens on it (SO_REUSEPORT)."""
    parent_pid: int
    """The parent: `daemon.shutdown` on any worker stops it (and so every worker)."""

    @property
    def tag(self) -> str:
        """`w<index>`: the worker's name in log lines."""
        return f"w{self.index}"

    @property
    def id_file(self) -> str:
        """The file (in the state folder) that keeps this worker's cluster id."""
        return f"daemon-id-{self.tag}"

    def stop_all(self) -> None:
        """Ask the parent to stop every worker (it sends each one SIGTERM)."""
        os.kill(self.parent_pid, signal.SIGTERM)

    def reload_all(self) -> None:
        """Ask the parent to make every worker re-read the config (it sends each SIGHUP)."""
        os.kill(self.parent_pid, signal.SIGHUP)
