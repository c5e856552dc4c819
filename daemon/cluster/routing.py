"""Which daemon a request about a call belongs to (SPEC section 16).

A call runs on one daemon, its owner. A request about a live call another living daemon runs is
sent there; one about a call nobody runs any more (ended, or unknown) is answered here from the
shared store, like with one daemon.

A request never waits on a daemon that is gone. When the owner is dead by the heartbeat rule
(silent for four heartbeats, or its row removed by a clean stop), the daemon the request reached
takes the call over at once (the store's row lock gives each call to one taker; the restart rules
apply: reconciled with the provider, never dialled again) and handles the request itself. While a
request waits for the owner's answer, the call's route is read again every heartbeat: if the owner
died meanwhile the call is taken over and the request handled here; if it restarted (same id, a new
process, which never saw the request) or another daemon took the call over, the request is sent
once more to whoever runs the call now, once that daemon listens (it advertises its address only
then).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, Protocol

from daemon.errors import CallError, OperationTimeoutError

logger = logging.getLogger(__name__)

READY_POLL_SECONDS = 0.1
"""How often a request for a daemon that is starting (alive, not yet listening) looks again."""

SETTLE_ATTEMPTS = 20
"""How often a request retries a take-over another daemon is making at that moment (20 ms apart,
growing): the other's transaction commits within milliseconds."""


class Route(Protocol):
    """Where a call runs (:class:`daemon.store.postgres.CallRoute`)."""

    @property
    def call_id(self) -> str: ...
    @property
    def owner(self) -> str | None: ...
    @property
    def live(self) -> bool: ...
    @property
    def owner_alive(self) -> bool: ...
    @property
    def owner_process(self) -> str | None: ...


class RoutingStore(Protocol):
    """What routing needs of the store."""

    daemon_id: str

    @property
    def watch_interval(self) -> float:
        """The heartbeat interval (seconds)."""

    async def route(self, ref: str) -> Route | None:
        """Who runs a call."""


class Answered(NamedTuple):
    """The owner's answer to a request sent to it."""

    value: Any


TakeOver = Callable[[str], Awaitable[bool]]
"""Take one call of a dead daemon over (True: this daemon runs it now)."""

Ask = Callable[[str, float], Awaitable[Any]]
"""Send the request to a daemon (its id, the deadline) and return its answer."""


async def owner_elsewhere(store: RoutingStore, take_over: TakeOver, ref: str) -> Route | None:
    """The route to the other living daemon that runs live call `ref`, or None to handle it
    here (nobody runs it, this daemon does, or its owner was dead and this daemon just took the
    call over).

    Raises:
        CallError: its owner is dead, but another daemon is taking the call over and the new
            owner could not be told in time (retry).
    """
    pause = 0.02
    route = None
    for _ in range(SETTLE_ATTEMPTS):
        route = await store.route(ref)
        if route is None or not route.live or route.owner in (None, store.daemon_id):
            return None
        if route.owner_alive:
            return route
        if await take_over(route.call_id):
            return None
        await asyncio.sleep(pause)  # another daemon holds the row: it is taking the call over
        pause = min(pause * 2, 0.2)
    assert route is not None
    raise CallError(
        f"call {route.call_id} is run by daemon {route.owner}, which is not running (stopped, "
        "or silent for four heartbeats); another daemon is taking the call over: retry",
        callId=route.call_id,
        daemon=route.owner,
    )


async def ask_owner(
    store: RoutingStore, take_over: TakeOver, ref: str, ask: Ask, deadline: float
) -> Answered | None:
    """Send a request about call `ref` to the daemon that runs it and return its answer, or
    None when the request is to be handled here (see the module's rules). At most two sends.

    Raises:
        CallError: the owner stopped twice while the request waited (its message names it).
        OperationTimeoutError: the owner, alive, did not answer within `deadline`.
        RemoteError: the owner's own error.
    """
    route = await owner_elsewhere(store, take_over, ref)
    sent_to: list[str] = []
    give_up = asyncio.get_running_loop().time() + deadline
    while route is not None:
        owner = route.owner
        assert owner is not None
        if route.owner_process is None:  # starting: a request now would reach nobody
            if asyncio.get_running_loop().time() >= give_up:
                raise OperationTimeoutError(
                    f"daemon {owner}, which runs call {route.call_id}, did not finish starting "
                    f"within {deadline:g}s; retry",
                    callId=route.call_id,
                    daemon=owner,
                )
            await asyncio.sleep(min(READY_POLL_SECONDS, store.watch_interval))
            route = await owner_elsewhere(store, take_over, ref)
            continue
        if len(sent_to) == 2:
            raise CallError(
                f"call {route.call_id}: daemon {sent_to[0]} stopped while running this request "
                f"and daemon {sent_to[1]}, which ran the call next, did too; ask again",
                callId=route.call_id,
                daemon=owner,
            )
        sent_to.append(owner)
        request = asyncio.ensure_future(ask(owner, deadline))
        try:
            changed = await _watch(store, ref, route, request)
        finally:
            if not request.done():
                request.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await request
        if changed is None:
            return Answered(request.result())
        logger.warning(
            "call %s: daemon %s %s while a request waited for it; %s",
            route.call_id,
            owner,
            "restarted" if changed.owner == owner and changed.owner_alive else "stopped",
            "asking the call's daemon again",
        )
        route = await owner_elsewhere(store, take_over, ref)
    return None


async def _watch(
    store: RoutingStore, ref: str, route: Route, request: asyncio.Future[Any]
) -> Route | None:
    """Wait for `request`; None once it is answered (its result or error is in it), or the
    call's new route when its owner stopped, restarted or lost the call meanwhile."""
    while True:
        done, _ = await asyncio.wait({request}, timeout=store.watch_interval)
        if done:
            return None
        now = await store.route(ref)
        if now is None or request.done():
            continue
        if (
            now.owner != route.owner
            or now.owner_process != route.owner_process
            or not now.owner_alive
        ):
            return now
