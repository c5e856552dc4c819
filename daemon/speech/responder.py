"""The LLM auto-responder: answers each final caller transcript with one short reply.

Calls an OpenAI-compatible ``/chat/completions`` at ``agent.base_url`` (OpenAI, a local
model server, a router) with the whole conversation so far, with ``stream: true``: the reply
arrives as server-sent events and :meth:`AutoResponder.sentences` yields each sentence the
moment it is complete (SPEC 11), so the first one is being synthesised and heard while the
model still writes the rest. A server that ignores ``stream`` and answers with one JSON body
works too. Every request is bounded by ``response_timeout_ms`` (the whole stream, not each
chunk); the engine speaks :data:`APOLOGY` when it fails before any sentence, and cancels the
pending reply when the caller speaks again (closing the generator releases the HTTP response,
so a cancelled request never holds a pooled connection).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

import aiohttp

from daemon.errors import SpeechError
from daemon.speech.sentences import SentenceStream
from daemon.speech.vendor import http_error, transport_error

if TYPE_CHECKING:
    from daemon.config.model import Config

APOLOGY = "Sorry, I'm having trouble answering right now."
"""Spoken instead of a reply when the model fails or times out."""
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_TIMEOUT_MS = 30000
MAX_HISTORY_TURNS = 40
"""Older turns are left out: a phone reply needs recent context, not the whole call."""
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful voice assistant on a phone call. Keep responses brief and "
    "conversational (1-2 sentences max). Be natural and friendly; your words are spoken "
    "aloud, so use no lists, markdown or emoji."
)
CALLER_LINE = "The caller's phone number is {from_number}."
"""Appended to the system prompt unless it already places ``{from_number}`` itself."""
VENDOR = "auto-responder"

Speaker = Literal["bot", "user"]


class AgentSettings(Protocol):
    """``[agent]`` as read here."""

    @property
    def base_url(self) -> str | None: ...
    @property
    def api_key(self) -> str | None: ...


class ResponderSettings(Protocol):
    """The top-level keys the auto-responder reads (read-only; frozen dataclasses fit)."""

    @property
    def response_model(self) -> str | None: ...
    @property
    def response_system_prompt(self) -> str | None: ...
    @property
    def response_timeout_ms(self) -> int: ...
    @property
    def agent(self) -> AgentSettings | None: ...


def model_name(response_model: str) -> str:
    """``"openai/gpt-4o-mini"`` -> ``"gpt-4o-mini"``: the part after the first slash."""
    return response_model.split("/", 1)[1] if "/" in response_model else response_model


class AutoResponder:
    """Generates the bot's next line from the transcript so far."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        response_model: str,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        system_prompt: str | None = None,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
    ) -> None:
        self._session = session
        self._api_key = api_key
        self.model = model_name(response_model)
        self.url = f"{base_url.rstrip('/')}/chat/completions"
        self.system_prompt = system_prompt
        self.timeout_ms = timeout_ms

    def __repr__(self) -> str:
        return f"AutoResponder(url={self.url!r}, model={self.model!r})"

    def messages(
        self, history: Sequence[tuple[str, str]], from_number: str
    ) -> list[dict[str, str]]:
        """The chat messages for ``history`` ((speaker, text) pairs, oldest first).

        The system prompt is the configured one (or the built-in default) with the caller's
        number filled in for a ``{from_number}`` placeholder, or appended as one sentence.
        """
        system = self.system_prompt or DEFAULT_SYSTEM_PROMPT
        number = from_number or "unknown"
        if "{from_number}" in system:
            system = system.replace("{from_number}", number)
        else:
            system = f"{system.rstrip()} {CALLER_LINE.format(from_number=number)}"
        messages = [{"role": "system", "content": system}]
        for speaker, text in history[-MAX_HISTORY_TURNS:]:
            role = "assistant" if speaker == "bot" else "user"
            messages.append({"role": role, "content": text})
        return messages

    async def reply(self, history: list[tuple[str, str]], from_number: str) -> str:
        """The whole reply at once (the sentences of :meth:`sentences`, joined).

        Raises:
            SpeechError: as :meth:`sentences`.
        """
        return " ".join([sentence async for sentence in self.sentences(history, from_number)])

    async def sentences(
        self, history: Sequence[tuple[str, str]], from_number: str
    ) -> AsyncGenerator[str, None]:
        """Yield the reply sentence by sentence, each as soon as the model has written it.

        Close the generator (``contextlib.aclosing``) when abandoning it early.

        Raises:
            SpeechError: the API failed, answered without text, or the reply took longer
                than ``timeout_ms`` (sentences already yielded stay said).
        """
        payload = {
            "model": self.model,
            "messages": self.messages(history, from_number),
            "stream": True,
        }
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        # A deadline rather than `asyncio.timeout` around the loop: the timeout must never fire
        # while the consumer (speaking a sentence) holds the generator suspended at a yield.
        deadline = asyncio.get_running_loop().time() + self.timeout_ms / 1000
        splitter = SentenceStream()
        produced = False
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._session.post(self.url, json=payload, headers=headers)
            try:
                if response.status >= 400:
                    raise await http_error(VENDOR, response, self.url, self._api_key)
                if not response.content_type.startswith("text/event-stream"):
                    async with asyncio.timeout_at(deadline):
                        body = await response.json(content_type=None)
                    for sentence in splitter.push(_reply_text(body)):
                        produced = True
                        yield sentence
                else:
                    while True:
                        async with asyncio.timeout_at(deadline):
                            line = await response.content.readline()
                        if not line:
                            break
                        delta = _sse_delta(line)
                        if delta is None:
                            break  # data: [DONE]
                        for sentence in splitter.push(delta):
                            produced = True
                            yield sentence
            finally:
                response.release()
        except TimeoutError:
            raise SpeechError(
                f"{VENDOR} ({self.model} at {self.url}) gave no answer within {self.timeout_ms} ms",
                vendor=VENDOR,
                url=self.url,
            ) from None
        except (aiohttp.ClientError, ValueError) as exc:
            raise transport_error(VENDOR, self.url, exc, self._api_key) from None
        tail = splitter.flush()
        if tail:
            yield tail
        elif not produced:
            raise SpeechError(
                f"{VENDOR} ({self.model} at {self.url}) answered without any text",
                vendor=VENDOR,
                url=self.url,
            )


