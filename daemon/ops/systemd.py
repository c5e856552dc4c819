"""systemd integration without libsystemd: sd_notify(3) and socket activation, stdlib only.

The protocol is a few lines of socket code, so neither `sdnotify` nor `systemd-python` (which
needs the C headers) is worth a dependency. Every function is a no-op outside systemd, so the
daemon calls them unconditionally.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

logger = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3
"""The first file descriptor systemd passes (sd_listen_fds(3))."""


def _notify_address(env: Mapping[str, str]) -> str | None:
    path = env.get("NOTIFY_SOCKET")
    if not path:
        return None
    # A leading '@' names a socket in Linux's abstract namespace, addressed with a NUL byte.
    return "\0" + path[1:] if path.startswith("@") else path


def notify(state: str, env: Mapping[str, str] = os.environ) -> bool:
    """Send one sd_notify message (newline-separated `KEY=value` lines) to `$NOTIFY_SOCKET`.

    Returns:
        True when the datagram was sent; False when not under systemd or sending failed (a
        notification must never take the daemon down).
    """
    address = _notify_address(env)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        logger.warning("sd_notify to %s failed: %s", env.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def ready(status: str | None = None, env: Mapping[str, str] = os.environ) -> bool:
    """Tell systemd start-up is complete (`Type=notify` units wait for this)."""
    return notify("READY=1" + (f"\nSTATUS={_one_line(status)}" if status else ""), env)


def stopping(env: Mapping[str, str] = os.environ) -> bool:
    """Tell systemd a clean shutdown has begun, so it does not count it as a failure."""
    return notify("STOPPING=1", env)


def watchdog(env: Mapping[str, str] = os.environ) -> bool:
    """Pet the watchdog (`WatchdogSec=`); call every :func:`watchdog_interval` seconds."""
    return notify("WATCHDOG=1", env)


def status(text: str, env: Mapping[str, str] = os.environ) -> bool:
    """Set the one-line status `systemctl status` shows."""
    return notify(f"STATUS={_one_line(text)}", env)


def watchdog_interval(env: Mapping[str, str] = os.environ) -> float | None:
    """Seconds between watchdog pings: half of `$WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises.

    Returns None when no watchdog is configured, or when `$WATCHDOG_PID` names another process
    (the watchdog is then meant for someone else).
    """
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


def listen_fds(env: Mapping[str, str] = os.environ) -> list[socket.socket]:
    """The sockets systemd passed by socket activation (`LISTEN_FDS`, from fd 3 on).

    Only when `$LISTEN_PID` is our pid: the variables are inherited by children, which must not
    take the parent's sockets. The descriptors are marked close-on-exec so the daemon's own
    children do not inherit them either.
    """
    if env.get("LISTEN_PID", "").strip() != str(os.getpid()):
        return []
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + max(count, 0)):
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    return sockets


def _one_line(text: str) -> str:
    return " ".join(text.split())
