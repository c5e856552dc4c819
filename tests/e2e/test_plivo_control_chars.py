"""Plivo XML rendering under realistic message text (SPEC sections 6, 10)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.configs import plivo_config
from tests.harness import DaemonHarness, query
from tests.harness import rpc_async as rpc
from tests.harness import start_async as start
from tests.harness import until_state_async as until_state
from tests.simulators.plivo import PlivoSimulator

pytestmark = pytest.mark.e2e
SIMULATOR = PlivoSimulator  # the shared `sim` fixture runs it (tests/conftest.py)


def _config(sim: PlivoSimulator) -> str:
    return plivo_config(sim, hangup_delay=0)


async def test_plivo_notify_message_with_a_control_character_is_still_spoken(
    sim: PlivoSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """A message with a stray control character (a form feed pasted from a document, an LLM's
    \\x0b) makes lxml refuse the <Speak> text: the answer webhook answers HTTP 500, Plivo ends
    the call with an XML fetch error, and the person never hears the message, although
    `voicecall call` reported success."""
    d = await start(make_daemon, _config(sim))
    result = await rpc(
        d,
        "voicecall.initiate",
        {"message": "Your table\x0cis ready", "to": "+15550001234", "mode": "notify"},
    )
    call_id = result["callId"]
    record = await until_state(
        d, call_id, "hangup-bot", "completed", "hangup-user", "failed", "error"
    )
    answers = [dl for dl in sim.deliveries if query(dl.url).get("flow") == "answer"]
    assert answers and answers[0].status == 200, (
        f"answer webhook got HTTP {answers[0].status if answers else None}; "
        f"call ended {record['state']}, spoken={sim.only_call().spoken}"
    )
    assert record["state"] == "hangup-bot"
