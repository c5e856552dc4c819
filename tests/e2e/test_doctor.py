"""`voicecall doctor` through the real CLI: config, secrets, exposure, port, daemon, provider API.

Every test runs `python -m voicecall_cli --no-autostart doctor` in a fresh VOICECALL_HOME. The
Twilio API is a small aiohttp app on 127.0.0.1 answering the Account fetch the twilio SDK makes;
the keyring is either the `fail` backend or a JSON-file backend written by the test.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.harness import DaemonHarness, short_home

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SID = "AC" + "0" * 32
TOKEN = "tok-doctor-5ecret-value"
LINE = re.compile(r"^(OK|WARN|FAIL) ([a-z][a-z0-9_.]*): (.+?)(?: — (.+))?$")

KEYRING_BACKEND = """
import json, os
from keyring.backend import KeyringBackend

class JsonKeyring(KeyringBackend):
    priority = 1
    def _load(self):
        try:
            with open(os.environ["TEST_KEYRING_FILE"]) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return {}
    def get_password(self, service, username):
        return self._load().get(f"{service}/{username}")
    def set_password(self, service, username, password):
        raise NotImplementedError
    def delete_password(self, service, username):
        raise NotImplementedError
"""


@dataclass
class Result:
    """One doctor run: exit status, stdout lines parsed into (status, id, message, fix)."""

    code: int
    stdout: str
    stderr: str
    lines: list[tuple[str, str, str, str | None]] = field(default_factory=list)

    def by_id(self, check_id: str) -> list[tuple[str, str, str | None]]:
        return [(s, m, f) for s, i, m, f in self.lines if i == check_id]

    def status(self, check_id: str) -> str:
        found = self.by_id(check_id)
        assert len(found) == 1, (check_id, self.stdout)
        return found[0][0]


@pytest.fixture
def home() -> Iterator[Path]:
    path = short_home()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def base_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_TOKEN", "_API_KEY", "_AUTHTOKEN", "_PUBLIC_KEY", "_SID", "_AUTH_ID"))
        and k
        not in (
            "VOICECALL_CONFIG",
            "VOICECALL_SOCKET",
            "XDG_RUNTIME_DIR",
            "TWILIO_FROM_NUMBER",
            "TWILIO_REGION",
            "TWILIO_EDGE",
        )
    }
    env.update(
        VOICECALL_HOME=str(home),
        VOICECALL_NO_KEYRING="1",
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
        NO_COLOR="1",
    )
    return env


def parse(done: subprocess.CompletedProcess[str]) -> Result:
    result = Result(done.returncode, done.stdout, done.stderr)
    for line in done.stdout.splitlines():
        match = LINE.match(line)
        assert match, f"not a check line: {line!r}"
        status, check_id, message, fix = match.groups()
        result.lines.append((status, check_id, message, fix))
    return result


def doctor(home: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    done = subprocess.run(
        [sys.executable, "-m", "voicecall_cli", "--no-autostart", "doctor", *args],
        env=env or base_env(home),
        text=True,
        capture_output=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    if "--json" in args:
        return Result(done.returncode, done.stdout, done.stderr)
    return parse(done)


async def adoctor(home: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """Run doctor without blocking the event loop (a fake API answers on this loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "voicecall_cli",
        "--no-autostart",
        "doctor",
        *args,
        env=env or base_env(home),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return parse(subprocess.CompletedProcess([], proc.returncode, out.decode(), err.decode()))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write(home: Path, text: str) -> None:
    path = home / "config.toml"
    path.write_text(text)
    path.chmod(0o600)


def twilio_config(api: str, port: int, *, token_in_file: bool = True, extra: str = "") -> str:
    token = f'auth_token = "{TOKEN}"\n' if token_in_file else ""
    return (
        f'provider = "twilio"\nfrom_number = "+15550001111"\n{extra}\n'
        f'[twilio]\naccount_sid = "{SID}"\n{token}api_base_url = "{api}"\n'
        f"[serve]\nport = {port}\n"
    )


# --- the fake Twilio API --------------------------------------------------------------------------


@dataclass
class FakeTwilio:
    """Answers GET /2010-04-01/Accounts/{sid}.json with `status` and records what it saw."""

    status: int = 200
    url: str = ""
    seen: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        user, _, password = base64.b64decode(auth.removeprefix("Basic ")).decode().partition(":")
        self.seen.append({"path": request.path, "user": user, "password": password})
        if self.status != 200:
            return web.json_response(
                {"code": 20003, "message": "Authenticate", "status": self.status},
                status=self.status,
            )
        return web.json_response(
            {
                "sid": request.match_info["sid"],
                "status": "active",
                "friendly_name": "doctor test",
                "type": "Full",
            }
        )


@pytest.fixture
async def twilio_api() -> AsyncIterator[FakeTwilio]:
    fake = FakeTwilio()
    app = web.Application()
    app.router.add_get("/2010-04-01/Accounts/{sid}.json", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    fake.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    yield fake
    await runner.cleanup()


# --- tests ----------------------------------------------------------------------------------------


def test_no_config_runs_the_mock_and_passes(home: Path) -> None:
    """No config file: every check is OK or WARN and the exit status is 0."""
    port_free = True
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", 3334))
            probe.listen(1)
        except OSError:
            port_free = False  # some other program holds the default port on this machine
    result = doctor(home)
    ids = [i for _, i, _, _ in result.lines]
    assert ids == [
        "config",
        "secrets.backend",
        "secrets",
        "exposure",
        "exposure.stream",
        "daemon",
        "port",
        "provider.api",
    ]
    for status, check_id, _, _ in result.lines:
        if check_id != "port" or port_free:
            assert status in ("OK", "WARN"), result.stdout
    assert result.code == (0 if port_free else 1), result.stdout + result.stderr
    assert "no config file" in result.by_id("config")[0][1]
    assert not (home / "run" / "daemon.sock").exists(), "doctor must never start the daemon"


def test_json_shape(home: Path) -> None:
    """--json prints one document: ok plus checks with id, status, message, fix."""
    write(home, f"[serve]\nport = {free_port()}\n")
    result = doctor(home, "--json")
    doc = json.loads(result.stdout)
    assert result.code == 0 and doc["ok"] is True
    assert set(doc) == {"ok", "checks"}
    for check in doc["checks"]:
        assert set(check) == {"id", "status", "message", "fix"}
        assert check["status"] in ("OK", "WARN", "FAIL")
    assert doc["checks"][0]["id"] == "config"

    write(home, "[serve]\nport = 70000\n")
    failed = doctor(home, "--json")
    doc = json.loads(failed.stdout)
    assert failed.code == 1 and doc["ok"] is False
    bad = [c for c in doc["checks"] if c["status"] == "FAIL"]
    assert bad and "serve.port" in bad[0]["message"] and bad[0]["fix"]


def test_bad_config_fails_with_one_line_per_key(home: Path) -> None:
    """Every error and missing value is its own FAIL line naming the key; exit 1."""
    write(
        home,
        'provider = "plivo"\nmax_duration_seconds = -1\nbogus_key = 1\n[serve]\nport = 99999\n',
    )
    result = doctor(home, "--offline")
    assert result.code == 1
    fails = [m for s, m, _ in result.by_id("config") if s == "FAIL"]
    for key in (
        "max_duration_seconds",
        "bogus_key",
        "serve.port",
        "from_number",
        "plivo.auth_id",
        "plivo.auth_token",
    ):
        assert sum(key in m for m in fails) >= 1, (key, result.stdout)
    assert len(fails) >= 6
    assert all(fix for s, _, fix in result.by_id("config") if s == "FAIL")


def test_unparsable_config_fails_and_still_reports_the_daemon(home: Path) -> None:
    """A file that is not TOML is one FAIL; the checks that need no config still run."""
    write(home, "provider = \n")
    result = doctor(home)
    assert result.code == 1
    assert result.status("config") == "FAIL"
    assert "not valid TOML" in result.by_id("config")[0][1]
    assert result.status("daemon") == "OK"


def test_twilio_secret_in_config_file_warns_and_is_never_printed(home: Path) -> None:
    """A secret read from the config file is a WARN recommending `voicecall secrets set`."""
    write(
        home,
        twilio_config(
            "https://api.twilio.com",
            free_port(),
            extra='public_url = "https://voice.example.com/voice/webhook"',
        ),
    )
    result = doctor(home, "--offline")
    assert result.code == 0, result.stdout
    status, message, fix = result.by_id("secret.twilio.auth_token")[0]
    assert status == "WARN" and "config file" in message
    assert fix is not None and "voicecall secrets set twilio.auth_token" in fix
    assert result.status("exposure") == "OK"
    assert result.by_id("provider.api")[0][:2] == ("OK", "not checked (--offline)")
    assert TOKEN not in result.stdout + result.stderr


def test_secret_from_env_and_from_keyring_say_where(home: Path, tmp_path: Path) -> None:
    """The source of each secret is named: environment variable, or the OS keyring."""
    write(
        home,
        twilio_config(
            "https://api.twilio.com",
            free_port(),
            token_in_file=False,
            extra='public_url = "https://voice.example.com/voice/webhook"',
        ),
    )
    env = {**base_env(home), "TWILIO_AUTH_TOKEN": TOKEN}
    result = doctor(home, "--offline", env=env)
    assert result.by_id("secret.twilio.auth_token")[0][:2] == (
        "OK",
        "set from the environment (TWILIO_AUTH_TOKEN)",
    )

    (tmp_path / "testkr.py").write_text(KEYRING_BACKEND)
    (tmp_path / "kr.json").write_text(json.dumps({"voicecall/twilio.auth_token": TOKEN}))
    env = base_env(home)
    del env["VOICECALL_NO_KEYRING"]
    env.update(
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]),
        PYTHON_KEYRING_BACKEND="testkr.JsonKeyring",
        TEST_KEYRING_FILE=str(tmp_path / "kr.json"),
    )
    result = doctor(home, "--offline", env=env)
    assert result.code == 0, result.stdout
    assert result.status("secrets.backend") == "OK"
    assert "testkr.JsonKeyring" in result.by_id("secrets.backend")[0][1]
    assert result.by_id("secret.twilio.auth_token")[0][:2] == ("OK", "set in the OS keyring")
    assert TOKEN not in result.stdout + result.stderr


