"""Realtime mode for the daemon: decides which streams get a model, and keeps them reachable.

The media server asks :meth:`RealtimeService.attach` for every new stream before binding it:
a call whose effective settings enable realtime gets a :class:`RealtimeBridge` as its audio
sink and its voice, instead of STT and TTS. The service relays what the bridges report to the
engine (model lines, tool calls, hang-ups) and routes ``voicecall.tool_result`` back to the
bridge of that call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp

from daemon.errors import CallError, CallNotFoundError, VoicecallError
from daemon.model.events import CallMode, Direction, EventType, ProviderEvent
from daemon.model.record import CallRecord
from daemon.realtime.bridge import RealtimeBridge
from daemon.realtime.settings import effective_realtime, instructions
from daemon.realtime.tools import tool_definitions

if TYPE_CHECKING:
    from daemon.config.model import Config
    from daemon.media.session import MediaSession

logger = logging.getLogger(__name__)


class RealtimeEngine(Protocol):
    """What the service needs of the call engine (``CallEngine`` satisfies it)."""

    async def get(self, call_id: str) -> CallRecord | None:
        """A call by our id or the provider's."""

    async def end(self, call_id: str) -> None:
        """Hang up."""

    def note_spoken(self, call_id: str, text: str) -> None:
        """Record a bot line the model chose to say."""

    async def record_tool_call(
        self, call_id: str, tool_call_id: str, name: str, arguments: dict[str, Any]
    ) -> None:
        """Record and publish ``call.tool``."""


class RealtimeService:
    """Every realtime bridge of the daemon."""

    def __init__(
        self, config: Callable[[], Config], http: aiohttp.ClientSession, engine: RealtimeEngine
    ) -> None:
        """``config`` returns the config in force (a reload may swap it; `[realtime]` itself
        is restart-only, the prompt it falls back to is not)."""
        self._config = config
        self.http = http
        self.engine = engine
        self._bridges: dict[str, RealtimeBridge] = {}

    def is_active(self, call_id: str) -> bool:
        """True while the call's stream is bridged to a model."""
        return call_id in self._bridges

    async def attach(self, session: MediaSession) -> bool:
        """Bridge ``session`` to a model if realtime applies to its call; True if it did."""
        record = await self.engine.get(session.call_id)
        if record is None:
            return False
        config = self._config()
        settings = effective_realtime(config, record)
        if not settings.enabled:
            return False
        if not settings.api_key:
            message = (
                "realtime.enabled = true but realtime.api_key is not set; this call uses "
                "the STT/TTS cascade instead. Set OPENAI_API_KEY or run `voicecall "
                "secrets set realtime.api_key`"
            )
            logger.error("call %s: %s", session.call_id, message)
            session.emit(
                ProviderEvent(
                    EventType.ERROR,
                    session.provider_call_id,
                    call_id=session.call_id,
                    error=message,
                )
            )
            return False
        outbound = record.direction is Direction.OUTBOUND
        notify = outbound and record.mode is CallMode.NOTIFY
        bridge = RealtimeBridge(
            session,
            settings,
            http=self.http,
            owner=self,
            instructions=instructions(config, settings),
            tools=tool_definitions(settings.tools),
            transcription_model=config.streaming.stt_model,
            barge_in=not notify,
            protect_opening=outbound,
        )
        session.stt = bridge
        session.agent = bridge
        self._bridges[session.call_id] = bridge
        session.hub.spawn(bridge.connect(), f"realtime-connect-{session.call_id}")
        logger.info("call %s: bridged to realtime model %s", session.call_id, settings.model)
        return True

    async def tool_result(self, call_id: str, tool_call_id: str, output: Any) -> None:
        """Give the model the agent's result of a tool call (``voicecall.tool_result``).

        Raises:
            CallNotFoundError: no such call.
            CallError: the call has no realtime session, or no such tool call is waiting.
        """
        record = await self.engine.get(call_id)
        if record is None:
            raise CallNotFoundError(call_id)
        bridge = self._bridges.get(record.call_id)
        if bridge is None:
            raise CallError(
                f"call {record.call_id} has no realtime session (state "
                f"{record.state}); tool results only go to realtime calls",
                callId=record.call_id,
            )
        bridge.answer_tool(tool_call_id, output)

    # ------------------------------------------------------------------ BridgeOwner

    def note_spoken(self, call_id: str, text: str) -> None:
        self.engine.note_spoken(call_id, text)

    def publish_tool(
        self, call_id: str, tool_call_id: str, name: str, arguments: dict[str, Any]
    ) -> None:
        bridge = self._bridges.get(call_id)
        if bridge is not None:
            bridge.session.hub.spawn(
                self._publish(call_id, tool_call_id, name, arguments), f"realtime-tool-{call_id}"
            )

    async def _publish(
        self, call_id: str, tool_call_id: str, name: str, arguments: dict[str, Any]
    ) -> None:
        try:
            await self.engine.record_tool_call(call_id, tool_call_id, name, arguments)
        except VoicecallError as exc:
            logger.warning(
                "call %s: tool call %s not recorded: %s", call_id, tool_call_id, exc.message
            )

    def end_call(self, call_id: str) -> None:
        bridge = self._bridges.get(call_id)
        if bridge is not None:
            bridge.session.hub.spawn(self._end(call_id), f"realtime-end-{call_id}")

    async def _end(self, call_id: str) -> None:
        try:
            await self.engine.end(call_id)
        except VoicecallError as exc:
            logger.warning("call %s: hang-up failed: %s", call_id, exc.message)

    def detach(self, bridge: RealtimeBridge) -> None:
        if self._bridges.get(bridge.call_id) is bridge:
            del self._bridges[bridge.call_id]
