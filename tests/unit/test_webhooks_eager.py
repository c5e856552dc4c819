"""aiohttp's request handlers stepped in the turn that creates them (daemon/webhooks/eager.py).

The factory is exercised on coroutines of this file (named as eager by their code object), then
on a real aiohttp server, where a request is handled one loop turn sooner than without it, on
both the asyncio loop and uvloop (the daemon's).
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
import sys
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from daemon.webhooks.eager import EagerFactory, install
from tests.loops import BOTH_LOOPS, run_on

pytestmark = pytest.mark.skipif(
    sys.version_info >= (3, 12), reason="aiohttp starts its handler eagerly itself from 3.12"
)

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("eager_test_var", default="unset")


async def finishes_at_once(log: list[str]) -> str:
    log.append("ran")
    return "done"


async def waits_once(log: list[str], gate: asyncio.Future[str]) -> str:
    log.append("before")
    VAR.set("inside")
    try:
        got = await gate
    finally:
        log.append("after")
    log.append(VAR.get())
    return got + "!"


async def fails_at_once() -> None:
    raise ValueError("bad request")


async def fails_later(gate: asyncio.Future[None]) -> None:
    await gate
    raise KeyError("late")


async def times_out_later(body: asyncio.Future[None]) -> str:
    """Like the webhook body read: a timeout entered in the eager step, expiring later."""
    try:
        async with asyncio.timeout(0.05):
            await body
    except TimeoutError:
        return "408"
    return "200"


def eager_loop(*fns: Callable[..., Any]) -> asyncio.AbstractEventLoop:
    """The running loop, its task factory stepping coroutines of ``fns`` eagerly."""
    loop = asyncio.get_running_loop()
    loop.set_task_factory(EagerFactory(frozenset(fn.__code__ for fn in fns)))  # type: ignore[arg-type]
    return loop


@BOTH_LOOPS
def test_a_coroutine_that_never_waits_is_done_when_create_task_returns(loop_kind: str) -> None:
    async def main() -> None:
        loop = eager_loop(finishes_at_once)
        log: list[str] = []
        task = loop.create_task(finishes_at_once(log), name="named")
        assert log == ["ran"] and task.done()
        assert await task == "done"

    run_on(loop_kind, main)


@BOTH_LOOPS
def test_a_coroutine_that_waits_runs_its_first_step_at_once_and_the_rest_in_a_task(
    loop_kind: str,
) -> None:
    async def main() -> None:
        loop = eager_loop(waits_once)
        log: list[str] = []
        gate: asyncio.Future[str] = loop.create_future()
        task = loop.create_task(waits_once(log, gate))
        assert log == ["before"] and not task.done()
        assert VAR.get() == "unset"  # its context is its own, as with a plain task
        gate.set_result("go")
        assert await task == "go!"
        assert log == ["before", "after", "inside"]

    run_on(loop_kind, main)


@BOTH_LOOPS
def test_other_coroutines_get_ordinary_tasks(loop_kind: str) -> None:
    async def main() -> None:
        loop = eager_loop(waits_once)
        factory = loop.get_task_factory()
        assert isinstance(factory, EagerFactory)
        log: list[str] = []
        task = loop.create_task(finishes_at_once(log))
        assert log == [] and isinstance(task, asyncio.Task)
        assert await task == "done"
        assert factory.started == 0

    run_on(loop_kind, main)


@BOTH_LOOPS
def test_errors_reach_the_awaiting_side_whenever_they_happen(loop_kind: str) -> None:
    async def main() -> None:
        loop = eager_loop(fails_at_once, fails_later)
        with pytest.raises(ValueError, match="bad request"):
            await loop.create_task(fails_at_once())
        gate: asyncio.Future[None] = loop.create_future()
        later = loop.create_task(fails_later(gate))
        gate.set_result(None)
        with pytest.raises(KeyError):
            await later

    run_on(loop_kind, main)


@BOTH_LOOPS
def test_cancelling_the_task_reaches_the_coroutine_where_it_waits(loop_kind: str) -> None:
    async def main() -> None:
        loop = eager_loop(waits_once)
        log: list[str] = []
        gate: asyncio.Future[str] = loop.create_future()
        task = loop.create_task(waits_once(log, gate))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert log == ["before", "after"] and gate.cancelled()

    run_on(loop_kind, main)


@BOTH_LOOPS
def test_a_timeout_entered_in_the_first_step_still_ends_the_wait(loop_kind: str) -> None:
    """The timeout belongs to the creating task (current during the first step); its expiry
    cancels that task, which hands the cancellation to the task it awaits: the handler sees its
    timeout, and the creating task is not left cancelled."""

    async def main() -> None:
        loop = eager_loop(times_out_later)
        body: asyncio.Future[None] = loop.create_future()
        outcome = await loop.create_task(times_out_later(body))
        assert outcome == "408"
        current = asyncio.current_task()
        assert current is not None and current.cancelling() == 0
        await asyncio.sleep(0.01)  # and it goes on running normally

    run_on(loop_kind, main)


# ---------------------------------------------------------------------- on a real aiohttp server


async def turns_to_handle(eager: bool) -> int:
    """Loop turns from a request's bytes being in the server's socket to its handler running."""
    loop = asyncio.get_running_loop()
    if eager:
        assert install(loop) is not None
    turns = 0
    ticking = True

    def tick() -> None:
        nonlocal turns
        turns += 1
        if ticking:
            loop.call_soon(tick)

    handled_at: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        handled_at.append(turns)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    try:
        await asyncio.sleep(0.05)  # the connection is accepted and idle
        tick()
        # One write puts the whole request in the server's socket; it is read in the next poll.
        sock.send(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        sent_at = turns
        while not handled_at:
            await asyncio.sleep(0)
        ticking = False
        reply = await loop.sock_recv(sock, 4096)
        assert reply.startswith(b"HTTP/1.1 200")
        return handled_at[0] - sent_at
    finally:
        ticking = False
        sock.close()
        await runner.cleanup()
        loop.set_task_factory(None)


@BOTH_LOOPS
def test_a_request_is_handled_one_loop_turn_sooner(loop_kind: str) -> None:
    """The fewest turns of three tries each: a loaded machine may deliver loopback bytes a
    turn late (the kernel's deferred receive work), never early."""
    results: dict[bool, int] = {}

    async def main() -> None:
        for eager in (False, True):
            results[eager] = min([await turns_to_handle(eager) for _ in range(3)])

    run_on(loop_kind, main)
    assert results[True] == results[False] - 1, results


def test_install_leaves_a_loop_with_its_own_factory_alone() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()

        def own(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Task[Any]:
            return asyncio.Task(coro, loop=loop, **kw)

        loop.set_task_factory(own)  # type: ignore[arg-type]
        assert install(loop) is None
        assert loop.get_task_factory() is own
        loop.set_task_factory(None)
        factory = install(loop)
        assert factory is not None and loop.get_task_factory() is factory
        loop.set_task_factory(None)

    run_on("asyncio", main)
