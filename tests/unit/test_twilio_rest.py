"""Twilio REST through the SDK against the simulator: create, 21220 retry, 404 tolerance, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from daemon.errors import ProviderAuthError, ProviderRequestError
from daemon.providers.twilio_rest import RETRY_DELAYS, TwilioRest
from tests.simulators.twilio import ACCOUNT_SID, AUTH_TOKEN, TwilioSimulator

TWIML = "<Response><Say>hi</Say></Response>"


@pytest.fixture
async def sim() -> AsyncIterator[TwilioSimulator]:
    """A running simulator whose calls ring but are answered only when a test says so."""
    async with TwilioSimulator() as simulator:
        simulator.auto_answer = False
        yield simulator


@pytest.fixture
async def rest(sim: TwilioSimulator) -> AsyncIterator[TwilioRest]:
    """A client aimed at the simulator, recording its retry sleeps instead of sleeping."""
    client = TwilioRest(ACCOUNT_SID, AUTH_TOKEN, api_base_url=sim.api_base_url, region="ie1")
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    client.sleep = sleep
    client.slept = slept  # type: ignore[attr-defined]
    yield client
    await client.close()


async def answered_call(sim: TwilioSimulator, rest: TwilioRest) -> str:
    sid = await rest.create_call(to="+15550001234", from_="+15550100000", twiml=TWIML)
    await sim.answer(sid)
    return sid


async def test_create_sends_repeated_status_callback_events(
    sim: TwilioSimulator, rest: TwilioRest
) -> None:
    """The SDK's request reaches `api_base_url` (not api.twilio.com, region ignored) with
    Basic auth and StatusCallbackEvent as four repeated values."""
    sid = await rest.create_call(
        to="+15550001234",
        from_="+15550100000",
        url="https://h/voice/webhook?callId=c",
        status_callback="https://h/voice/webhook?callId=c&type=status",
        status_callback_event=["initiated", "ringing", "answered", "completed"],
        timeout=30,
    )
    assert sid.startswith("CA") and len(sid) == 34
    (create,) = sim.creates
    assert create.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"
    assert create.values("StatusCallbackEvent") == ["initiated", "ringing", "answered", "completed"]
    assert create.get("Timeout") == "30"


async def test_live_update_retries_21220_twice(sim: TwilioSimulator, rest: TwilioRest) -> None:
    """Error 21220 (not in progress yet) is retried after 250 ms and 750 ms."""
    sid = await answered_call(sim, rest)
    sim.fail_updates_21220 = 2
    await rest.update_twiml(sid, TWIML)
    assert rest.slept == list(RETRY_DELAYS)  # type: ignore[attr-defined]
    assert len(sim.recorded("POST", f"/Calls/{sid}.json")) == 3


async def test_live_update_gives_up_after_three_21220(
    sim: TwilioSimulator, rest: TwilioRest
) -> None:
    """A third 21220 is an error naming the HTTP status and the Twilio code."""
    sid = await answered_call(sim, rest)
    sim.fail_updates_21220 = 3
    with pytest.raises(ProviderRequestError) as info:
        await rest.update_twiml(sid, TWIML)
    assert "HTTP 400" in info.value.message and "21220" in info.value.message
    assert info.value.details["code"] == 21220


async def test_other_update_errors_are_not_retried(sim: TwilioSimulator, rest: TwilioRest) -> None:
    """404/20404 on a live update fails at once."""
    with pytest.raises(ProviderRequestError) as info:
        await rest.update_twiml("CA" + "0" * 32, TWIML)
    assert info.value.details == {"status": 404, "code": 20404}
    assert rest.slept == []  # type: ignore[attr-defined]


async def test_hang_up_tolerates_404(sim: TwilioSimulator, rest: TwilioRest) -> None:
    """Hanging up a call Twilio no longer knows (404/20404) is not an error."""
    assert await rest.hang_up("CA" + "0" * 32) is False
    sid = await answered_call(sim, rest)
    assert await rest.hang_up(sid) is True
    assert sim.recorded("POST", f"/Calls/{sid}.json")[-1].get("Status") == "completed"


async def test_fetch_status(sim: TwilioSimulator, rest: TwilioRest) -> None:
    """fetch: the call's status; None for 404; a 500 raises."""
    sid = await answered_call(sim, rest)
    assert await rest.fetch_status(sid) == "in-progress"
    assert await rest.fetch_status("CA" + "0" * 32) is None
    sim.fetch_error = 500
    with pytest.raises(ProviderRequestError):
        await rest.fetch_status(sid)


async def test_bad_credentials_are_an_auth_error_without_the_token(sim: TwilioSimulator) -> None:
    """401/20003 becomes ProviderAuthError; the message never contains the token."""
    wrong = "f" * 32
    client = TwilioRest(ACCOUNT_SID, wrong, api_base_url=sim.api_base_url, region=None)
    try:
        with pytest.raises(ProviderAuthError) as info:
            await client.create_call(to="+15550001234", from_="+15550100000", twiml=TWIML)
    finally:
        await client.close()
    assert "HTTP 401" in info.value.message and "20003" in info.value.message
    assert wrong not in info.value.message and AUTH_TOKEN not in info.value.message


async def test_unreachable_api_names_the_base_url() -> None:
    """A connection failure is a ProviderRequestError pointing at twilio.api_base_url."""
    client = TwilioRest(ACCOUNT_SID, AUTH_TOKEN, api_base_url="http://127.0.0.1:9", region=None)
    try:
        with pytest.raises(ProviderRequestError) as info:
            await client.fetch_status("CA" + "0" * 32)
    finally:
        await client.close()
    assert "twilio.api_base_url (http://127.0.0.1:9)" in info.value.message


def test_region_selects_the_regional_edge_only_for_the_real_api() -> None:
    """`region = "ie1"` goes to api.dublin.ie1.twilio.com; a local base URL is left alone."""
    real = TwilioRest(ACCOUNT_SID, AUTH_TOKEN, api_base_url="https://api.twilio.com", region="ie1")
    assert real.client.get_hostname("https://api.twilio.com/2010-04-01") == (
        "https://api.dublin.ie1.twilio.com/2010-04-01"
    )
    local = TwilioRest(ACCOUNT_SID, AUTH_TOKEN, api_base_url="http://127.0.0.1:1234", region="ie1")
    assert local.client.region is None and local.client.api.base_url == "http://127.0.0.1:1234"
