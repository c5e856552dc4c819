"""A load balancer on loopback in front of several daemons, as a real one would stand.

HTTP requests are passed to a backend as they came (method, path and query, headers, body) and
its answer back; websockets (media streams) are spliced through frame by frame. Which backend:
`route(path_qs)` when set (a test steering a call's webhooks), else round robin; a backend that
refuses the connection (a daemon killed) is skipped. `handled` records (path_qs, backend index).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable

import aiohttp
from aiohttp import web

from tests.fakes._server import FakeServer

_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "upgrade",
        "te",
        "trailer",
        "proxy-connection",
        "content-encoding",
    }
)


class Balancer(FakeServer):
    """Pass requests to `backends` (origins such as http://127.0.0.1:8001)."""

    def __init__(self) -> None:
        self.backends: list[str] = []
        self.route: Callable[[str], int | None] | None = None
        self.handled: list[tuple[str, int]] = []
        self._turn = itertools.count()
        self._session: aiohttp.ClientSession | None = None
        self._streams: aiohttp.ClientSession | None = None
        """Websockets each on a new connection (never one kept alive after a webhook)."""
        super().__init__()

    def _routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._pass)

    async def start(self) -> None:
        await super().start()
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self._streams = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))

    async def _before_close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._streams is not None:
            await self._streams.close()

    def _order(self, path_qs: str) -> list[int]:
        count = len(self.backends)
        chosen = self.route(path_qs) if self.route is not None else None
        first = chosen if chosen is not None else next(self._turn) % count
        return [(first + i) % count for i in range(count)]

    async def _pass(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._splice(request, headers)
        body = await request.read()
        for index in self._order(request.path_qs):
            try:
                async with self._session.request(
                    request.method,
                    self.backends[index] + request.path_qs,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                ) as answer:
                    reply = await answer.read()
                    self.handled.append((request.path_qs, index))
                    return web.Response(
                        status=answer.status,
                        body=reply,
                        headers={k: v for k, v in answer.headers.items() if k.lower() not in _HOP},
                    )
            except aiohttp.ClientConnectionError:
                continue
        return web.Response(status=502, text="no backend answered")

    async def _splice(self, request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
        assert self._streams is not None
        for key in ("Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Extensions"):
            headers.pop(key, None)
        for index in self._order(request.path_qs):
            try:
                upstream = await self._streams.ws_connect(
                    self.backends[index].replace("http", "ws", 1) + request.path_qs, headers=headers
                )
            except aiohttp.ClientError:
                continue
            self.handled.append((request.path_qs, index))
            downstream = web.WebSocketResponse()
            await downstream.prepare(request)

            async def pump(src: object, dst: object) -> None:
                async for message in src:  # type: ignore[attr-defined]
                    if message.type == aiohttp.WSMsgType.TEXT:
                        await dst.send_str(message.data)  # type: ignore[attr-defined]
                    elif message.type == aiohttp.WSMsgType.BINARY:
                        await dst.send_bytes(message.data)  # type: ignore[attr-defined]
                    else:
                        break
                await dst.close()  # type: ignore[attr-defined]

            tasks = [
                asyncio.ensure_future(pump(downstream, upstream)),
                asyncio.ensure_future(pump(upstream, downstream)),
            ]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            await upstream.close()
            return downstream
        return web.Response(status=502, text="no backend answered")
