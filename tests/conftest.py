"""Shared fixtures: real daemons on short temporary sockets."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.harness import DaemonHarness, short_home


@pytest.fixture
def make_daemon() -> Iterator[Callable[..., DaemonHarness]]:
    """Build (and at teardown stop) daemons: `make_daemon(config_text, start=True)`."""
    made: list[DaemonHarness] = []

    def factory(config: str | None = None, *, start: bool = True) -> DaemonHarness:
        harness = DaemonHarness(short_home(), config)
        made.append(harness)
        if start:
            harness.start()
        return harness

    yield factory
    for harness in made:
        harness.cleanup()
