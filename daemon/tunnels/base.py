"""The tunnel interface: what publishes the local webhook server on a public URL.

A tunnel is the third way (after `public_url` and a local simulator) for a telephony provider to
reach the webhook. The daemon composes one tunnel at start and stops it at shutdown; the CLI's
`voicecall expose` drives the Tailscale one on demand. Implementations are structural
(`typing.Protocol`), so tests can pass any object with the same two coroutines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from daemon.errors import TunnelError

__all__ = ["Tunnel", "TunnelError", "TunnelInfo", "local_origin", "normalise_path"]


@dataclass(frozen=True, slots=True)
class TunnelInfo:
    """Where the provider reaches us once a tunnel is up."""

    public_url: str
    """The webhook URL as the provider sees it (https, with the webhook path)."""
    stream_url: str | None
    """The media-stream websocket URL (wss, with the stream path); None when not exposed."""


class Tunnel(Protocol):
    """Publishes the local webhook server; one instance serves one start/stop cycle."""

    async def start(self, local_url: str) -> TunnelInfo:
        """Publish `local_url` (the local server's origin, e.g. `http://127.0.0.1:3334`).

        Any path in `local_url` is ignored: the tunnel knows its own webhook and stream paths.

        Raises:
            TunnelError: the tunnel could not be set up; the message says what to do.
        """
        ...

    async def stop(self) -> None:
        """Withdraw what `start` published. Never raises; safe to call twice or before start."""
        ...


def local_origin(local_url: str) -> str:
    """Reduce a local URL to `scheme://host:port`, the part a tunnel forwards to.

    Raises:
        TunnelError: the URL has no scheme or host (a programming or config mistake).
    """
    parts = urlsplit(local_url)
    if not parts.scheme or not parts.netloc:
        raise TunnelError(
            f"local URL {local_url!r} is not absolute; expected e.g. http://127.0.0.1:3334"
        )
    return f"{parts.scheme}://{parts.netloc}"


def normalise_path(path: str) -> str:
    """A URL path with exactly one leading slash and no trailing one (`/` stays `/`)."""
    stripped = path.strip().strip("/")
    return "/" + stripped if stripped else "/"
