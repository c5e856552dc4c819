"""Public exposure owned by the daemon: Tailscale serve/funnel through a fake `tailscale` CLI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.harness import FAST_MOCK, REPO, DaemonHarness, short_home

pytestmark = pytest.mark.e2e

FAKE = REPO / "tests" / "fakes" / "tailscale"


def _with_fake_tailscale(d: DaemonHarness, **env: str) -> Path:
    bin_dir = d.home / "bin"
    bin_dir.mkdir()
    shutil.copy(FAKE, bin_dir / "tailscale")
    (bin_dir / "tailscale").chmod(0o755)
    log = d.home / "tailscale.log"
    d.env.update(
        {"PATH": f"{bin_dir}{os.pathsep}{d.env['PATH']}", "FAKE_TAILSCALE_LOG": str(log), **env}
    )
    return log


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_expose_funnel_then_off_at_run_time(make_daemon) -> None:
    """`voicecall expose` mounts the webhook path, reports the public URL, and removes it."""
    d: DaemonHarness = make_daemon(FAST_MOCK, start=False)
    log = _with_fake_tailscale(d)
    d.start()
    port = d.rpc("daemon.status")["webhookUrl"].split(":")[2].split("/")[0]
    result = d.cli_json("expose", "--mode", "funnel")
    assert result == {
        "ok": True,
        "mode": "funnel",
        "publicUrl": "https://box.tail1234.ts.net/voice/webhook",
        "streamUrl": None,
    }
    assert [
        "funnel",
        "--bg",
        "--yes",
        "--set-path",
        "/voice/webhook",
        f"http://127.0.0.1:{port}/voice/webhook",
    ] in _calls(log)
    status = d.rpc("daemon.status")
    assert status["publicUrl"] == "https://box.tail1234.ts.net/voice/webhook"
    assert status["webhookUrl"] == status["publicUrl"]
    off = d.cli_json("expose", "--mode", "off")
    assert off["ok"] is True and off["publicUrl"] is None
    assert ["funnel", "off", "/voice/webhook"] in _calls(log)
    assert d.rpc("daemon.status")["publicUrl"] is None


def test_tailscale_at_start_publishes_webhook_and_stream_and_cleans_up(make_daemon) -> None:
    """A real provider with `[tailscale] mode = "funnel"` starts public, and unmounts on stop."""
    config = (
        'provider = "twilio"\nfrom_number = "+15550000001"\n'
        '[twilio]\naccount_sid = "AC00000000000000000000000000000000"\n'
        'auth_token = "test-token"\n'
        "[serve]\nport = 0\n"
        '[tailscale]\nmode = "funnel"\n'
    )
    d: DaemonHarness = make_daemon(config, start=False)
    log = _with_fake_tailscale(d)
    d.start()
    status = d.rpc("daemon.status")
    assert status["publicUrl"] == "https://box.tail1234.ts.net/voice/webhook"
    assert status["provider"] == "twilio"
    d.stop()
    assert ["funnel", "off", "/voice/webhook"] in _calls(log)


def test_tailscale_not_running_refuses_to_start_with_the_fix() -> None:
    """With Tailscale down the daemon does not start, and says how to fix it."""
    d = DaemonHarness(
        short_home(), 'provider = "mock"\n[serve]\nport = 0\n[tailscale]\nmode = "serve"\n'
    )
    try:
        _with_fake_tailscale(d, FAKE_TAILSCALE_DOWN="1")
        done = d.cli("status")
        assert done.returncode == 3
        assert "tailscale up" in done.stderr or "Tailscale running" in done.stderr
        assert not d.socket.exists()
    finally:
        d.cleanup()


def test_real_provider_on_a_local_url_is_refused() -> None:
    """No public URL, tunnel or Tailscale: a real provider is refused, naming the three fixes."""
    d = DaemonHarness(
        short_home(),
        'provider = "twilio"\nfrom_number = "+15550000001"\n'
        '[twilio]\naccount_sid = "AC00000000000000000000000000000000"\n'
        'auth_token = "t"\n[serve]\nport = 0\n',
    )
    try:
        done = d.cli("status")
        assert done.returncode == 3
        for way in ("public_url", "ngrok", "funnel"):
            assert way in done.stderr
    finally:
        d.cleanup()


FAKE_NGROK = '''
"""A stand-in for the ngrok SDK: records forward() calls and returns a listener."""
import json, os


class _Listener:
    def __init__(self, url):
        self._url = url

    def url(self):
        return self._url

    async def close(self):
        with open(os.environ["FAKE_NGROK_LOG"], "a") as fh:
            fh.write(json.dumps(["close"]) + "\\n")


async def forward(addr, **options):
    with open(os.environ["FAKE_NGROK_LOG"], "a") as fh:
        fh.write(json.dumps(["forward", addr, sorted(options)]) + "\\n")
    return _Listener("https://" + options.get("domain", "abc123.ngrok-free.app"))
'''


def test_ngrok_url_is_used_for_signature_verification(make_daemon) -> None:
    """The tunnel's learned URL is what Twilio signatures are checked against."""
    import urllib.error
    import urllib.parse
    import urllib.request

    from twilio.request_validator import RequestValidator

    config = (
        'provider = "twilio"\nfrom_number = "+15550000001"\n'
        '[twilio]\naccount_sid = "AC00000000000000000000000000000000"\n'
        'auth_token = "test-token"\n'
        "[serve]\nport = 0\n"
        '[tunnel]\nprovider = "ngrok"\nngrok_domain = "voice.example.ngrok.app"\n'
    )
    d: DaemonHarness = make_daemon(config, start=False)
    fake_dir = d.home / "fakes"
    fake_dir.mkdir()
    (fake_dir / "ngrok.py").write_text(FAKE_NGROK)
    log = d.home / "ngrok.log"
    d.env.update(
        {
            "PYTHONPATH": f"{fake_dir}{os.pathsep}{d.env.get('PYTHONPATH', '')}",
            "FAKE_NGROK_LOG": str(log),
            "NGROK_AUTHTOKEN": "ngrok-secret",
        }
    )
    d.start()
    status = d.rpc("daemon.status")
    public = "https://voice.example.ngrok.app/voice/webhook"
    assert status["publicUrl"] == public
    forward = json.loads(log.read_text().splitlines()[0])
    assert forward[0] == "forward" and forward[1].startswith("http://127.0.0.1:")
    assert forward[2] == ["authtoken", "domain"]
    port = forward[1].rsplit(":", 1)[1]
    params = {"CallSid": "CA" + "1" * 32, "CallStatus": "ringing", "Direction": "outbound-api"}
    body = urllib.parse.urlencode(params).encode()
    validator = RequestValidator("test-token")

    def post(signed_url: str) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/voice/webhook",
            data=body,
            method="POST",
            headers={
                "X-Twilio-Signature": validator.compute_signature(signed_url, params),
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    assert post(public) == 200
    assert post(f"http://127.0.0.1:{port}/voice/webhook") == 401
    assert "ngrok-secret" not in d.log_text()
    d.stop()
    assert json.loads(log.read_text().splitlines()[-1]) == ["close"]
