"""A status line on stderr while the CLI waits (daemon start, `continue`, `call --wait`).

Shown only when stderr is a terminal, so pipes, logs and `$(...)` captures stay clean; with
NO_COLOR (or TERM=dumb) it is plain ASCII without colour. One background thread redraws the
line; whoever prints a result meanwhile goes through :meth:`Status.echo`, which clears the line
first so that output and status never mix on one row.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

FRAMES_UNICODE = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
FRAMES_ASCII = "|/-\\"
INTERVAL_SECONDS = 0.1


def _plain() -> bool:
    return bool(os.environ.get("NO_COLOR")) or os.environ.get("TERM") == "dumb"


class Status:
    """One status line: `<spinner> <what> (<elapsed>s)`, redrawn until closed."""

    def __init__(self, what: str, stream: TextIO | None = None) -> None:
        self.what = what
        self._stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self._drawn = 0
        """How many columns the status line occupies now (0: none)."""
        self._enabled = self._stream.isatty()
        self._frames = FRAMES_ASCII if _plain() else FRAMES_UNICODE

    def start(self) -> Status:
        """Begin drawing (a no-op when stderr is not a terminal)."""
        if self._enabled:
            self._thread = threading.Thread(target=self._run, name="status-line", daemon=True)
            self._thread.start()
        return self

    def update(self, what: str) -> None:
        """Change what the line says is being waited for."""
        self.what = what

    def _run(self) -> None:
        frame = 0
        while not self._done.wait(INTERVAL_SECONDS if frame else 0):
            elapsed = int(time.monotonic() - self._started)
            spin = self._frames[frame % len(self._frames)]
            text = f"{self.what}" + (f" ({elapsed}s)" if elapsed else "")
            shown = f"{spin} {text}" if _plain() else f"\x1b[36m{spin}\x1b[0m {text}"
            with self._lock:
                if self._done.is_set():
                    return
                self._clear()
                self._stream.write(shown)
                self._stream.flush()
                self._drawn = len(spin) + 1 + len(text)
            frame += 1

    def _clear(self) -> None:
        """Blank the line with spaces (no escape codes: works on any terminal)."""
        if self._drawn:
            self._stream.write("\r" + " " * self._drawn + "\r")
            self._stream.flush()
            self._drawn = 0

    def echo(self, text: str, *, err: bool = False) -> None:
        """Print a line of output without tearing the status line."""
        with self._lock:
            self._clear()
            target = sys.stderr if err else sys.stdout
            target.write(text + "\n")
            target.flush()

    def stop(self) -> None:
        """Stop drawing and erase the line."""
        self._done.set()
        if self._thread is not None:
            self._thread.join(1.0)
        with self._lock:
            self._clear()


@contextmanager
def waiting(what: str) -> Iterator[Status]:
    """Show `what` on a status line for the duration of the block (terminal only)."""
    status = Status(what).start()
    try:
        yield status
    finally:
        status.stop()
