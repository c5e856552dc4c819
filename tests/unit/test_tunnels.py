"""Tunnels: Tailscale against a fake `tailscale` executable, ngrok against a fake SDK factory."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from daemon.errors import TunnelError
from daemon.tunnels.base import Tunnel, TunnelInfo, local_origin, normalise_path
from daemon.tunnels.ngrok import NgrokTunnel
from daemon.tunnels.tailscale import TailscaleTunnel, read_node, tailscale_off

FAKE = Path(__file__).resolve().parents[1] / "fakes" / "tailscale"
FAKE_CMD = (sys.executable, str(FAKE))
LOCAL = "http://127.0.0.1:3334"


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file the fake tailscale appends each invocation's argv to."""
    log = tmp_path / "tailscale.log"
    monkeypatch.setenv("FAKE_TAILSCALE_LOG", str(log))
    for name in ("BACKEND", "DNS", "ID", "DOWN", "NOT_ENABLED", "FAIL_PATH", "HANG"):
        monkeypatch.delenv(f"FAKE_TAILSCALE_{name}", raising=False)
    return log


def invocations(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_helpers_normalise() -> None:
    """Paths get one leading slash; local URLs shrink to their origin."""
    assert normalise_path("voice/webhook/") == "/voice/webhook"
    assert normalise_path("/") == "/"
    assert local_origin("http://127.0.0.1:3334/voice/webhook") == LOCAL
    with pytest.raises(TunnelError, match="not absolute"):
        local_origin("127.0.0.1:3334")


async def test_funnel_exposes_webhook_and_stream(calls: Path) -> None:
    """Both paths are mounted with --bg --yes --set-path, and the URLs use the DNS name."""
    tunnel: Tunnel = TailscaleTunnel("funnel", executable=FAKE_CMD)
    info = await tunnel.start(LOCAL + "/ignored")
    assert info == TunnelInfo(
        public_url="https://box.tail1234.ts.net/voice/webhook",
        stream_url="wss://box.tail1234.ts.net/voice/stream",
    )
    assert invocations(calls) == [
        ["status", "--json"],
        ["funnel", "--bg", "--yes", "--set-path", "/voice/webhook", LOCAL + "/voice/webhook"],
        ["funnel", "--bg", "--yes", "--set-path", "/voice/stream", LOCAL + "/voice/stream"],
    ]
    await tunnel.stop()
    assert invocations(calls)[3:] == [
        ["funnel", "off", "/voice/stream"],
        ["funnel", "off", "/voice/webhook"],
    ]
    await tunnel.stop()  # idempotent: nothing more is run
    assert len(invocations(calls)) == 5


async def test_serve_without_stream_path(calls: Path) -> None:
    """With streaming off only the webhook path is mounted, and there is no stream URL."""
    tunnel = TailscaleTunnel("serve", path="/hook/", stream_path=None, executable=FAKE_CMD)
    info = await tunnel.start(LOCAL)
    assert info.public_url == "https://box.tail1234.ts.net/hook"
    assert info.stream_url is None
    assert invocations(calls)[1:] == [
        ["serve", "--bg", "--yes", "--set-path", "/hook", LOCAL + "/hook"],
    ]


async def test_executable_as_path(calls: Path) -> None:
    """The executable may be a plain path (as on PATH)."""
    if not FAKE.stat().st_mode & 0o100:
        pytest.skip("fake tailscale lost its executable bit")
    node = await read_node(str(FAKE))
    assert (node.dns_name, node.node_id) == ("box.tail1234.ts.net", "nABC123CNTRL")


async def test_not_installed() -> None:
    """A missing CLI says how to install it or turn Tailscale off."""
    tunnel = TailscaleTunnel("funnel", executable="/nonexistent/tailscale")
    with pytest.raises(TunnelError, match=r"not found.*tailscale.com/download"):
        await tunnel.start(LOCAL)


async def test_daemon_down(calls: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tailscaled not answering suggests `tailscale up`; nothing is mounted."""
    monkeypatch.setenv("FAKE_TAILSCALE_DOWN", "1")
    expected = r"failed to connect.*Is Tailscale running\?.*tailscale up"
    with pytest.raises(TunnelError, match=expected):
        await TailscaleTunnel("funnel", executable=FAKE_CMD).start(LOCAL)
    assert invocations(calls) == [["status", "--json"]]


async def test_logged_out(calls: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend that is not Running is named in the error."""
    monkeypatch.setenv("FAKE_TAILSCALE_BACKEND", "NeedsLogin")
    with pytest.raises(TunnelError, match=r"BackendState='NeedsLogin'.*tailscale up"):
        await TailscaleTunnel("serve", executable=FAKE_CMD).start(LOCAL)


async def test_no_dns_name(calls: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without MagicDNS there is no public name: say so."""
    monkeypatch.setenv("FAKE_TAILSCALE_DNS", "")
    with pytest.raises(TunnelError, match="MagicDNS"):
        await TailscaleTunnel("serve", executable=FAKE_CMD).start(LOCAL)


async def test_funnel_not_enabled_gives_admin_url(
    calls: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The error carries the admin enable URL with this node's id."""
    monkeypatch.setenv("FAKE_TAILSCALE_NOT_ENABLED", "funnel")
    tunnel = TailscaleTunnel("funnel", executable=FAKE_CMD)
    with pytest.raises(TunnelError) as info:
        await tunnel.start(LOCAL)
    assert "not enabled" in info.value.message
    assert "https://login.tailscale.com/f/funnel?node=nABC123CNTRL" in info.value.message


async def test_second_path_failure_unmounts_first(
    calls: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the stream path fails, the webhook path is withdrawn before the error surfaces."""
    monkeypatch.setenv("FAKE_TAILSCALE_FAIL_PATH", "/voice/stream")
    tunnel = TailscaleTunnel("serve", executable=FAKE_CMD)
    with pytest.raises(TunnelError, match=r"status 1: error: cannot mount /voice/stream"):
        await tunnel.start(LOCAL)
    assert invocations(calls)[-1] == ["serve", "off", "/voice/webhook"]
    assert len(invocations(calls)) == 4


async def test_hanging_command_times_out(calls: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A blocked `tailscale funnel` is killed after the timeout and explained."""
    monkeypatch.setenv("FAKE_TAILSCALE_HANG", "funnel")
    tunnel = TailscaleTunnel("funnel", executable=FAKE_CMD, timeout=1.0)
    with pytest.raises(TunnelError, match=r"within 1s.*f/funnel\?node=nABC123CNTRL"):
        await tunnel.start(LOCAL)


async def test_off_ignores_errors(calls: Path) -> None:
    """`expose --mode off` turns off serve and funnel for every path, whatever happens."""
    await tailscale_off(["/voice/webhook", "voice/stream"], executable=FAKE_CMD)
    await tailscale_off(["/voice/webhook"], executable="/nonexistent/tailscale")
    assert invocations(calls) == [
        ["serve", "off", "/voice/webhook"],
        ["serve", "off", "/voice/stream"],
        ["funnel", "off", "/voice/webhook"],
        ["funnel", "off", "/voice/stream"],
    ]


def test_bad_mode() -> None:
    """Only serve and funnel are tunnel modes (off is not a tunnel)."""
    with pytest.raises(TunnelError, match="not one of serve, funnel"):
        TailscaleTunnel("off", executable=FAKE_CMD)  # type: ignore[arg-type]


class FakeListener:
    """Stands in for `ngrok.Listener`."""

    def __init__(self, url: str) -> None:
        self._url = url
        self.closed = 0

    def url(self) -> str:
        return self._url

    async def close(self) -> None:
        self.closed += 1


class FakeNgrok:
    """A `forward` factory that records its arguments."""

    def __init__(self, url: str = "https://abc123.ngrok-free.app") -> None:
        self.url = url
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.listeners: list[FakeListener] = []

    async def __call__(self, addr: str, options: Mapping[str, str]) -> FakeListener:
        self.calls.append((addr, dict(options)))
        listener = FakeListener(self.url)
        self.listeners.append(listener)
        return listener


async def test_ngrok_forwards_origin_and_builds_urls() -> None:
    """The listener forwards to the local origin; URLs get the webhook and stream paths."""
    fake = FakeNgrok()
    tunnel: Tunnel = NgrokTunnel(authtoken="tok", domain="calls.example.com", forward=fake)
    info = await tunnel.start(LOCAL + "/voice/webhook")
    assert fake.calls == [(LOCAL, {"authtoken": "tok", "domain": "calls.example.com"})]
    assert info == TunnelInfo(
        public_url="https://abc123.ngrok-free.app/voice/webhook",
        stream_url="wss://abc123.ngrok-free.app/voice/stream",
    )
    await tunnel.stop()
    await tunnel.stop()
    assert fake.listeners[0].closed == 1


async def test_ngrok_without_domain_or_stream() -> None:
    """No domain option is sent when none is configured."""
    fake = FakeNgrok("https://x.ngrok.app/")
    tunnel = NgrokTunnel(authtoken="tok", stream_path=None, forward=fake)
    info = await tunnel.start(LOCAL)
    assert fake.calls == [(LOCAL, {"authtoken": "tok"})]
    assert info == TunnelInfo("https://x.ngrok.app/voice/webhook", None)


async def test_ngrok_needs_token_and_hides_it() -> None:
    """A missing authtoken says where to put it; repr never shows the token."""
    with pytest.raises(TunnelError, match="NGROK_AUTHTOKEN"):
        await NgrokTunnel(authtoken=None, forward=FakeNgrok()).start(LOCAL)
    assert "s3cret" not in repr(NgrokTunnel(authtoken="s3cret", forward=FakeNgrok()))


async def test_ngrok_rejects_double_start() -> None:
    """One tunnel object serves one start/stop cycle at a time."""
    tunnel = NgrokTunnel(authtoken="tok", forward=FakeNgrok())
    await tunnel.start(LOCAL)
    with pytest.raises(TunnelError, match="already started"):
        await tunnel.start(LOCAL)
    await tunnel.stop()
