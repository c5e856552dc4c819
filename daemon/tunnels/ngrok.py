"""ngrok: publish the webhook server in-process through the ngrok Python SDK.

The SDK (PyPI `ngrok`, a Rust core in the wheel) needs no agent binary and no child process to
babysit, which suits a daemon. It is imported only when this tunnel starts, so a config that
does not use ngrok never loads it. The SDK call sits behind a `forward` factory so tests inject
a local fake and never touch the network.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol
from urllib.parse import urlsplit

from daemon.errors import TunnelError
from daemon.tunnels.base import TunnelInfo, local_origin, normalise_path

logger = logging.getLogger(__name__)


class NgrokListener(Protocol):
    """The part of `ngrok.Listener` we use."""

    def url(self) -> str:
        """The public URL (`https://<name>.ngrok-free.app`)."""
        ...

    def close(self) -> Awaitable[None]:
        """Withdraw the listener."""
        ...


NgrokForward = Callable[[str, Mapping[str, str]], Awaitable[NgrokListener]]
"""Open a listener forwarding to an address, with SDK options (`authtoken`, `domain`)."""


async def sdk_forward(addr: str, options: Mapping[str, str]) -> NgrokListener:
    """The real factory: `ngrok.forward(addr, **options)` from the installed SDK.

    Raises:
        TunnelError: the SDK is not installed, or ngrok refused (bad token, domain taken).
    """
    try:
        import ngrok  # heavy native module: loaded only when this tunnel starts
    except ImportError:
        raise TunnelError(
            'tunnel.provider = "ngrok" needs the ngrok package: pip install ngrok'
        ) from None
    try:
        # Inside a running loop forward() returns an awaitable; outside it blocks. Accept both.
        forward: Callable[..., object] = ngrok.forward
        result = forward(addr, **options)
        if inspect.isawaitable(result):
            result = await result
    except Exception as exc:  # the SDK raises ValueError and friends; the token must not leak
        raise TunnelError(
            f"ngrok refused to start the tunnel: {_redact(str(exc), options)}; "
            "check tunnel.ngrok_authtoken (or NGROK_AUTHTOKEN) and "
            "tunnel.ngrok_domain"
        ) from None
    listener: NgrokListener = result  # type: ignore[assignment]
    return listener


class NgrokTunnel:
    """Forward the local webhook server through an ngrok listener."""

    def __init__(
        self,
        *,
        authtoken: str | None,
        domain: str | None = None,
        path: str = "/voice/webhook",
        stream_path: str | None = "/voice/stream",
        forward: NgrokForward | None = None,
    ) -> None:
        """Configure, do not connect yet.

        Args:
            authtoken: the ngrok authtoken (secret; never logged).
            domain: a reserved domain, so the public URL (and Twilio's signatures) stay stable
                across restarts; free URLs change every session.
            path: the webhook path appended to the listener URL.
            stream_path: the media-stream path, or None when streaming is off.
            forward: the SDK call; tests pass a fake. Defaults to :func:`sdk_forward`.
        """
        self.authtoken = authtoken
        self.domain = domain
        self.path = normalise_path(path)
        self.stream_path = normalise_path(stream_path) if stream_path else None
        self._forward = forward or sdk_forward
        self._listener: NgrokListener | None = None

    def __repr__(self) -> str:
        token = "set" if self.authtoken else "unset"
        return f"NgrokTunnel(domain={self.domain!r}, authtoken={token}, path={self.path!r})"

    async def start(self, local_url: str) -> TunnelInfo:
        """Open the listener and return the https webhook URL and wss stream URL.

        Raises:
            TunnelError: no authtoken, or ngrok refused the session or listener.
        """
        if not self.authtoken:
            raise TunnelError(
                'tunnel.provider = "ngrok" needs an authtoken: set NGROK_AUTHTOKEN, or run '
                "`voicecall secrets set tunnel.ngrok_authtoken`"
            )
        if self._listener is not None:
            raise TunnelError("this ngrok tunnel is already started; stop it first")
        options = {"authtoken": self.authtoken}
        if self.domain:
            options["domain"] = self.domain
        listener = await self._forward(local_origin(local_url), options)
        self._listener = listener
        base = listener.url().rstrip("/")
        host = urlsplit(base).netloc
        if not host:
            await self.stop()
            raise TunnelError(f"ngrok returned a URL without a host: {base!r}")
        logger.info("ngrok forwards %s to %s", base, local_origin(local_url))
        stream_url = f"wss://{host}{self.stream_path}" if self.stream_path else None
        return TunnelInfo(public_url=f"https://{host}{self.path}", stream_url=stream_url)

    async def stop(self) -> None:
        """Close the listener; errors are logged, never raised."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        try:
            await listener.close()
        except Exception as exc:  # stopping must not fail shutdown
            logger.warning("closing the ngrok listener failed: %s", exc)


def _redact(text: str, options: Mapping[str, str]) -> str:
    token = options.get("authtoken")
    return text.replace(token, "***") if token else text
