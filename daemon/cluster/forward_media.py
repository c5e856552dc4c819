"""A media stream whose call another daemon runs is passed through to that daemon (SPEC 16).

The provider opens a call's media websocket at the shared public URL, so it may land on any
daemon. The one it lands on reads the stream's `start` (which names the call); when another
living daemon runs that call, it opens the same websocket to that daemon's webhook port (the
`address` it advertised), with the provider's upgrade headers (its signature included), replays
what the provider sent so far, and from then on copies every message both ways until either side
closes. The daemon that runs the call thus checks the stream's token and signature, and holds
its session (speech recognition, speaking, barge-in) exactly as if the stream had reached it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import WSMsgType, web

from daemon.errors import VoicecallError

if TYPE_CHECKING:
    from daemon.cluster.wiring import Cluster

logger = logging.getLogger(__name__)

CONNECT_SECONDS = 5.0
"""How long opening the websocket to the call's daemon may take."""

_SKIP = frozenset(
    {
        "host",
        "connection",
        "upgrade",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "content-length",
        "transfer-encoding",
        "keep-alive",
    }
)


def media_relay(
    cluster: Callable[[], Cluster | None],
    runs: Callable[[str], bool],
    http: Callable[[], aiohttp.ClientSession | None],
) -> Callable[
    [web.Request, web.WebSocketResponse, str | None, Mapping[str, str], list[str]],
    Awaitable[Callable[[], Awaitable[None]] | None],
]:
    """The media server's `relay` hook."""

    async def relay(
        request: web.Request,
        ws: web.WebSocketResponse,
        provider_call_id: str | None,
        parameters: Mapping[str, str],
        seen: list[str],
    ) -> Callable[[], Awaitable[None]] | None:
        group, session = cluster(), http()
        ref = parameters.get("callId") or provider_call_id or ""
        if group is None or session is None or not ref or runs(ref):
            return None
        try:
            owner = await group.owner_elsewhere(ref)
            address = await group.store.address_of(owner) if owner is not None else None
        except VoicecallError as exc:
            logger.warning("media stream for call %s not passed on: %s", ref, exc.message)
            return None
        if owner is None or address is None:
            return None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIP}
        headers["Host"] = request.headers.get("Host", "")
        try:
            upstream = await session.ws_connect(
                f"ws://{address}{request.path_qs}",
                headers=headers,
                autoping=True,
                timeout=aiohttp.ClientWSTimeout(ws_close=CONNECT_SECONDS),
                max_msg_size=0,
            )
            for text in seen:
                await upstream.send_str(text)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            logger.warning(
                "media stream for call %s: cannot reach daemon %s at %s (%s)",
                ref,
                owner,
                address,
                type(exc).__name__,
            )
            return None
        logger.info("media stream for call %s passed to daemon %s", ref, owner)

        async def run() -> None:
            await _splice(ws, upstream)

        return run

    return relay


async def _splice(
    downstream: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse
) -> None:
    """Copy messages both ways until one side closes, then close the other."""

    async def pump(
        source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    ) -> None:
        async for message in source:
            if message.type is WSMsgType.TEXT:
                await sink.send_str(message.data)
            elif message.type is WSMsgType.BINARY:
                await sink.send_bytes(message.data)
            else:
                break

    tasks = [
        asyncio.ensure_future(pump(downstream, upstream)),
        asyncio.ensure_future(pump(upstream, downstream)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(Exception):
            await upstream.close()
        with contextlib.suppress(Exception):
            await downstream.close()
