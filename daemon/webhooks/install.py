"""Mount the webhook (and media-stream) routes on the daemon's aiohttp application."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from daemon.app import Daemon


def install_routes(daemon: Daemon) -> None:
    """Add the routes the configured provider needs."""

    async def not_found(request: web.Request) -> web.Response:
        return web.Response(status=404, text="Not Found")

    daemon.web_app.router.add_route("*", "/{tail:.*}", not_found)
