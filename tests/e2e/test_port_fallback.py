"""SPEC section 2: a busy default port falls back with the mock provider, and only there.

The README's first commands are run as written (with `voicecall` as a shell function for this
worktree's entry point) on a machine where port 3334 is taken.
"""

from __future__ import annotations

import errno
import re
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.harness import REPO, DaemonHarness, wait_for

pytestmark = pytest.mark.e2e

DEFAULT_PORT = 3334


@pytest.fixture
def port_3334_taken() -> Iterator[None]:
    """Hold 127.0.0.1:3334 (if something else already does, it is just as taken)."""
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", DEFAULT_PORT))
        holder.listen(1)
    except OSError as exc:
        assert exc.errno == errno.EADDRINUSE
    try:
        yield
    finally:
        holder.close()


def _readme_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), re.S)


def _sh(d: DaemonHarness, script: str) -> subprocess.CompletedProcess[str]:
    prelude = 'voicecall() { "$PY" -m voicecall_cli "$@"; }\nset -e\n'
    return subprocess.run(
        ["sh", "-c", prelude + script],
        env={**d.env, "PY": sys.executable},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_mock_without_serve_port_falls_back_to_a_free_port(make_daemon, port_3334_taken) -> None:
    """No config at all, 3334 busy: the daemon starts on another port and logs why."""
    d = make_daemon(None)
    status = d.rpc("daemon.status")
    port = int(status["webhookUrl"].split(":")[2].split("/")[0])
    assert port not in (0, DEFAULT_PORT)
    assert "port 3334 on 127.0.0.1 is busy" in d.log_text()
    assert f"listens on port {port} instead" in d.log_text()


def test_an_explicit_serve_port_stays_an_error(make_daemon, port_3334_taken) -> None:
    """`serve.port = 3334` written in the file: busy is an error, even for the mock."""
    d = make_daemon("[serve]\nport = 3334\n", start=False)
    d.start(expect_ready=False)
    assert d.proc is not None
    assert d.proc.wait(30) == 78
    assert "cannot listen on 127.0.0.1:3334" in d.log_text()


def test_a_real_provider_keeps_a_busy_default_port_an_error(make_daemon, port_3334_taken) -> None:
    """Twilio (against a local simulator URL, so no public URL is needed): still an error."""
    d = make_daemon(
        'provider = "twilio"\nfrom_number = "+15550009999"\n[twilio]\n'
        'account_sid = "AC00000000000000000000000000000000"\n'
        'auth_token = "0123456789abcdef0123456789abcdef"\n'
        'api_base_url = "http://127.0.0.1:9"\n',
        start=False,
    )
    d.start(expect_ready=False)
    assert d.proc is not None
    assert d.proc.wait(30) == 78
    assert "cannot listen on 127.0.0.1:3334" in d.log_text()


def test_readme_first_commands_work_with_3334_taken(make_daemon, port_3334_taken) -> None:
    """The README's install-and-call line and its conversation block, as written."""
    d = make_daemon(None, start=False)
    first = _readme_blocks()[0]
    call_line = first.split("&&", 1)[1].strip()  # after `pip install -e .`
    done = _sh(d, call_line)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"[0-9a-f-]{36}\n", done.stdout), done.stdout
    using = next(b for b in _readme_blocks() if "mock.replies" in b)
    done = _sh(d, using)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert "Yes, Tuesday works." in out
    assert any(
        ln.split() == ["id", "direction", "from", "to", "state", "started", "duration"]
        for ln in out
    )  # the `calls` header row
    wait_for(lambda: d.socket.exists(), message="the autostarted daemon")
