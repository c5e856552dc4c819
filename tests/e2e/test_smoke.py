"""`voicecall smoke` against the Twilio simulator: the real CLI, daemon and signed callbacks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from twilio.request_validator import RequestValidator

from tests.configs import twilio_config
from tests.harness import DaemonHarness
from tests.harness import start_async as start
from tests.simulators.twilio import AUTH_TOKEN, TwilioSimulator

pytestmark = pytest.mark.e2e
SIMULATOR = TwilioSimulator  # the shared `sim` fixture runs it (tests/conftest.py)

TO = "+15550001234"
SETUP_STEPS = ["config", "provider", "secrets", "provider.api", "daemon", "webhook"]


def config(sim: TwilioSimulator, token: str = AUTH_TOKEN) -> str:
    """Twilio against the local simulator (whose local API lets the local webhook URL be used)."""
    return twilio_config(sim, auth_token=token, hangup_delay=0)


async def smoke(d: DaemonHarness, *args: str) -> tuple[int, dict[str, Any], str]:
    """Run `voicecall smoke --json`; (exit status, document, stderr)."""
    done = await asyncio.to_thread(d.cli, "smoke", "--to", TO, *args, "--json", timeout=120)
    return done.returncode, json.loads(done.stdout), done.stderr


def steps(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s["id"], s["status"]) for s in document["steps"]]


async def test_dry_run_checks_everything_and_places_no_call(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """Every setup step passes and the call is skipped: the simulator saw no create."""
    d = await start(make_daemon, config(sim))
    code, doc, stderr = await smoke(d)
    assert code == 0, (doc, stderr)
    assert steps(doc) == [(s, "OK") for s in SETUP_STEPS] + [("call", "SKIP")]
    assert doc["dryRun"] is True and doc["callId"] is None
    assert "credentials accepted" in doc["steps"][3]["message"]
    assert "refuses unsigned requests (401)" in doc["steps"][5]["message"]
    assert sim.creates == []
    human = await asyncio.to_thread(d.cli, "smoke", "--to", TO)
    assert human.returncode == 0
    lines = human.stdout.splitlines()
    assert [ln.split()[1].rstrip(":") for ln in lines] == [*SETUP_STEPS, "call"]
    assert lines[-1].startswith("SKIP call: dry run: no call placed")
    assert AUTH_TOKEN not in human.stdout + human.stderr


async def test_yes_places_a_call_whose_signed_callbacks_verify_and_it_ends(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """--yes: one real create; answered via verified callbacks; the call ends hangup-bot."""
    d = await start(make_daemon, config(sim))
    code, doc, stderr = await smoke(d, "--yes")
    assert code == 0, (doc, stderr)
    assert steps(doc) == [(s, "OK") for s in SETUP_STEPS] + [
        ("call", "OK"),
        ("callbacks", "OK"),
        ("end", "OK"),
    ]
    assert len(sim.creates) == 1 and sim.creates[0].get("To") == TO
    assert "ringing" in doc["steps"][7]["message"] and "answered" in doc["steps"][7]["message"]
    record = await asyncio.to_thread(d.call_record, doc["callId"])
    assert record["state"] == "hangup-bot"
    status_deliveries = [dl for dl in sim.deliveries if dl.kind == "status"]
    assert status_deliveries and all(dl.status == 200 for dl in status_deliveries)


async def test_conversation_mode_hears_the_callee(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """--mode conversation: one turn of speech recognition, then the smoke test hangs up."""
    d = await start(make_daemon, config(sim))
    sim.say_next("Loud and clear.")
    code, doc, stderr = await smoke(d, "--mode", "conversation", "--yes")
    assert code == 0, (doc, stderr)
    assert ("speech", "OK") in steps(doc)
    assert "Loud and clear." in next(s["message"] for s in doc["steps"] if s["id"] == "speech")
    assert steps(doc)[-1] == ("end", "OK")


async def test_callbacks_that_fail_verification_are_the_failing_step(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """Callbacks signed with another token are refused: smoke fails there, with the fix."""
    d = await start(make_daemon, config(sim))
    sim.validator = RequestValidator("f" * 32)  # the carrier signs with a token we do not have
    code, doc, _ = await smoke(d, "--yes", "--timeout", "10")
    assert code == 1
    assert steps(doc)[-1] == ("callbacks", "FAIL")
    assert "public_url" in doc["steps"][-1]["fix"]
    assert [dl.status for dl in sim.deliveries if dl.kind == "status"][:1] == [401]


async def test_first_failure_stops_with_its_fix(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """Rejected credentials: FAIL at provider.api with the fix; no later step runs, no call."""
    d = make_daemon(config(sim, token="0" * 32), start=False)
    done = await asyncio.to_thread(d.cli, "smoke", "--to", TO, "--yes")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[-1].startswith("FAIL provider.api:") and "credentials rejected" in lines[-1]
    assert "voicecall secrets set twilio.auth_token" in lines[-1]
    assert len(lines) == 4
    assert sim.creates == []
    assert not d.socket.exists()  # it did not get as far as starting the daemon

    mock = make_daemon(None, start=False)
    refused = await asyncio.to_thread(mock.cli, "smoke", "--to", TO)
    assert refused.returncode == 1
    assert refused.stdout.splitlines()[-1].startswith("FAIL provider: provider = 'mock'")
