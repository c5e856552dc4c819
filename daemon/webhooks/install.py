"""Mount the webhook and media-stream routes on the daemon's aiohttp application."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from daemon.media.server import MediaHost
    from daemon.webhooks.mount import WebhookHost
    from daemon.webhooks.server import WebhookServer

    class RouteHost(MediaHost, WebhookHost, Protocol):
        """What mounting every route uses of the daemon (`daemon.app.Daemon` is one)."""


def install_routes(daemon: RouteHost) -> WebhookServer:
    """Add the media-stream route (`daemon.media.server.install_media`) and the webhook route.

    The media hub is installed first so that it is in `daemon.media` before the
    provider is bound.
    """
    try:
        media = importlib.import_module("daemon.media.server")
    except ModuleNotFoundError:
        media = None
    if media is not None:
        media.install_media(daemon)
    from daemon.webhooks.mount import mount_webhook

    return mount_webhook(daemon)
