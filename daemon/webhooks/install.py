"""Mount the webhook and media-stream routes on the daemon's aiohttp application."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daemon.app import Daemon
    from daemon.webhooks.server import WebhookServer


def install_routes(daemon: Daemon) -> WebhookServer:
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
