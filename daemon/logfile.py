"""The daemon's own log file, rotated by size (SPEC section 2: 10 MiB, the live file plus at most
five rotated ones).

A daemon started in the background logs to `state/daemon.log`. The file is private (created
0600 under the daemon's umask 077) and rotated by the daemon itself, so no amount of traffic, not
even a flood of refused requests, grows it past about 60 MiB. Whatever bypasses `logging` (a
fatal traceback, a C library's message) goes to file descriptors 1 and 2: they are pointed at the
live file at start and again after each rotation, so those lines land in the current log rather
than in a rotated (or deleted) one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from logging.handlers import RotatingFileHandler
from pathlib import Path

LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 5
LOG_MAX_BYTES_ENV = "VOICECALL_LOG_MAX_BYTES"
"""Overrides the rotation size (bytes); meant for tests and very small disks."""


def log_max_bytes(env: Mapping[str, str] | None = None) -> int:
    """The rotation size: `VOICECALL_LOG_MAX_BYTES` when it is a positive integer, else 10 MiB."""
    raw = (os.environ if env is None else env).get(LOG_MAX_BYTES_ENV, "")
    try:
        value = int(raw)
    except ValueError:
        return LOG_MAX_BYTES
    return value if value > 0 else LOG_MAX_BYTES


class DaemonLogHandler(RotatingFileHandler):
    """A size-rotated log file that also owns stdout and stderr of the process."""

    def __init__(self, path: Path, max_bytes: int, backups: int = LOG_BACKUPS) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        os.chmod(path, 0o600)  # a log written by an older version may be 0644
        self._own_std_streams()

    def doRollover(self) -> None:
        """Rotate, then point fds 1 and 2 at the new live file."""
        super().doRollover()
        self._own_std_streams()

    def _own_std_streams(self) -> None:
        stream = self.stream
        if stream is None:
            return
        fd = stream.fileno()
        for target in (1, 2):
            os.dup2(fd, target)
