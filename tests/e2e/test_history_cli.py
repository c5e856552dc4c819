"""`voicecall calls` (history, show, export) and `voicecall mock inbound`, end to end."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from tests.harness import FAST_MOCK, DaemonHarness, wait_for
from tests.sqlite_rows import stored_form

pytestmark = pytest.mark.e2e

NOTIFY_FAST = (
    FAST_MOCK + 'replies = ["Tuesday works."]\n[outbound]\nnotify_hangup_delay_seconds = 0\n'
)


def _place(d: DaemonHarness, to: str, mode: str = "notify") -> str:
    done = d.cli("call", "--to", to, "-m", f"Hello {to}", "--mode", mode)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_calls_lists_newest_first_with_a_header_and_filters(make_daemon) -> None:
    """The table has the SPEC header; --active, --limit and --since filter; --json is a doc."""
    d = make_daemon(NOTIFY_FAST)
    first = _place(d, "+15550000001")
    d.wait_state(first, "hangup-bot")
    second = _place(d, "+15550000002")
    d.wait_state(second, "hangup-bot")
    live = _place(d, "+15550000003", "conversation")
    d.wait_state(live, "speaking", "active", "answered")

    done = d.cli("calls")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["id", "direction", "from", "to", "state", "started", "duration"]
    assert [ln.split()[0] for ln in lines[1:]] == [live, second, first]
    row = lines[2].split()
    assert row[1:5] == ["outbound", "+15550000000", "+15550000002", "hangup-bot"]
    assert row[-1].endswith("s")  # answered, so a talk time such as 0s

    active = d.cli("calls", "--active").stdout.splitlines()
    assert [ln.split()[0] for ln in active[1:]] == [live]
    assert [ln.split()[0] for ln in d.cli("calls", "--limit", "1").stdout.splitlines()[1:]] == [
        live
    ]

    started = d.call_record(second)["startedAt"]
    since = d.cli_json("calls", "--since", started)
    assert [c["callId"] for c in since["calls"]] == [live, second]
    # the same moment written in another zone, and a zone-less date-time read as UTC
    moment = datetime.fromisoformat(started.replace("Z", "+00:00"))
    shifted = moment.astimezone(timezone(timedelta(hours=2))).isoformat()
    assert [c["callId"] for c in d.cli_json("calls", "--since", shifted)["calls"]] == [live, second]
    naive = moment.replace(tzinfo=None).isoformat(timespec="milliseconds")
    assert [c["callId"] for c in d.cli_json("calls", "--since", naive)["calls"]] == [live, second]
    assert len(d.cli_json("calls", "--since", "2000-01-01")["calls"]) == 3
    tomorrow = (moment + timedelta(days=1)).date().isoformat()
    empty = d.cli("calls", "--since", tomorrow)
    assert empty.returncode == 0 and empty.stdout == ""
    assert "No calls since" in empty.stderr

    bad = d.cli("calls", "--since", "last tuesday")
    assert bad.returncode == 2
    assert "is not an ISO 8601 date" in bad.stderr


def test_calls_show_and_export(make_daemon) -> None:
    """`show` prints the transcript; `export` gives the record as JSON or the text."""
    d = make_daemon(NOTIFY_FAST)
    call_id = _place(d, "+15550000009", "conversation")
    d.wait_state(call_id, "speaking", "active", "answered")
    assert d.cli("continue", "--call-id", call_id, "-m", "Does Tuesday work?").returncode == 0
    d.cli("end", "--call-id", call_id)

    shown = d.cli("calls", "show", call_id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"call {call_id}  outbound conversation")
    assert [ln.split("  ", 1)[1] for ln in lines[2:]] == [
        "bot : Hello +15550000009",
        "bot : Does Tuesday work?",
        "user: Tuesday works.",
    ]

    exported = d.cli("calls", "export", call_id, "--format", "json")
    assert exported.returncode == 0
    record = json.loads(exported.stdout)
    assert record == d.call_record(call_id)
    text = d.cli("calls", "export", call_id, "--format", "txt")
    assert text.stdout == shown.stdout

    # Each line is stored once, apart from the snapshot, and the history reads the same after
    # the daemon starts again.
    snapshot, lines = stored_form(d.home / "state" / "voicecall.db", call_id)
    assert "Tuesday" not in snapshot
    assert [json.loads(line)["text"] for line in lines] == [
        "Hello +15550000009",
        "Does Tuesday work?",
        "Tuesday works.",
    ]
    d.stop()
    d.start()
    assert d.cli("calls", "show", call_id).stdout == shown.stdout

    missing = d.cli("calls", "show", "no-such-call")
    assert missing.returncode == 1
    assert "no call with id 'no-such-call'" in missing.stderr


def test_mock_inbound_goes_through_the_policy(make_daemon) -> None:
    """An allow-listed caller is answered and heard; another number is rejected."""
    d = make_daemon(
        'inbound_policy = "allowlist"\nallow_from = ["+15550001111"]\n'
        'inbound_greeting = "Shop, hello!"\n' + FAST_MOCK
    )
    accepted = d.cli_json("mock", "inbound", "--from", "+15550001111", "--say", "Are you open?")
    assert accepted["accepted"] is True
    call = d.wait_state(accepted["callId"], "listening", "active", "speaking")
    assert call["direction"] == "inbound" and call["from"] == "+15550001111"

    def heard() -> bool:
        texts = [t["text"] for t in d.call_record(accepted["callId"])["transcript"]]
        return texts[:2] == ["Shop, hello!", "Are you open?"]

    wait_for(heard, 15, message="the greeting and the caller's turn")
    rejected = d.cli("mock", "inbound", "--from", "+15550002222")
    assert rejected.returncode == 0, rejected.stderr
    assert "rejected by inbound_policy" in rejected.stdout
    call_id = rejected.stdout.split()[2]
    assert d.call_record(call_id)["state"] == "hangup-bot"
