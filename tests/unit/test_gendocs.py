"""Generated completions and man pages: freshness, determinism, roff output, and call-id
completion against a stand-in daemon socket."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from voicecall_cli import gendocs
from voicecall_cli.completion import complete_call_id, completion_source
from voicecall_cli.main import cli

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_committed_files_are_fresh() -> None:
    """completions/ and man/ match the Click tree; regenerate with the command in the message."""
    done = run("-m", "voicecall_cli.gendocs", "--check")
    assert done.returncode == 0, done.stderr


def test_check_lists_stale_and_leftover_files(tmp_path: Path) -> None:
    """--check exits 1 naming changed, missing and no-longer-generated files; a run fixes them."""
    assert gendocs.main(["--output-dir", str(tmp_path)]) == 0
    assert gendocs.main(["--output-dir", str(tmp_path), "--check"]) == 0
    (tmp_path / "man" / "voicecall-secrets-set.1").write_text("edited by hand\n")
    (tmp_path / "man" / "voicecall-removed.1").write_text("old page\n")
    (tmp_path / "completions" / "voicecall.fish").unlink()
    done = run("-m", "voicecall_cli.gendocs", "--check", "--output-dir", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.splitlines()[:3] == [
        "stale: completions/voicecall.fish",
        "stale: man/voicecall-removed.1",
        "stale: man/voicecall-secrets-set.1",
    ]
    assert gendocs.main(["--output-dir", str(tmp_path)]) == 0
    assert not (tmp_path / "man" / "voicecall-removed.1").exists()
    assert gendocs.main(["--output-dir", str(tmp_path), "--check"]) == 0


def test_render_is_deterministic() -> None:
    """Two renders are identical and cover every visible command."""
    first = gendocs.render(cli, "1.2.3")
    assert first == gendocs.render(cli, "1.2.3")
    assert {
        "man/voicecall.1",
        "man/voicecall-secrets-set.1",
        "man/voicecall-service-install.1",
        "man/voicecall-completion.1",
        "completions/voicecall.bash",
        "completions/voicecall.zsh",
        "completions/voicecall.fish",
    } <= set(first)


def test_page_sections() -> None:
    """Every page has the required sections and lists every exit status."""
    page = gendocs.render(cli, "1.2.3")["man/voicecall-secrets-set.1"]
    headings = [ln for ln in page.splitlines() if ln.startswith(".SH ")]
    assert headings[:4] == [".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH ARGUMENTS"]
    for section in ("OPTIONS", "EXIT STATUS", "ENVIRONMENT", "FILES", "SEE ALSO"):
        assert f".SH {section}" in headings
    for code in ("0", "1", "2", "3", "130"):
        assert f"\\fB{code}\\fR" in page
    assert "\\fBTWILIO_AUTH_TOKEN\\fR" in page
    assert "voicecall\\-secrets(1)" in page


def test_roff_escaping() -> None:
    """Backslashes, hyphens and leading dots cannot be read as roff requests."""
    assert gendocs.escape("a\\b --x\n.hidden\n'quote") == "a\\eb \\-\\-x\n\\&.hidden\n\\&'quote"
    roff = gendocs.help_to_roff("Do it\n  now.\n\n\b\nExamples:\n  $ voicecall x\n\f\nhidden")
    assert roff == [".PP", "Do it now.", ".PP", ".nf", "Examples:", "  $ voicecall x", ".fi"]


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
def test_pages_render_without_warnings() -> None:
    """groff formats the root page without warnings."""
    page = gendocs.render(cli, "1.2.3")["man/voicecall.1"]
    done = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z"],
        input=page,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert done.stderr == ""


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_command_prints_the_script(shell: str) -> None:
    """`voicecall completion SHELL` prints the same script as the shipped file."""
    done = run("-m", "voicecall_cli", "completion", shell)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (ROOT / "completions" / f"voicecall.{shell}").read_text()
    assert "_VOICECALL_COMPLETE" in done.stdout
    assert done.stdout == completion_source(cli, shell)


def test_completion_rejects_unknown_shell() -> None:
    """Only bash, zsh and fish are offered."""
    done = run("-m", "voicecall_cli", "completion", "tcsh")
    assert done.returncode == 2


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short folder for Unix sockets (tmp_path can exceed the 108-byte limit)."""
    folder = Path(tempfile.mkdtemp(prefix="vc-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def serve_once(path: Path, answer: dict[str, Any] | None, delay: float = 0.0) -> threading.Thread:
    """Answer one JSON-RPC request on a Unix socket (the daemon's framing), optionally late."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def handle() -> None:
        with server:
            conn, _ = server.accept()
            with conn, conn.makefile("rb") as reader:
                request = json.loads(reader.readline())
                assert request["method"] == "voicecall.list"
                time.sleep(delay)
                reply = {"jsonrpc": "2.0", "id": request["id"], "result": answer}
                try:
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                except OSError:
                    pass  # the client gave up, as it should

    thread = threading.Thread(target=handle, daemon=True)
    thread.start()
    return thread


def completion_ctx(socket_path: Path) -> click.Context:
    ctx = click.Context(cli, info_name="voicecall")
    ctx.params = {"socket": str(socket_path)}
    return ctx


CALLS = {
    "calls": [
        {"callId": "c-abc1", "state": "active", "direction": "outbound", "to": "+15550001111"},
        {"callId": "c-abc2", "state": "completed", "direction": "inbound", "from": "+15550002222"},
        {"callId": "d-xyz", "state": "ringing", "direction": "outbound", "to": "+15550003333"},
    ]
}


def test_call_ids_complete_from_the_daemon(sock_dir: Path) -> None:
    """Ids matching the typed prefix come back with their state and peer as help."""
    path = sock_dir / "d.sock"
    thread = serve_once(path, CALLS)
    items = complete_call_id(completion_ctx(path), click.Option(["--call-id"]), "c-")
    thread.join(5)
    assert [(i.value, i.help) for i in items] == [
        ("c-abc1", "active +15550001111"),
        ("c-abc2", "completed +15550002222"),
    ]


def test_call_id_completion_is_silent_without_daemon(sock_dir: Path) -> None:
    """No daemon: nothing, no error, and no daemon started."""
    path = sock_dir / "none.sock"
    assert complete_call_id(completion_ctx(path), click.Option(["--call-id"]), "") == []
    assert not path.exists()


def test_call_id_completion_gives_up_after_a_second(sock_dir: Path) -> None:
    """A daemon that does not answer within 1 s yields nothing, quickly."""
    path = sock_dir / "slow.sock"
    thread = serve_once(path, CALLS, delay=3.0)
    started = time.monotonic()
    assert complete_call_id(completion_ctx(path), click.Option(["--call-id"]), "") == []
    assert time.monotonic() - started < 2.5
    thread.join(5)


def test_call_id_completion_ignores_bad_answers(sock_dir: Path) -> None:
    """An unexpected result shape yields nothing rather than a traceback."""
    path = sock_dir / "odd.sock"
    thread = serve_once(path, None)
    assert complete_call_id(completion_ctx(path), click.Option(["--call-id"]), "") == []
    thread.join(5)
