"""Small things a daily user meets: suggestions, messages from files, one TOML error message."""

from __future__ import annotations

import pytest

from tests.harness import FAST_MOCK, DaemonHarness

pytestmark = pytest.mark.e2e

DUPLICATE_TABLE = '[serve]\nport = 0\n\n[serve]\nbind = "127.0.0.1"\n'


def test_a_mistyped_top_level_command_gets_a_suggestion(make_daemon) -> None:
    """`voicecall stauts` suggests `status`, as `daemon stauts` and `--too` already did."""
    d = make_daemon(None, start=False)
    done = d.cli("stauts")
    assert done.returncode == 2
    assert "No such command 'stauts'. Did you mean 'status'?" in done.stderr
    assert not d.socket.exists()  # a usage error starts nothing


def test_message_from_stdin_and_from_a_file(make_daemon) -> None:
    """`-m -` reads stdin, `-m @FILE` a file, `-m @@x` says "@x"; a missing file is an error."""
    d: DaemonHarness = make_daemon(FAST_MOCK + 'replies = ["Fine."]\n')
    (d.home / "msg.txt").write_text("Hello from a file.\n")
    from_file = d.cli(
        "call", "--to", "+15550001234", "-m", f"@{d.home / 'msg.txt'}", "--mode", "conversation"
    )
    assert from_file.returncode == 0, from_file.stderr
    call_id = from_file.stdout.strip()
    d.wait_state(call_id, "speaking", "active", "answered")
    piped = d.cli("continue", "--call-id", call_id, "-m", "-", input="How are you?\n")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.strip() == "Fine."
    literal = d.cli("speak", "--call-id", call_id, "-m", "@@home")
    assert literal.returncode == 0, literal.stderr
    said = [t["text"] for t in d.call_record(call_id)["transcript"] if t["speaker"] == "bot"]
    assert said == ["Hello from a file.", "How are you?", "@home"]
    missing = d.cli("speak", "--call-id", call_id, "-m", "@/nonexistent/file.txt")
    assert missing.returncode == 1
    assert "no file '/nonexistent/file.txt'" in missing.stderr and "@@" in missing.stderr
    empty = d.cli("speak", "--call-id", call_id, "-m", "-", input="  \n")
    assert empty.returncode == 2
    assert "nothing to say" in empty.stderr


def test_a_toml_syntax_error_reads_the_same_in_validate_set_and_unset(make_daemon) -> None:
    """One message, with line and column and the line itself, from every command."""
    d = make_daemon(None, start=False)
    d.write_config(DUPLICATE_TABLE)
    messages = set()
    for args in (("validate",), ("set", "serve.port", "5"), ("unset", "serve.port")):
        done = d.cli("config", *args)
        assert done.returncode == 1, done
        messages.add(done.stderr)
    assert len(messages) == 1, messages
    message = messages.pop()
    assert message.startswith(
        f"Error: {d.home / 'config.toml'} is not valid TOML at line 4, "
        "column 7 (`[serve]`): the table [serve] is declared twice"
    )
    assert "Cannot declare" not in message and "('serve',)" not in message
    assert (d.home / "config.toml").read_text() == DUPLICATE_TABLE
