"""Tailscale serve/funnel: publish the webhook and stream paths through the `tailscale` CLI.

We drive the real CLI (>= 1.52 syntax) rather than the local API because the CLI is the stable,
documented surface and its `--bg` mode makes the exposure outlive our process, which is what
`voicecall expose` promises. Every call has a timeout: `tailscale funnel` blocks, waiting for
an admin, when funnel is not enabled on the tailnet.

Serve and funnel do not expose the media-stream path by themselves (openclaw PR #1213), so both
paths are mounted explicitly, and the first is withdrawn again when the second fails.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from daemon.errors import TunnelError
from daemon.tunnels.base import TunnelInfo, local_origin, normalise_path

logger = logging.getLogger(__name__)

TailscaleMode = Literal["serve", "funnel"]
DEFAULT_TIMEOUT_SECONDS = 10.0
ADMIN_ENABLE_URL = "https://login.tailscale.com/f/{mode}?node={node}"
INSTALL_HINT = 'install Tailscale (https://tailscale.com/download) or set tailscale.mode = "off"'

# What `tailscale serve|funnel` prints when the tailnet policy does not allow it, across
# versions: "Funnel is not enabled on your tailnet", "Funnel not available; \"funnel\" node
# attribute not set", "Serve is not enabled on your tailnet".
_NOT_ENABLED = re.compile(
    r"(funnel|serve)\b[^\n]*\bnot\s+(enabled|available|allowed)|node attribute|/f/(funnel|serve)",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class TailscaleNode:
    """This machine as `tailscale status --json` describes it."""

    dns_name: str
    """The MagicDNS name without the trailing dot, e.g. `host.tailnet-1234.ts.net`."""
    node_id: str
    """The stable node id (`Self.ID`), used in the admin enable URL."""


@dataclass(frozen=True, slots=True)
class _Completed:
    returncode: int
    stdout: str
    stderr: str


def _argv_prefix(executable: str | Sequence[str]) -> list[str]:
    return [executable] if isinstance(executable, str) else list(executable)


async def _run(
    executable: str | Sequence[str], args: Sequence[str], command_timeout: float
) -> _Completed:
    """Run one tailscale command; TimeoutError when it does not finish in time."""
    argv = [*_argv_prefix(executable), *args]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise TunnelError(
            f"the tailscale command was not found ({argv[0]!r}); {INSTALL_HINT}"
        ) from None
    except PermissionError:
        raise TunnelError(
            f"the tailscale command {argv[0]!r} is not executable; {INSTALL_HINT}"
        ) from None
    try:
        async with asyncio.timeout(command_timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        raise
    return _Completed(
        proc.returncode if proc.returncode is not None else -1,
        out.decode(errors="replace"),
        err.decode(errors="replace"),
    )


async def read_node(
    executable: str | Sequence[str] = "tailscale",
    command_timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> TailscaleNode:
    """Ask `tailscale status --json` for this node's DNS name and id.

    Raises:
        TunnelError: tailscale is missing, not running, not logged in, or has no DNS name.
    """
    not_running = "Is Tailscale running? Start it with `tailscale up`"
    try:
        done = await _run(executable, ["status", "--json"], command_timeout)
    except TimeoutError:
        raise TunnelError(
            f"`tailscale status` did not answer within {command_timeout:g}s. {not_running}"
        ) from None
    try:
        status = json.loads(done.stdout) if done.stdout.strip() else None
    except json.JSONDecodeError:
        status = None
    if not isinstance(status, dict):
        detail = _first_line(done.stderr) or f"exit status {done.returncode}"
        raise TunnelError(f"could not read `tailscale status --json` ({detail}). {not_running}")
    state = status.get("BackendState")
    if state != "Running":
        raise TunnelError(f"Tailscale is not connected (BackendState={state!r}). {not_running}")
    me = status.get("Self")
    dns = str(me.get("DNSName") or "").rstrip(".") if isinstance(me, dict) else ""
    if not dns:
        raise TunnelError(
            "could not get this node's Tailscale DNS name from `tailscale status --json`; "
            "enable MagicDNS and HTTPS certificates for the tailnet (admin console, DNS page)"
        )
    node_id = str(me.get("ID") or "") if isinstance(me, dict) else ""
    return TailscaleNode(dns_name=dns, node_id=node_id)


async def tailscale_off(
    paths: Sequence[str],
    *,
    modes: Sequence[TailscaleMode] = ("serve", "funnel"),
    executable: str | Sequence[str] = "tailscale",
    command_timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> None:
    """Withdraw `paths` from serve and funnel (`voicecall expose --mode off`); errors ignored.

    Used both by :meth:`TailscaleTunnel.stop` and on its own, because `--bg` exposures outlive
    the process that made them.
    """
    for mode in modes:
        for path in paths:
            try:
                done = await _run(executable, [mode, "off", normalise_path(path)], command_timeout)
            except (TunnelError, TimeoutError, OSError) as exc:
                logger.debug("tailscale %s off %s failed: %s", mode, path, exc)
                continue
            if done.returncode != 0:
                # Usually "handler does not exist": nothing was mounted there.
                logger.debug("tailscale %s off %s: %s", mode, path, _first_line(done.stderr))


class TailscaleTunnel:
    """Expose the webhook (and stream) path with `tailscale serve` or `tailscale funnel`."""

    def __init__(
        self,
        mode: TailscaleMode,
        *,
        path: str = "/voice/webhook",
        stream_path: str | None = "/voice/stream",
        executable: str | Sequence[str] = "tailscale",
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        """Configure, do not run anything yet.

        Args:
            mode: `serve` (tailnet only) or `funnel` (public internet).
            path: the webhook path, mounted at the same path publicly.
            stream_path: the media-stream path, or None when streaming is off.
            executable: the tailscale CLI, a name on PATH, a path, or an argv prefix.
            timeout: seconds each tailscale command may take.
        """
        if mode not in ("serve", "funnel"):
            raise TunnelError(f"tailscale mode {mode!r} is not one of serve, funnel")
        self.mode: TailscaleMode = mode
        self.path = normalise_path(path)
        self.stream_path = normalise_path(stream_path) if stream_path else None
        self.executable = executable
        self.timeout = timeout
        self.node: TailscaleNode | None = None
        self._mounted: list[str] = []

    @property
    def paths(self) -> list[str]:
        """The paths this tunnel mounts, webhook first."""
        paths = [self.path]
        if self.stream_path and self.stream_path != self.path:
            paths.append(self.stream_path)
        return paths

    def enable_url(self) -> str | None:
        """The admin page that enables this mode for this node, once the node is known."""
        if self.node is None or not self.node.node_id:
            return None
        return ADMIN_ENABLE_URL.format(mode=self.mode, node=self.node.node_id)

    async def start(self, local_url: str) -> TunnelInfo:
        """Mount every path on `local_url`'s origin and return the https/wss URLs.

        Raises:
            TunnelError: tailscale is missing or down, the mode is not enabled on the tailnet,
                or a mount failed; nothing stays mounted in that case.
        """
        origin = local_origin(local_url)
        self.node = await read_node(self.executable, self.timeout)
        try:
            for path in self.paths:
                await self._mount(path, f"{origin}{path}")
        except BaseException:
            await self.stop()
            raise
        host = self.node.dns_name
        stream_url = f"wss://{host}{self.stream_path}" if self.stream_path else None
        logger.info("tailscale %s exposes https://%s%s", self.mode, host, self.path)
        return TunnelInfo(public_url=f"https://{host}{self.path}", stream_url=stream_url)

    async def stop(self) -> None:
        """Unmount what `start` mounted, newest first; errors are logged, never raised."""
        mounted, self._mounted = self._mounted, []
        if mounted:
            await tailscale_off(
                list(reversed(mounted)),
                modes=(self.mode,),
                executable=self.executable,
                command_timeout=self.timeout,
            )

    async def _mount(self, path: str, target: str) -> None:
        args = [self.mode, "--bg", "--yes", "--set-path", path, target]
        try:
            done = await _run(self.executable, args, self.timeout)
        except TimeoutError:
            raise TunnelError(
                f"`tailscale {self.mode}` did not finish within {self.timeout:g}s; it waits like "
                f"this when {self.mode} is not enabled for this node{self._enable_hint()}"
            ) from None
        if done.returncode == 0:
            self._mounted.append(path)
            return
        output = f"{done.stderr}\n{done.stdout}"
        if _NOT_ENABLED.search(output):
            raise TunnelError(
                f"Tailscale {self.mode} is not enabled for this node{self._enable_hint()}, "
                "then retry"
            )
        detail = _first_line(done.stderr) or _first_line(done.stdout) or "no output"
        raise TunnelError(
            f"`tailscale {self.mode} --set-path {path}` failed with status {done.returncode}: "
            f"{detail}"
        )

    def _enable_hint(self) -> str:
        url = self.enable_url()
        if url:
            return f"; a tailnet admin can enable it at {url}"
        return f"; a tailnet admin can enable it in the admin console ({self.mode} node attribute)"


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""
