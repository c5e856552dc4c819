"""What every provider needs of the media plane, in one place.

Providers reach the media hub only through `context.media` and these structural
protocols, so `daemon.media` stays an implementation detail (and tests can stand in for it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from daemon.errors import MediaError
from daemon.model.record import CallRecord
from daemon.providers.base import ProviderContext

logger = logging.getLogger(__name__)


@runtime_checkable
class MediaSessionLike(Protocol):
    """A live media stream of one call (`daemon.media.session.MediaSession`)."""

    async def speak(self, text: str, *, turn_token: str | None = None) -> None:
        """Queue `text` to be synthesised and streamed."""

    async def wait_idle(self) -> None:
        """Return once everything queued has been heard."""


@runtime_checkable
class MediaHubLike(Protocol):
    """The media hub (`context.media`) as far as providers need it."""

    def issue_token(self, call_id: str, provider_call_id: str | None) -> str:
        """The call's stream token, checked when its websocket starts."""

    def revoke(self, call_id: str) -> None:
        """Forget the token of a call that ended (and close its stream)."""

    def session(self, call_id: str) -> Any:
        """The call's live `MediaSessionLike`, or None."""

    async def wait_session(self, call_id: str) -> Any:
        """The call's session once its stream has started."""

    def prefetch(self, call_id: str, number: str | None, text: str) -> None:
        """Start synthesising speech that waits for the call's stream (`MediaHub.prefetch`)."""

    def drop_prefetch(self, call_id: str) -> None:
        """Give up speech synthesised ahead for a stream that will not carry it."""


@runtime_checkable
class ReportsStreamFailures(Protocol):
    """A hub that tells the provider when a stream fails (`MediaHub.on_stream_failure`)."""

    on_stream_failure: Callable[[str, str, bool], None] | None


def media_hub(context: ProviderContext | None) -> MediaHubLike | None:
    """The hub when streaming is on and it can speak (a TTS, or realtime mode's model); else
    None (native voice)."""
    if context is None or not context.config.streaming.enabled or not context.stream_url:
        return None
    hub = context.media
    if not isinstance(hub, MediaHubLike) or (
        getattr(hub, "tts", None) is None and getattr(hub, "realtime", None) is None
    ):
        return None
    return hub


def number_of(call: CallRecord) -> str | None:
    """The `[numbers."+E164"]` table a call was routed by (its TTS may differ), or None."""
    number = call.metadata.get("number")
    return number if isinstance(number, str) else None


async def speak_over_stream(
    hub: MediaHubLike,
    call: CallRecord,
    text: str,
    turn_token: str | None,
    *,
    wait_seconds: float,
    fallback: str,
    abandon: asyncio.Event | None = None,
) -> bool:
    """Speak on the call's stream once it has started; False when the caller must fall back.

    `fallback` names what the provider will use instead, for the log line. `abandon`, when set
    meanwhile, stops the wait at once (the provider learnt that the stream failed).
    """
    if hub.session(call.call_id) is None:
        hub.prefetch(call.call_id, number_of(call), text)
    try:
        async with asyncio.timeout(wait_seconds):
            session = await _session_unless(hub, call.call_id, abandon)
        if session is None:
            logger.warning("call %s: its media stream failed; using %s", call.call_id, fallback)
            hub.drop_prefetch(call.call_id)
            return False
        await session.speak(text, turn_token=turn_token)
        return True
    except TimeoutError:
        hub.drop_prefetch(call.call_id)
        logger.warning(
            "call %s: its media stream did not start within %gs; using %s",
            call.call_id,
            wait_seconds,
            fallback,
        )
    except MediaError as exc:
        hub.drop_prefetch(call.call_id)
        logger.warning("call %s: %s; using %s", call.call_id, exc.message, fallback)
    return False


async def _session_unless(hub: MediaHubLike, call_id: str, abandon: asyncio.Event | None) -> Any:
    """The call's session once started, or None as soon as `abandon` is set."""
    if abandon is None:
        return await hub.wait_session(call_id)
    if abandon.is_set():
        return None
    waiting = asyncio.ensure_future(hub.wait_session(call_id))
    gone = asyncio.ensure_future(abandon.wait())
    try:
        await asyncio.wait((waiting, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiting, gone):
            if not task.done():
                task.cancel()
        await asyncio.gather(waiting, gone, return_exceptions=True)
    if abandon.is_set() or waiting.cancelled():
        return None
    return waiting.result()
