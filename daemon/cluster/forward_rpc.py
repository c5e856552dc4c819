"""RPCs about a call another daemon runs are run there (SPEC section 16).

`continue`, `cancel`, `speak`, `end` and `dtmf` need the call's live session: its transcript waiter,
its media stream, its provider state. On a daemon that does not run the call they are sent to the
daemon that does, over the cluster bus, and its answer (or error) is returned as is. A request never
waits out its deadline on a daemon that is gone (:mod:`daemon.cluster.routing`): a dead owner's call
is taken over and the request run here; one sent to an owner that restarts meanwhile is sent again
to its new process, or to the call's new daemon. Everything else (`status`, `list`, `tail`,
`latency`) is answered from the shared store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from daemon.errors import InvalidParamsError
from daemon.rpc.server import Connection, Handler

if TYPE_CHECKING:
    from daemon.cluster.wiring import Cluster

FORWARDED = (
    "voicecall.continue",
    "voicecall.cancel",
    "voicecall.speak",
    "voicecall.end",
    "voicecall.dtmf",
)
"""The methods that act on a call's live session."""

MARGIN_SECONDS = 30.0
"""Added to what the owner itself may wait (ringing, a reply) before the asker gives up."""


class DetachedConnection(Connection):
    """The connection a forwarded request runs with: nobody to push notifications to."""

    def __init__(self) -> None:  # no writer: nothing is ever written
        self.closed = asyncio.Event()
        self._cleanups: list[Callable[[], None]] = []

    def notify(self, method: str, params: dict[str, Any]) -> None:
        """Dropped: a forwarded request has no subscribers."""


def forwarding_methods(
    methods: Mapping[str, Handler],
    cluster: Callable[[], Cluster | None],
    runs: Callable[[str], bool],
    deadline: Callable[[str, dict[str, Any]], float],
) -> dict[str, Handler]:
    """`methods` with the call methods sent to the call's owner when another daemon runs it."""
    out = dict(methods)
    for name in FORWARDED:
        out[name] = _forwarding(name, methods[name], cluster, runs, deadline)
    return out


def _forwarding(
    name: str,
    local: Handler,
    cluster: Callable[[], Cluster | None],
    runs: Callable[[str], bool],
    deadline: Callable[[str, dict[str, Any]], float],
) -> Handler:
    async def handler(raw: dict[str, Any], conn: Connection) -> Any:
        group = cluster()
        ref = raw.get("callId")
        if group is None or not isinstance(ref, str) or not ref or runs(ref):
            return await local(raw, conn)
        answered = await group.ask_owner(
            ref, "rpc", {"method": name, "params": raw}, deadline(name, raw)
        )
        if answered is None:  # nobody else runs it (any more): this daemon does, or nobody
            return await local(raw, conn)
        return answered.value

    return handler


def serve_forwarded(methods: Mapping[str, Handler]) -> Callable[[dict[str, Any]], Awaitable[Any]]:
    """The bus handler of `rpc` requests: run one of the call methods here."""

    async def run(body: dict[str, Any]) -> Any:
        name, params = body.get("method"), body.get("params")
        if name not in FORWARDED or not isinstance(params, dict):
            raise InvalidParamsError(f"{name!r} is not a method another daemon may send")
        return await methods[str(name)](params, DetachedConnection())

    return run
