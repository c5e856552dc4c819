"""Tests that must hold on both event loops: the daemon runs on uvloop, whose transports and
task handling differ from asyncio's in ways code reaching into them can trip over."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

BOTH_LOOPS = pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
"""Parametrize a synchronous test over both loops; it runs its coroutine with :func:`run_on`."""


def run_on(loop_kind: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main()`` to completion on a fresh loop of ``loop_kind`` (skip if uvloop is absent)."""
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
