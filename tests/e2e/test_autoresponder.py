"""The LLM auto-responder answers inbound callers (against a local fake of the chat API)."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes.openai import API_KEY, FakeOpenAI
from tests.harness import FAST_MOCK, DaemonHarness, short_home, wait_for

pytestmark = pytest.mark.e2e


def _config(base_url: str) -> str:
    return (
        'inbound_policy = "open"\n'
        'inbound_greeting = "Hello, Acme clinic."\n'
        'response_model = "openai/gpt-4o-mini"\n'
        'response_system_prompt = "You are the Acme clinic receptionist."\n'
        "response_timeout_ms = 2000\n"
        + FAST_MOCK
        + f'[agent]\nbase_url = "{base_url}"\napi_key = "{API_KEY}"\n'
    )


async def test_inbound_caller_gets_model_replies() -> None:
    """Each final caller turn is answered with the model's reply, with the history sent."""
    async with FakeOpenAI() as fake:
        fake.chat_reply = "We open at nine."
        d = DaemonHarness(short_home(), _config(fake.base_url))
        d.env.pop("OPENAI_API_KEY", None)
        try:
            await asyncio.to_thread(d.start)
            started = await asyncio.to_thread(
                d.rpc,
                "mock.inbound",
                {"from": "+15550001111", "utterances": ["When do you open?", "Thanks!"]},
            )
            call_id = started["callId"]

            def transcript() -> list[tuple[str, str]]:
                call = d.call_record(call_id)
                return [(t["speaker"], t["text"]) for t in call["transcript"]]

            lines = await asyncio.to_thread(
                wait_for, lambda: len(t := transcript()) >= 5 and t, 10.0, 0.02, "replies"
            )
            assert lines[:5] == [
                ("bot", "Hello, Acme clinic."),
                ("user", "When do you open?"),
                ("bot", "We open at nine."),
                ("user", "Thanks!"),
                ("bot", "We open at nine."),
            ]
            first = fake.chat_requests[0]
            assert first["model"] == "gpt-4o-mini"
            assert first["messages"][0]["role"] == "system"
            assert "Acme clinic receptionist" in first["messages"][0]["content"]
            assert {"role": "user", "content": "When do you open?"} in first["messages"]
        finally:
            await asyncio.to_thread(d.cleanup)


async def test_model_failure_is_spoken_as_an_apology() -> None:
    """A failing model never leaves the caller in silence: a short apology is spoken."""
    async with FakeOpenAI() as fake:
        fake.chat_status = 500
        d = DaemonHarness(short_home(), _config(fake.base_url))
        try:
            await asyncio.to_thread(d.start)
            started = await asyncio.to_thread(
                d.rpc, "mock.inbound", {"from": "+15550001111", "utterances": ["Hello?"]}
            )

            def last_bot() -> str | None:
                call = d.call_record(started["callId"])
                bots = [t["text"] for t in call["transcript"] if t["speaker"] == "bot"]
                return bots[-1] if len(bots) >= 2 else None

            text = await asyncio.to_thread(wait_for, last_bot, 10.0, 0.02, "apology")
            assert text.startswith("Sorry")
        finally:
            await asyncio.to_thread(d.cleanup)
