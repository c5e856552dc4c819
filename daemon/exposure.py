"""Where the webhook is reachable from, and keeping every part in step when that changes.

The effective public URL, in order: `public_url`, an ngrok tunnel, a Tailscale serve/funnel
route, else the local listener (accepted only for the mock provider or a provider whose API is on
this machine: a simulator). The URL feeds signature verification, the provider's callback URLs
and the media-stream URL, so `voicecall expose` updates all three at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from daemon.config.exposure import check_public_webhook
from daemon.errors import ConfigError, TunnelError
from daemon.tunnels.base import Tunnel, TunnelInfo

if TYPE_CHECKING:
    from daemon.config.model import Config

logger = logging.getLogger(__name__)


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass(frozen=True, slots=True)
class Exposure:
    """What the webhook is reachable at."""

    webhook_url: str
    """The URL providers call (public, or local for mock and simulators)."""
    public_url: str | None
    """The public URL, when there is one."""
    stream_url: str | None
    """The media-stream websocket URL, when streaming is on."""
    mode: str = "local"
    """local, public_url, ngrok, serve or funnel."""


def stream_url_for(config: Config, webhook_url: str) -> str | None:
    """The media-stream URL on the same origin as `webhook_url`."""
    if not config.streaming.enabled:
        return None
    scheme, _, rest = webhook_url.partition("://")
    host = rest.split("/", 1)[0]
    return f"{'wss' if scheme == 'https' else 'ws'}://{host}{config.streaming.stream_path}"


class ExposureManager:
    """Starts and stops tunnels and computes the effective URLs."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.port = 0
        self._tunnel: Tunnel | None = None
        self.current = Exposure("", None, None)

    @property
    def local_url(self) -> str:
        """The webhook on our own listener."""
        serve = self.config.serve
        return f"http://{_format_host(serve.bind)}:{self.port}{serve.path}"

    @property
    def origin(self) -> str:
        """The local origin tunnels forward to."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int) -> Exposure:
        """Publish as configured (public_url, ngrok or Tailscale) and check the result."""
        self.port = port
        config = self.config
        if config.public_url:
            exposure = Exposure(
                config.public_url,
                config.public_url,
                stream_url_for(config, config.public_url),
                "public_url",
            )
        elif config.tunnel.provider == "ngrok":
            from daemon.tunnels.ngrok import NgrokTunnel

            tunnel = NgrokTunnel(
                authtoken=config.tunnel.ngrok_authtoken,
                domain=config.tunnel.ngrok_domain,
                path=config.serve.path,
                stream_path=self._stream_path(),
            )
            exposure = await self._open(tunnel, "ngrok")
        elif config.tailscale.mode in ("serve", "funnel"):
            exposure = await self._tailscale(config.tailscale.mode, config.tailscale.path)
        else:
            exposure = Exposure(self.local_url, None, stream_url_for(config, self.local_url))
        try:
            check_public_webhook(config, exposure.webhook_url)
        except ConfigError:
            await self.stop()
            raise
        self.current = exposure
        return exposure

    def _stream_path(self) -> str | None:
        return self.config.streaming.stream_path if self.config.streaming.enabled else None

    async def _open(self, tunnel: Tunnel, mode: str) -> Exposure:
        info: TunnelInfo = await tunnel.start(self.origin)
        self._tunnel = tunnel
        return Exposure(info.public_url, info.public_url, info.stream_url, mode)

    async def _tailscale(self, mode: str, path: str) -> Exposure:
        from daemon.tunnels.tailscale import TailscaleTunnel

        tunnel = TailscaleTunnel(
            "funnel" if mode == "funnel" else "serve", path=path, stream_path=self._stream_path()
        )
        return await self._open(tunnel, mode)

    async def expose(self, mode: str, path: str | None) -> dict[str, Any]:
        """Switch Tailscale exposure at run time (`voicecall expose`)."""
        if mode != "off" and self.config.skip_signature_verification:
            # SPEC 3: unsigned webhooks are only accepted while nothing is exposed publicly.
            raise ConfigError(
                f"refusing to publish the webhook with tailscale {mode} while "
                "skip_signature_verification = true: anyone could then post unsigned webhooks; "
                "set skip_signature_verification = false and restart the daemon"
            )
        if mode == "off":
            from daemon.tunnels.tailscale import tailscale_off

            if self._tunnel is not None and self.current.mode in ("serve", "funnel"):
                await self.stop()
            else:
                paths = [path or self.config.tailscale.path]
                if self._stream_path():
                    paths.append(self.config.streaming.stream_path)
                await tailscale_off(paths)
            if self.config.public_url is None and self.current.mode in ("serve", "funnel", "local"):
                self.current = Exposure(
                    self.local_url, None, stream_url_for(self.config, self.local_url)
                )
            return {
                "ok": True,
                "mode": "off",
                "publicUrl": self.current.public_url,
                "streamUrl": self.current.stream_url,
            }
        if self.current.mode in ("public_url", "ngrok"):
            raise TunnelError(
                f"the webhook is already published by {self.current.mode} "
                f"({self.current.public_url}); remove that first"
            )
        if self._tunnel is not None:
            await self.stop()
        self.current = await self._tailscale(mode, path or self.config.tailscale.path)
        return {
            "ok": True,
            "mode": mode,
            "publicUrl": self.current.public_url,
            "streamUrl": self.current.stream_url,
        }

    async def stop(self) -> None:
        """Remove any tunnel or route we created."""
        tunnel, self._tunnel = self._tunnel, None
        if tunnel is not None:
            try:
                await tunnel.stop()
            except TunnelError as exc:
                logger.warning(
                    "could not remove the %s exposure: %s", self.current.mode, exc.message
                )
