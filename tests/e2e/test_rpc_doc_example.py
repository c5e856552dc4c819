"""docs/rpc.md stays true: its client example runs against a real daemon, and its tables cover
every method and error code the daemon has.

The example is extracted from the Markdown (the ```python block after the
`<!-- example: rpc-client` marker) and run as its own process, exactly as a reader would paste
it, with only `VOICECALL_SOCKET` pointing it at the test daemon.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.errors import RpcCode
from daemon.rpc import protocol
from tests.harness import REPO, DaemonHarness

pytestmark = pytest.mark.e2e

MakeDaemon = Callable[..., DaemonHarness]

DOC = REPO / "docs" / "rpc.md"
MARKER = "<!-- example: rpc-client"
CONFIG = """
[serve]
port = 0

[mock]
answer_delay_ms = 50

[outbound]
notify_hangup_delay_seconds = 0
"""


def example_code(doc: Path = DOC) -> str:
    """The client example: the first ```python block after the marker."""
    text = doc.read_text()
    start = text.index(MARKER)
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match is not None, f"no ```python block after {MARKER!r} in {doc}"
    return match.group(1)


def test_the_example_is_about_twenty_lines() -> None:
    """The doc promises a 20-line client; keep it that short (blank lines not counted)."""
    lines = [ln for ln in example_code().splitlines() if ln.strip()]
    assert 15 <= len(lines) <= 22, len(lines)


def test_the_example_places_a_call_and_prints_its_events(make_daemon: MakeDaemon) -> None:
    """Run the doc's client against a mock daemon: it prints the call, the tail reply, events."""
    d = make_daemon(CONFIG)
    done = subprocess.run(
        [sys.executable, "-c", example_code()],
        env={**d.env, "VOICECALL_SOCKET": str(d.socket)},
        cwd=d.home,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()

    first = re.fullmatch(r"call (\S+) to \+15550001234 mode notify", lines[0])
    assert first is not None, lines[0]
    call_id = first.group(1)
    tail_word, tail_json = lines[1].split(" ", 1)
    assert tail_word == "tail"
    tail = json.loads(tail_json)
    assert tail["subscribed"] is True and isinstance(tail["backlog"], int)

    events = [ln.split(" ", 2) for ln in lines[2:]]
    seqs = [int(seq) for seq, *_ in events]
    assert seqs == sorted(set(seqs)), "events repeated or out of order"
    types = [e[1] for e in events]
    assert types[0] == "call.initiated"
    assert "call.answered" in types
    assert ["call.speaking", "Your order has shipped."] in [e[1:] for e in events]
    assert events[-1][1:] == ["call.ended", "hangup-bot"]
    # The printed call is the daemon's, and it really ended.
    assert d.call_record(call_id)["state"] == "hangup-bot"


def test_the_method_table_lists_every_method() -> None:
    """Each method the daemon answers has a row and a section in docs/rpc.md."""
    text = DOC.read_text()
    for method in protocol.METHODS:
        assert f"| `{method}` |" in text, f"{method} missing from the method table"
        assert f"### `{method}`" in text, f"{method} has no section"


def test_the_error_table_lists_every_code() -> None:
    """Each JSON-RPC code of daemon.errors.RpcCode has a row in the error table."""
    text = DOC.read_text()
    codes = [v for k, v in vars(RpcCode).items() if k.isupper()]
    assert len(codes) == 12  # -32007 (store unavailable) included
    for code in codes:
        assert f"| {code} |" in text, f"error code {code} missing from docs/rpc.md"
