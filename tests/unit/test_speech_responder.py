"""Auto-responder against a local fake of an OpenAI-compatible chat completions API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import aiohttp.web
import pytest

from daemon.errors import SpeechError
from daemon.speech.responder import (
    APOLOGY,
    DEFAULT_SYSTEM_PROMPT,
    AutoResponder,
    create_responder,
    model_name,
)
from tests.fakes.openai import FakeOpenAI

HISTORY = [("bot", "Hello! How can I help you today?"), ("user", "What time do you open?")]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def _responder(
    fake: FakeOpenAI, session: aiohttp.ClientSession, **overrides: object
) -> AutoResponder:
    options: dict[str, object] = {
        "response_model": "openai/gpt-4o-mini",
        "base_url": fake.base_url,
        "api_key": fake.api_key,
        "timeout_ms": 2000,
    }
    options.update(overrides)
    return AutoResponder(session, **options)  # type: ignore[arg-type]


async def test_reply_and_request(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    """The model name drops its provider; history becomes assistant/user messages."""
    fake.chat_reply = "  We open at nine.  "
    assert await _responder(fake, session).reply(HISTORY, "+15550001234") == "We open at nine."
    (request,) = fake.chat_requests
    assert request["model"] == "gpt-4o-mini"
    system, *turns = request["messages"]
    assert system["role"] == "system"
    assert system["content"] == (
        f"{DEFAULT_SYSTEM_PROMPT} The caller's phone number is +15550001234."
    )
    assert "1-2 sentences" in system["content"]
    assert turns == [
        {"role": "assistant", "content": "Hello! How can I help you today?"},
        {"role": "user", "content": "What time do you open?"},
    ]


async def test_custom_system_prompt(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    """response_system_prompt replaces the built-in one; the caller's number is still given."""
    await _responder(fake, session, system_prompt="You are Ada.").reply(HISTORY, "+1555")
    await _responder(fake, session, system_prompt="Greet {from_number}.").reply(HISTORY, "")
    first, second = (request["messages"][0]["content"] for request in fake.chat_requests)
    assert first == "You are Ada. The caller's phone number is +1555."
    assert second == "Greet unknown."


@pytest.mark.parametrize(
    ("configured", "sent"),
    [("openai/gpt-4o-mini", "gpt-4o-mini"), ("gpt-4o", "gpt-4o"), ("a/b/c", "b/c")],
)
def test_model_name(configured: str, sent: str) -> None:
    """Only the part after the first slash goes to the API."""
    assert model_name(configured) == sent


async def test_timeout_raises_speech_error(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """No answer within response_timeout_ms is a SpeechError naming the limit."""
    fake.chat_hold = asyncio.Event()
    with pytest.raises(SpeechError, match="gave no answer within 50 ms"):
        await _responder(fake, session, timeout_ms=50).reply(HISTORY, "+1555")


async def test_http_error_names_status_and_url_not_key(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """A 500 and a 401 both surface as SpeechError with status and URL, key never shown."""
    fake.chat_status = 500
    with pytest.raises(SpeechError, match=r"HTTP 500 for .*/v1/chat/completions"):
        await _responder(fake, session).reply(HISTORY, "+1555")
    with pytest.raises(SpeechError) as caught:
        await _responder(fake, session, api_key="sk-secret-wrong-77").reply(HISTORY, "+1555")
    assert "HTTP 401" in caught.value.message and "sk-secret" not in caught.value.message


async def test_empty_reply_is_an_error(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    """Nothing to say would leave the caller in silence: the engine speaks APOLOGY instead."""
    fake.chat_reply = "   "
    with pytest.raises(SpeechError, match="without any text"):
        await _responder(fake, session).reply(HISTORY, "+1555")
    assert APOLOGY == "Sorry, I'm having trouble answering right now."


async def test_cancel_releases_the_connection(fake: FakeOpenAI) -> None:
    """A newer caller turn cancels the reply; the pooled connection is not leaked."""
    fake.chat_hold = asyncio.Event()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        responder = _responder(fake, session)
        task = asyncio.create_task(responder.reply(HISTORY, "+1555"))
        await fake.wait_for(lambda: len(fake.chat_requests) == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        fake.chat_hold = None
        async with asyncio.timeout(5):  # with a leaked connection this would wait forever
            assert await responder.reply(HISTORY, "+1555") == fake.chat_reply


@dataclass(frozen=True)
class Agent:
    base_url: str | None = None
    api_key: str | None = "sk-agent"


@dataclass(frozen=True)
class Cfg:
    response_model: str | None = "openai/gpt-4o-mini"
    response_system_prompt: str | None = None
    response_timeout_ms: int = 30000
    agent: Agent | None = Agent()


async def test_create_responder(session: aiohttp.ClientSession) -> None:
    """Unset response_model means no auto-responder; otherwise agent.base_url is used."""
    assert create_responder(Cfg(response_model=None), session) is None
    responder = create_responder(Cfg(agent=Agent(base_url="http://llm.local/v1/")), session)
    assert responder is not None
    assert responder.url == "http://llm.local/v1/chat/completions"
    assert responder.model == "gpt-4o-mini" and responder.timeout_ms == 30000
    default = create_responder(Cfg(agent=None), session)
    assert default is not None and default.url == "https://api.openai.com/v1/chat/completions"
    assert "sk-agent" not in repr(responder)


async def test_sentences_arrive_while_the_model_still_writes(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """`stream: true` is requested and each sentence is yielded as soon as it is complete:
    the first long before the model has finished the reply."""
    fake.chat_stream = [
        (0.0, "Sure, "),
        (0.05, "one moment. "),
        (0.6, "Here it is."),
        (0.0, " Bye"),
    ]
    responder = _responder(fake, session)
    got: list[tuple[str, bool]] = []
    async for sentence in responder.sentences(HISTORY, "+1555"):
        got.append((sentence, bool(fake.chat_finished)))
    assert got == [("Sure, one moment.", False), ("Here it is.", True), ("Bye", True)]
    assert fake.chat_requests[0]["stream"] is True


async def test_a_non_streaming_server_still_works(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """A server that ignores `stream` and answers with one JSON body is split the same way."""
    fake.chat_reply = "One. Two."

    async def plain(request: aiohttp.web.Request) -> aiohttp.web.Response:
        body = {"choices": [{"message": {"role": "assistant", "content": fake.chat_reply}}]}
        return aiohttp.web.json_response(body)

    async with aiohttp.ClientSession() as client:
        app = aiohttp.web.Application()
        app.router.add_post("/v1/chat/completions", plain)
        runner = aiohttp.web.AppRunner(app)
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            responder = AutoResponder(
                client, response_model="openai/x", base_url=f"http://127.0.0.1:{port}/v1"
            )
            assert [s async for s in responder.sentences(HISTORY, "")] == ["One.", "Two."]
        finally:
            await runner.cleanup()