def test_unusable_keyring_is_a_warning(home: Path) -> None:
    """The `fail` keyring backend is reported with the way out; not a failure by itself."""
    env = base_env(home)
    del env["VOICECALL_NO_KEYRING"]
    write(home, f"[serve]\nport = {free_port()}\n")
    result = doctor(home, env=env)
    status, message, fix = result.by_id("secrets.backend")[0]
    assert status == "WARN" and "no usable keyring" in message
    assert fix is not None and "voicecall secrets backend" in fix
    assert result.code == 0


def test_twilio_without_public_url_fails_naming_the_three_ways(home: Path) -> None:
    """A real provider on a local-only webhook: FAIL naming public_url, ngrok and funnel."""
    write(
        home,
        twilio_config("https://api.twilio.com", free_port(), extra="[streaming]\nenabled = true"),
    )
    result = doctor(home, "--offline")
    assert result.code == 1
    status, message, fix = result.by_id("exposure")[0]
    assert status == "FAIL" and "local-only" in message
    assert fix is not None
    for way in ("public_url", 'provider = "ngrok"', 'mode = "funnel"'):
        assert way in fix
    assert result.status("exposure.stream") == "FAIL"
    # reported once, by the exposure check, not again as a config problem
    assert all("webhook URL" not in m for _, m, _ in result.by_id("config"))


