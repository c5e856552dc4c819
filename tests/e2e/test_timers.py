"""Timers: max duration from answer, the stale-call reaper, mock outcomes."""

from __future__ import annotations

import pytest

from tests.harness import FAST_MOCK

pytestmark = pytest.mark.e2e


def test_max_duration_ends_the_call(make_daemon) -> None:
    """A call answered longer than max_duration_seconds ends in state timeout."""
    d = make_daemon("max_duration_seconds = 1\n" + FAST_MOCK)
    call_id = d.rpc(
        "voicecall.initiate", {"message": "hi", "to": "+15550001234", "mode": "conversation"}
    )["callId"]
    call = d.wait_state(call_id, "timeout", timeout=10)
    assert call["endReason"] == "timeout"


def test_stale_call_reaper_ends_unanswered_calls(make_daemon) -> None:
    """A call that never gets answered is reaped after stale_call_reaper_seconds."""
    d = make_daemon(
        "stale_call_reaper_seconds = 1\n[serve]\nport = 0\n[mock]\nanswer_delay_ms = 600000\n"
    )
    call_id = d.rpc("voicecall.initiate", {"message": "hi", "to": "+15550001234"})["callId"]
    d.wait_state(call_id, "ringing")
    assert d.wait_state(call_id, "timeout", timeout=10)["answeredAt"] is None


@pytest.mark.parametrize("outcome", ["busy", "no-answer", "failed"])
def test_mock_outcomes(make_daemon, outcome: str) -> None:
    """mock.outcome decides how an outbound call ends."""
    d = make_daemon(FAST_MOCK + f'outcome = "{outcome}"\n')
    call_id = d.rpc("voicecall.initiate", {"message": "hi", "to": "+15550001234"})["callId"]
    assert d.wait_state(call_id, outcome)["answeredAt"] is None