def _sse_delta(line: bytes) -> str | None:
    """The text one server-sent-events line adds: "" for anything else, None at ``[DONE]``."""
    text = line.decode("utf-8", "replace").strip()
    if not text.startswith("data:"):
        return ""  # blank separator lines, comments (": keep-alive"), "event:" lines
    data = text[5:].strip()
    if data == "[DONE]":
        return None
    try:
        chunk = json.loads(data)
        content = chunk["choices"][0]["delta"].get("content")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return ""
    return content if isinstance(content, str) else ""


def _reply_text(body: Any) -> str:
    """``choices[0].message.content`` stripped, or "" when the body has no such text."""
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return ""
    return content.strip() if isinstance(content, str) else ""


def create_responder(
    settings: ResponderSettings, session: aiohttp.ClientSession
) -> AutoResponder | None:
    """The auto-responder ``response_model`` asks for, or None when it is unset."""
    if not settings.response_model:
        return None
    agent = settings.agent
    return AutoResponder(
        session,
        response_model=settings.response_model,
        base_url=(agent.base_url if agent else None) or DEFAULT_BASE_URL,
        api_key=agent.api_key if agent else None,
        system_prompt=settings.response_system_prompt,
        timeout_ms=settings.response_timeout_ms,
    )


def number_responders(config: Config, session: aiohttp.ClientSession) -> dict[str, Any]:
    """An auto-responder (or None: none configured) for each `[numbers."+E164"]` table that
    overrides the model, prompt or timeout (SPEC 14); other numbers use the top-level one."""
    from daemon.engine.routing import has_responder_override, responder_settings

    return {
        key: create_responder(responder_settings(config, key), session)
        for key, table in config.numbers.items()
        if has_responder_override(table)
    }
