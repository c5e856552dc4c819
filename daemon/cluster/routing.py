"""Which daemon a request about a call belongs to (SPEC section 16).

A call runs on one daemon, its owner. A request about a live call another living daemon runs is
sent there; one about a call nobody runs any more (ended, or unknown) is answered here from the
shared store, like with one daemon.
"""

from __future__ import annotations

from typing import Protocol

from daemon.errors import CallError


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


class RoutingStore(Protocol):
    """What routing needs of the store."""

    daemon_id: str

    async def route(self, ref: str) -> Route | None:
        """Who runs a call."""


async def owner_elsewhere(store: RoutingStore, ref: str) -> str | None:
    """The id of the other daemon that runs live call `ref`, or None to handle it here.

    Raises:
        CallError: its daemon stopped answering and the call is not taken over yet.
    """
    route = await store.route(ref)
    if route is None or not route.live or route.owner in (None, store.daemon_id):
        return None
    if not route.owner_alive:
        raise CallError(
            f"call {route.call_id} is run by daemon {route.owner}, which stopped answering; "
            "another daemon takes it over within 30 s: retry then",
            callId=route.call_id,
            daemon=route.owner,
        )
    return route.owner
