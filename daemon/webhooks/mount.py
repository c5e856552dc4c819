"""Connect the generic webhook pipeline to the daemon's provider, store and exposure."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from daemon.webhooks.connections import ConnectionGuard, ConnectionLimits
from daemon.webhooks.server import WebhookServer, add_webhook_routes
from daemon.webhooks.urls import UrlPolicy, parse_ip

if TYPE_CHECKING:
    from daemon.config.model import Config
    from daemon.providers.base import WebhookPlane
    from daemon.webhooks.server import ReplayCache

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


class WebhookHost(Protocol):
    """What mounting the webhook route uses of the daemon (`daemon.app.Daemon` is one)."""

    config: Config
    web_app: web.Application
    webhooks: WebhookServer | None

    @property
    def provider(self) -> WebhookPlane:
        """The provider's webhook plane (verify, handle, replay)."""

    @property
    def store(self) -> ReplayCache:
        """Where replayed deliveries are remembered."""


def connection_guard(daemon: WebhookHost) -> ConnectionGuard:
    """The `[serve]` connection caps and timeouts for the daemon's public port.

    Trusted proxies, and the loopback agent of a tunnel, carry many clients: only
    `serve.max_connections` bounds them (see `daemon.webhooks.connections`).
    """
    serve = daemon.config.serve
    limits = ConnectionLimits(
        header_timeout=serve.header_timeout_ms / 1000,
        idle_timeout=serve.idle_timeout_ms / 1000,
        max_connections=serve.max_connections,
        max_connections_per_ip=serve.max_connections_per_ip,
    )

    def exempt(address: str) -> bool:
        webhooks = daemon.webhooks
        policy = webhooks.policy if webhooks is not None else url_policy(daemon.config, None)
        if policy.is_trusted_proxy(address):
            return True
        parsed = parse_ip(address)
        return policy.tunnel_agent and parsed is not None and parsed.is_loopback

    rejections = daemon.webhooks.rejections if daemon.webhooks is not None else None
    return ConnectionGuard(limits, exempt=exempt, rejections=rejections)


def mount_webhook(daemon: WebhookHost) -> WebhookServer:
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
