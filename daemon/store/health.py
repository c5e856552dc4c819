"""Whether the store currently accepts writes, and how its faults are logged (SPEC section 6).

A full disk makes every write fail, and a busy daemon writes hundreds of times a second: logging
each failure would fill whatever space is left (often the same disk) with the same sentence. So a
fault is logged when it begins, then at most once per `log_interval` while it lasts (with how
many writes were refused meanwhile), and once more when a write succeeds again. `daemon status`
and `doctor` read :attr:`StoreHealth.fault` to show it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from daemon.model.record import utc_now

logger = logging.getLogger(__name__)

FAULT_LOG_INTERVAL_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class StoreFault:
    """The store refuses writes since `since` (ISO 8601 UTC) because of `error`."""

    since: str
    error: str

    def to_wire(self) -> dict[str, str]:
        """The `storeFault` shape of `daemon.status`."""
        return {"since": self.since, "error": self.error}


class StoreHealth:
    """The fault state of one store, with rate-limited logging."""

    def __init__(
        self,
        where: str,
        *,
        log_interval: float = FAULT_LOG_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._where = where
        self._interval = log_interval
        self._clock = clock
        self.fault: StoreFault | None = None
        self._logged_at = 0.0
        self._refused = 0
        """Writes refused since the last log line."""

    def failed(self, error: str) -> None:
        """A write failed with `error`: start (or continue) the fault, logging at most once
        per interval."""
        now = self._clock()
        if self.fault is None:
            self.fault = StoreFault(utc_now(), error)
            self._logged_at, self._refused = now, 0
            logger.error(
                "the store %s refuses writes: %s; webhooks get 503 and RPCs -32007 "
                "until it works again (free disk space, check the disk)",
                self._where,
                error,
            )
            return
        self._refused += 1
        if error != self.fault.error:
            self.fault = StoreFault(self.fault.since, error)
        if now - self._logged_at >= self._interval:
            logger.error(
                "the store %s still refuses writes since %s: %s (%d more refused)",
                self._where,
                self.fault.since,
                error,
                self._refused,
            )
            self._logged_at, self._refused = now, 0

    def succeeded(self) -> None:
        """A write succeeded: the fault, if any, is over."""
        if self.fault is not None:
            logger.warning(
                "the store %s accepts writes again (fault since %s)", self._where, self.fault.since
            )
            self.fault = None