def test_public_url_derives_the_stream_url(home: Path) -> None:
    """With public_url and streaming, the wss stream URL is derived from it."""
    write(
        home,
        twilio_config(
            "https://api.twilio.com",
            free_port(),
            extra='public_url = "https://voice.example.com/voice/webhook"\n'
            "[streaming]\nenabled = true",
        ),
    )
    result = doctor(home, "--offline")
    status, message, _ = result.by_id("exposure.stream")[0]
    assert status == "OK" and "wss://voice.example.com/voice/stream" in message


async def test_twilio_credentials_accepted(home: Path, twilio_api: FakeTwilio) -> None:
    """The SDK's Account fetch goes to twilio.api_base_url; a 200 is OK."""
    write(home, twilio_config(twilio_api.url, free_port()))
    result = await adoctor(home)
    assert result.code == 0, result.stdout + result.stderr
    status, message, _ = result.by_id("provider.api")[0]
    assert status == "OK" and "credentials accepted" in message and SID in message
    assert twilio_api.seen == [
        {"path": f"/2010-04-01/Accounts/{SID}.json", "user": SID, "password": TOKEN}
    ]
    assert result.status("exposure") == "OK"  # a local API (simulator) may use a local webhook


async def test_twilio_credentials_rejected(home: Path, twilio_api: FakeTwilio) -> None:
    """A 401 from the Account fetch: FAIL credentials rejected; exit 1."""
    twilio_api.status = 401
    write(home, twilio_config(twilio_api.url, free_port()))
    result = await adoctor(home)
    assert result.code == 1
    status, message, fix = result.by_id("provider.api")[0]
    assert status == "FAIL" and "credentials rejected" in message
    assert fix is not None and "voicecall secrets set twilio.auth_token" in fix
    assert TOKEN not in result.stdout + result.stderr


