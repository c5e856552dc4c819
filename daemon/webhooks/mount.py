"""Connect the generic webhook pipeline to the daemon's provider, store and exposure."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from daemon.webhooks.server import WebhookServer, add_webhook_routes
from daemon.webhooks.urls import UrlPolicy

if TYPE_CHECKING:
    from daemon.app import Daemon
    from daemon.config.model import Config

WEBHOOK_SERVER = web.AppKey("webhook_server", WebhookServer)


TUNNEL_MODES = frozenset({"ngrok", "serve", "funnel"})
"""Exposure modes whose agent connects from loopback and forwards the client's address."""


def url_policy(config: Config, public_url: str | None, mode: str | None = None) -> UrlPolicy:
    """The URL-verification policy for an effective public URL (and exposure `mode`)."""
    security = config.webhook_security
    tunnel_agent = (
        mode in TUNNEL_MODES or config.tunnel.provider == "ngrok" or config.tailscale.mode != "off"
    )
    return UrlPolicy(
        public_url=public_url,
        allowed_hosts=tuple(security.allowed_hosts),
        trust_forwarding_headers=security.trust_forwarding_headers,
        trusted_proxy_ips=tuple(security.trusted_proxy_ips),
        tunnel_provider=config.tunnel.provider,
        allow_ngrok_free_tier_loopback_bypass=config.tunnel.allow_ngrok_free_tier_loopback_bypass,
        bind=config.serve.bind,
        tunnel_agent=tunnel_agent,
    )


def mount_webhook(daemon: Daemon) -> WebhookServer:
    """Serve `serve.path` through the security pipeline of SPEC section 8.

    Mounted before the catch-all 404 route: aiohttp matches routes in the order they were added.
    """
    config = daemon.config
    server = add_webhook_routes(
        daemon.web_app,
        path=config.serve.path,
        provider=daemon.provider,
        replay=daemon.store,
        policy=url_policy(config, config.public_url),
        skip_signature=config.skip_signature_verification,
    )

    async def not_found(request: web.Request) -> web.Response:
        return web.Response(status=404, text="Not Found")

    daemon.web_app.router.add_route("*", "/{tail:.*}", not_found)
    return server
