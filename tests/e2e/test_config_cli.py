"""`voicecall config ...` through the real entry point, as a subprocess."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, object]:
        data = json.loads(self.stdout)
        assert isinstance(data, dict)
        return data


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "vc"


def run(home: Path, *args: str, extra_env: dict[str, str] | None = None) -> Result:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VOICECALL_", "TWILIO_", "TELNYX_", "PLIVO_", "OPENAI_"))
    }
    env.update(
        VOICECALL_HOME=str(home),
        VOICECALL_NO_KEYRING="1",
        NO_COLOR="1",
        PYTHONPATH=str(ROOT),
        **(extra_env or {}),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "voicecall_cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_path(home: Path) -> None:
    """`config path` prints where the file lives, even before it exists."""
    result = run(home, "config", "path")
    assert (result.status, result.stdout) == (0, f"{home / 'config.toml'}\n")
    assert run(home, "config", "path", "--json").json == {
        "path": str(home / "config.toml"),
        "exists": False,
    }


def test_init_then_validate(home: Path) -> None:
    """init writes a valid starter file and refuses to overwrite it without --force."""
    assert run(home, "config", "validate").stdout.startswith("config OK:")
    result = run(home, "config", "init")
    assert result.status == 0 and (home / "config.toml").exists()
    again = run(home, "config", "init")
    assert again.status == 1 and "already exists" in again.stderr and "--force" in again.stderr
    assert run(home, "config", "init", "--force").status == 0
    result = run(home, "config", "validate")
    assert (result.status, result.stdout) == (0, f"config OK: {home / 'config.toml'}\n")
    assert run(home, "config", "validate", "--json").json == {
        "valid": True,
        "path": str(home / "config.toml"),
        "errors": [],
        "warnings": [],
    }


def test_validate_names_every_bad_key(home: Path) -> None:
    """validate prints each problem with its key and exits 1."""
    home.mkdir()
    (home / "config.toml").write_text(
        'provider = "twillio"\nfromNumber = "+15550001234"\n[serve]\nport = "abc"\n'
    )
    result = run(home, "config", "validate")
    assert result.status == 1 and result.stdout == ""
    assert 'provider = "twillio": expected one of' in result.stderr
    assert "fromNumber" in result.stderr and "did you mean from_number?" in result.stderr
    assert 'serve.port = "abc": expected an integer from 0 to 65535' in result.stderr
    data = run(home, "config", "validate", "--json")
    assert data.status == 1 and data.json["valid"] is False
    assert len(data.json["errors"]) == 3  # type: ignore[arg-type]


def test_set_get_keeps_comments(home: Path) -> None:
    """set edits in place (comments stay), refuses bad values, get reads them back."""
    assert run(home, "config", "init").status == 0
    path = home / "config.toml"
    original_comments = [ln for ln in path.read_text().splitlines() if ln.startswith("#")]
    assert run(home, "config", "set", "serve.port", "8080").status == 0
    assert run(home, "config", "set", "from_number", "+15550001234").status == 0
    assert run(home, "config", "set", "tts.openai.voice", "nova").status == 0
    text = path.read_text()
    assert [ln for ln in text.splitlines() if ln.startswith("#")] == original_comments
    data = tomllib.loads(text)
    assert data["serve"]["port"] == 8080 and data["from_number"] == "+15550001234"
    assert run(home, "config", "get", "serve.port").stdout == "8080\n"
    assert run(home, "config", "get", "from_number").stdout == "+15550001234\n"
    assert run(home, "config", "get", "tts.openai.voice", "--json").json == {
        "key": "tts.openai.voice",
        "value": "nova",
    }
    unset = run(home, "config", "get", "to_number")
    assert unset.status == 1 and "to_number is unset" in unset.stderr

    bad = run(home, "config", "set", "serve.port", "abc")
    assert bad.status == 1 and 'serve.port = "abc": expected an integer' in bad.stderr
    assert path.read_text() == text
    typo = run(home, "config", "set", "serve.prot", "1")
    assert typo.status == 1 and "did you mean serve.port?" in typo.stderr


def test_set_secret_makes_file_private_and_show_masks(home: Path) -> None:
    """A secret in the file makes it 0600; show never prints it and names its source."""
    assert run(home, "config", "set", "twilio.auth_token", "hunter2").status == 0
    path = home / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    shown = run(home, "config", "show")
    assert shown.status == 0 and "hunter2" not in shown.stdout
    assert 'auth_token = "********" # from config file' in shown.stdout
    env_shown = run(
        home,
        "config",
        "show",
        "--json",
        extra_env={"TWILIO_AUTH_TOKEN": "from-env", "OPENAI_API_KEY": "sk-x"},
    )
    data = env_shown.json
    assert "from-env" not in env_shown.stdout and "sk-x" not in env_shown.stdout
    assert data["secretSources"] == {
        "twilio.auth_token": "env",
        "streaming.api_key": "env",
        "agent.api_key": "env",
        "tts.openai.api_key": "env",
        "messages.tts.openai.api_key": "env",
        "realtime.api_key": "env",
    }
    config = data["config"]
    assert isinstance(config, dict) and config["twilio"]["auth_token"] == "********"
    assert {k: config["serve"][k] for k in ("bind", "port", "path")} == {
        "bind": "127.0.0.1",
        "port": 3334,
        "path": "/voice/webhook",
    }
    assert run(home, "config", "get", "twilio.auth_token").stdout == "********\n"


def test_set_provider_with_gaps_warns_but_writes(home: Path) -> None:
    """Missing credentials do not block `set`; validate then lists them with their fixes."""
    result = run(home, "config", "set", "provider", "twilio")
    assert result.status == 0 and "twilio.auth_token is not set" in result.stderr
    check = run(home, "config", "validate")
    assert check.status == 1
    assert "`voicecall secrets set twilio.auth_token`" in check.stderr
    assert "TWILIO_ACCOUNT_SID" in check.stderr and "from_number is not set" in check.stderr


OPENCLAW = """
// an OpenClaw config, JSON5
{
  messages: { tts: { provider: 'openai', openai: { voice: 'nova' }, auto: 'off' } },
  plugins: { entries: { 'voice-call': { enabled: true, config: {
    provider: 'twilio', fromNumber: '+15550001234', ringTimeoutMs: 45000,
    publicUrl: 'https://voice.example.com/voice/webhook',
    twilio: { accountSid: 'AC123', authToken: 'tok' },
    webhookSecurity: { trustedProxyIPs: ['127.0.0.1'] },
    outbound: { notifyHangupDelaySec: 5 },
    streaming: { streamPath: '/voice/stream2' },
    tunnel: { ngrokAuthToken: 'ngtok' },
    sessionScope: 'per-call',
  } } } },
}
"""


def test_import_openclaw(home: Path, tmp_path: Path) -> None:
    """import-openclaw prints TOML, reports unmapped keys, and writes with --write."""
    source = tmp_path / "openclaw.json5"
    source.write_text(OPENCLAW)
    result = run(home, "config", "import-openclaw", str(source))
    assert result.status == 0, result.stderr
    data = tomllib.loads(result.stdout)
    assert data["provider"] == "twilio" and data["ring_timeout_seconds"] == 45
    assert data["webhook_security"]["trusted_proxy_ips"] == ["127.0.0.1"]
    assert data["outbound"]["notify_hangup_delay_seconds"] == 5
    assert data["streaming"]["stream_path"] == "/voice/stream2"
    assert data["tunnel"]["ngrok_authtoken"] == "ngtok"
    assert data["messages"]["tts"]["openai"]["voice"] == "nova"
    assert "Not imported: sessionScope" in result.stderr
    assert "Not imported: messages.tts.auto" in result.stderr
    assert not (home / "config.toml").exists()

    written = run(home, "config", "import-openclaw", str(source), "--write")
    assert written.status == 0 and (home / "config.toml").exists()
    assert stat.S_IMODE((home / "config.toml").stat().st_mode) == 0o600
    assert run(home, "config", "validate").status == 0
    refused = run(home, "config", "import-openclaw", str(source), "--write")
    assert refused.status == 1 and "--force" in refused.stderr


def test_help_has_examples(home: Path) -> None:
    """Every config command documents examples."""
    for command in ("init", "show", "get", "set", "unset", "validate", "path", "import-openclaw"):
        result = run(home, "config", command, "--help")
        assert result.status == 0 and "Examples:" in result.stdout, command


def test_cli_import_stays_light() -> None:
    """Importing the CLI does not pull in tomlkit, keyring, json5 or the config package."""
    code = (
        "import sys, voicecall_cli.main; "
        "print(sorted(m for m in ('tomlkit', 'keyring', 'json5', 'aiohttp', "
        "'daemon.config.loader') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.strip() == "[]", proc.stderr