def test_unreachable_provider_api(home: Path) -> None:
    """Nothing listening at api_base_url: FAIL unreachable."""
    write(home, twilio_config(f"http://127.0.0.1:{free_port()}", free_port()))
    result = doctor(home)
    assert result.code == 1
    status, message, _ = result.by_id("provider.api")[0]
    assert status == "FAIL" and "unreachable" in message


def test_port_in_use_by_another_socket_fails(home: Path) -> None:
    """serve.port held by someone else: FAIL naming the address, with a fix."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        write(home, f"[serve]\nport = {port}\n")
        result = doctor(home)
    assert result.code == 1
    status, message, fix = result.by_id("port")[0]
    assert status == "FAIL" and f"127.0.0.1:{port} is in use" in message
    assert fix is not None and "serve.port" in fix


def test_running_daemon_owns_its_port(make_daemon: Callable[..., DaemonHarness]) -> None:
    """With the daemon up, its own port is fine and its state is reported."""
    port = free_port()
    daemon = make_daemon(f"[serve]\nport = {port}\n[mock]\nanswer_delay_ms = 30\n")
    result = doctor(daemon.home, env=base_env(daemon.home))
    assert result.code == 0, result.stdout
    assert result.status("daemon") == "OK"
    assert "running (pid" in result.by_id("daemon")[0][1]
    status, message, _ = result.by_id("port")[0]
    assert status == "OK" and "running daemon" in message


def tailscale_env(home: Path, log: Path, **extra: str) -> dict[str, str]:
    env = base_env(home)
    env.update(
        PATH=os.pathsep.join([str(ROOT / "tests" / "fakes"), env.get("PATH", "")]),
        FAKE_TAILSCALE_LOG=str(log),
        **extra,
    )
    return env


def test_tailscale_funnel_publishes_webhook_and_stream(home: Path, tmp_path: Path) -> None:
    """Funnel: both URLs on the node's DNS name; doctor only reads `tailscale status`."""
    log = tmp_path / "ts.log"
    write(
        home,
        twilio_config(
            "https://api.twilio.com",
            free_port(),
            extra='[tailscale]\nmode = "funnel"\n[streaming]\nenabled = true',
        ),
    )
    result = doctor(home, "--offline", env=tailscale_env(home, log))
    assert result.code == 0, result.stdout
    assert result.by_id("exposure")[0][:2] == (
        "OK",
        "tailscale funnel publishes https://box.tail1234.ts.net/voice/webhook",
    )
    status, message, _ = result.by_id("exposure.stream")[0]
    assert status == "OK" and "wss://box.tail1234.ts.net/voice/stream" in message
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [["status", "--json"]], "doctor must not mount or unmount anything"


