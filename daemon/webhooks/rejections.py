"""Rejection logging as summaries: at most one line per window per reason and address (SPEC 8).

Unauthenticated traffic must not be able to fill the disk through the log, nor drown the lines
that matter. The first rejection of a kind (status, reason, client address) in a window is
logged at once, so a single misconfigured provider is visible immediately; further ones are only
counted, and one line with the count is written when the window closes. Past `max_keys` distinct
kinds in one window (an attacker rotating addresses), new addresses fold into one
"other addresses" kind, so the number of lines per window is bounded whatever the traffic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

OTHER_ADDRESSES = "other addresses"
"""The address of every kind beyond `max_keys` in one window."""

Kind = tuple[str, int | None, str, str]
"""(what was rejected, status, reason, client address)."""


class RejectionLog:
    """Counts rejections per kind and logs a bounded summary (see the module docstring)."""

    __slots__ = (
        "_clock",
        "_counts",
        "_flush_handle",
        "_logger",
        "_max_keys",
        "_window",
        "_window_end",
    )

    def __init__(
        self,
        logger: logging.Logger,
        *,
        window_seconds: float = 10.0,
        max_keys: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Log through `logger`, one summary per kind every `window_seconds`."""
        self._logger = logger
        self._window = window_seconds
        self._max_keys = max_keys
        self._clock = clock
        self._counts: dict[Kind, int] = {}
        self._window_end = 0.0
        self._flush_handle: asyncio.TimerHandle | None = None

    def record(self, what: str, status: int | None, reason: str, address: str | None) -> None:
        """Note one rejection; log it now if it is the first of its kind in the window.

        Args:
            what: the refused thing, e.g. "webhook" or "media stream upgrade".
            status: the HTTP status (or websocket close code) answered; None when the
                connection was closed without an answer.
            reason: a short reason, never a secret, signature or body.
            address: the client address the limits use.
        """
        if self._clock() >= self._window_end:
            self.flush()
        kind: Kind = (what, status, reason, address or "unknown")
        if kind not in self._counts and len(self._counts) >= self._max_keys:
            kind = (what, status, reason, OTHER_ADDRESSES)
        count = self._counts.get(kind)
        if count is None:
            self._counts[kind] = 0
            self._logger.warning(
                "%s rejected%s: %s (client %s); more like it are summarised every %g s",
                what,
                _with(status),
                reason,
                kind[3],
                self._window,
            )
            return
        self._counts[kind] = count + 1
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        """Write the window's counts when it closes even if no further rejection arrives."""
        if self._flush_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        delay = max(0.0, self._window_end - self._clock())
        self._flush_handle = loop.call_later(delay, self.flush)

    def flush(self) -> None:
        """Log one line per kind with rejections not yet logged, and open a new window.

        A kind that was still active stays known (at zero) in the new window, so a steady flood
        writes one summary line per window instead of a first line and a summary each time.
        """
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        active: dict[Kind, int] = {}
        for kind, count in self._counts.items():
            if count:
                what, status, reason, address = kind
                self._logger.warning(
                    "%s rejected%s: %s (client %s): %d more in the last %g s",
                    what,
                    _with(status),
                    reason,
                    address,
                    count,
                    self._window,
                )
                active[kind] = 0
        self._counts = active
        self._window_end = self._clock() + self._window


def _with(status: int | None) -> str:
    return f" with {status}" if status is not None else ""
