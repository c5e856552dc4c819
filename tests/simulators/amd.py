"""What answers an outbound call in a simulator, and the vendors' machine-detection callbacks.

Every simulator sends the AMD callbacks its vendor sends, built from the vendor shapes in
`tests/fixtures/*_amd_*.json` (each names its source): only the ids, numbers and the verdict
change per call.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def fixture(name: str) -> dict[str, Any]:
    """A fixture document (a fresh copy each time)."""
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return copy.deepcopy(data)


@dataclass
class Callee:
    """Who picks up outbound calls: `human`, `machine` (a voicemail box) or `fax`."""

    kind: str = "human"
    decide_seconds: float = 0.05
    """How long detection takes to tell a person, a fax or (`detect` modes) a machine."""
    greeting_seconds: float = 0.6
    """How long a voicemail greeting plays before its beep."""


@dataclass
class Heard:
    """What a call's callee heard and when (monotonic seconds)."""

    answered_at: float | None = None
    greeting_ends_at: float | None = None
    """When the voicemail greeting ended with its beep (a machine only)."""
    said: list[tuple[float, str]] = field(default_factory=list)

    def answer(self, callee: Callee) -> None:
        """The call was answered by `callee`."""
        self.answered_at = time.monotonic()
        if callee.kind == "machine":
            self.greeting_ends_at = self.answered_at + callee.greeting_seconds

    def say(self, text: str) -> None:
        """Our side said `text` now."""
        self.said.append((time.monotonic(), text))

    def said_after_greeting(self) -> list[str]:
        """What was said once the greeting had ended (what a voicemail box records)."""
        end = self.greeting_ends_at
        return [text for at, text in self.said if end is not None and at >= end]

    def said_into_greeting(self) -> list[str]:
        """What was said while the greeting still played (lost to a voicemail box)."""
        end = self.greeting_ends_at
        return [text for at, text in self.said if end is not None and at < end]