def test_tailscale_down_fails(home: Path, tmp_path: Path) -> None:
    """Funnel configured but tailscaled not running: FAIL with how to start it."""
    write(
        home,
        twilio_config("https://api.twilio.com", free_port(), extra='[tailscale]\nmode = "funnel"'),
    )
    env = tailscale_env(home, tmp_path / "ts.log", FAKE_TAILSCALE_DOWN="1")
    result = doctor(home, "--offline", env=env)
    assert result.code == 1
    status, message, fix = result.by_id("exposure")[0]
    assert status == "FAIL" and "tailscale" in message.lower()
    assert fix is not None and "tailscale up" in fix


# --- realtime mode --------------------------------------------------------------------------------


def _realtime_config(url: str, *, key: str | None, streaming: bool = True) -> str:
    key_line = f'api_key = "{key}"\n' if key else ""
    return (
        f"[streaming]\nenabled = {'true' if streaming else 'false'}\n"
        f'[realtime]\nenabled = true\nbase_url = "{url}"\n{key_line}'
    )


async def test_realtime_key_and_url_accepted_and_refused(home: Path) -> None:
    """With realtime on, doctor opens the model's websocket with the key: accepted is OK,
    refused is FAIL naming the status, and the key never appears in the output."""
    from tests.fakes.openai_realtime import API_KEY, FakeRealtime

    async with FakeRealtime() as model:
        write(home, _realtime_config(model.url, key=API_KEY))
        result = await adoctor(home)
        assert result.status("realtime.api") == "OK", result.stdout
        assert "accepts the key" in result.by_id("realtime.api")[0][1]
        assert result.status("secret.realtime.api_key") == "WARN"  # in the config file
        assert model.handshakes == 1

        write(home, _realtime_config(model.url, key="sk-wrong-realtime-key"))
        refused = await adoctor(home)
        assert refused.status("realtime.api") == "FAIL"
        assert "HTTP 401" in refused.by_id("realtime.api")[0][1]
        assert "sk-wrong-realtime-key" not in refused.stdout + refused.stderr


def test_realtime_needs_streaming_a_key_and_an_encrypted_url(home: Path) -> None:
    """Realtime without streaming, without a key for OpenAI, or over plain ws:// to a remote
    host each fail with the fix; --offline skips the network probe only."""
    write(home, _realtime_config("wss://api.openai.com/v1/realtime", key=None, streaming=False))
    result = doctor(home, "--offline")
    assert result.status("realtime.api") == "FAIL"
    assert result.by_id("realtime.api")[0][2] == "set streaming.enabled = true"
    assert result.status("secret.realtime.api_key") == "FAIL"

    write(home, _realtime_config("ws://models.example.com/v1/realtime", key="sk-x"))
    plain = doctor(home, "--offline")
    assert plain.status("realtime.api") == "FAIL"
    assert "unencrypted" in plain.by_id("realtime.api")[0][1]

    write(home, _realtime_config("wss://api.openai.com/v1/realtime", key="sk-x"))
    offline = doctor(home, "--offline")
    assert offline.status("realtime.api") == "OK"
    assert "not checked (--offline)" in offline.by_id("realtime.api")[0][1]
