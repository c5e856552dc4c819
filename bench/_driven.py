"""The child side of the multi-process benches (load generators, vendor fakes, stream client):
run on uvloop when it is installed, serve a local fake, read the driver's commands from
stdin."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from aiohttp import web


def run(
    main: Callable[[argparse.Namespace], Coroutine[Any, Any, None]], args: argparse.Namespace
) -> None:
    """`main(args)` on uvloop (what the daemon runs on), or on asyncio without it."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(args))
    else:
        uvloop.run(main(args))


async def commands() -> AsyncIterator[str]:
    """The driver's command lines (`mark`, `report` ...), stripped, until stdin closes or
    an empty line arrives."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        yield line


async def serve_local(app: web.Application, **site: Any) -> tuple[web.AppRunner, int]:
    """Serve `app` on 127.0.0.1, any free port (no access log); the runner and the port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, **site).start()
    return runner, int(runner.addresses[0][1])
