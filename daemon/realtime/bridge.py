"""One call's bridge between its media stream and a Realtime API session (SPEC 15).

Caller audio goes to the model as it arrives (the bridge is the session's ``stt``); the model's
audio goes out through the session's :class:`~daemon.media.playback.Playback`, on the same
pacing clock, marks and ``clear`` as TTS (the bridge is the session's ``agent``). Each model
audio item is one :class:`Segment`: its mark tells when it was heard, and on barge-in the play
clock tells how much of it was, which is what ``conversation.item.truncate`` reports
(``audio_end_ms``) and what the transcript keeps.

Who records what:
- a line the engine asked for (greeting, message, ``speak``) was recorded by the engine when it
  asked; if barge-in cuts it, the media hub's utterance listener rewrites it to what was heard;
- a line the model chose itself is recorded (``call.speaking``) once it has played, cut to what
  was heard;
- each caller turn's transcript goes to the engine as a final ``call.speech``.

Responses are requested one at a time: a ``response.create`` while one is active would be
refused, so later requests wait for ``response.done``. Each request carries our id in its
metadata, so its ``response.created`` says which request it answers.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import logging
from collections import deque
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp

from daemon.errors import CallError, MediaError, SpeechError
from daemon.media.codecs import FRAME_BYTES
from daemon.media.framing import Framer
from daemon.media.pacer import FRAME_SECONDS
from daemon.media.playback import Segment, SegmentState
from daemon.media.session import UtteranceResult
from daemon.model.events import EventType, ProviderEvent
from daemon.realtime import protocol
from daemon.realtime.client import RealtimeSocket
from daemon.realtime.settings import realtime_url
from daemon.realtime.tools import END_CALL, PendingTools

if TYPE_CHECKING:
    from daemon.config.model import RealtimeConfig
    from daemon.media.session import MediaSession

logger = logging.getLogger(__name__)

VENDOR = "OpenAI Realtime"


class BridgeOwner(Protocol):
    """What a bridge reports to (``RealtimeService``)."""

    def note_spoken(self, call_id: str, text: str) -> None:
        """The model said ``text`` of its own accord, and this much was heard."""

    def publish_tool(
        self, call_id: str, tool_call_id: str, name: str, arguments: dict[str, Any]
    ) -> None:
        """The model called a configured tool: tell the agent (``call.tool``)."""

    def end_call(self, call_id: str) -> None:
        """Hang the call up."""

    def detach(self, bridge: RealtimeBridge) -> None:
        """The bridge closed."""


class _Item:
    """One audio item of the model's: its segment on the playback queue and its words."""

    __slots__ = (
        "ended",
        "framer",
        "item_id",
        "reported",
        "response_id",
        "say_text",
        "segment",
        "transcript",
        "transcript_done",
    )

    def __init__(self, item_id: str, response_id: str, say_text: str | None) -> None:
        self.item_id = item_id
        self.response_id = response_id
        self.say_text = say_text
        """The text the engine asked for, when this item answers a ``say``."""
        self.segment = Segment("")
        self.framer = Framer()
        self.transcript = ""
        self.transcript_done = False
        self.ended = False
        """Its last audio was queued (``response.output_audio.done``)."""
        self.reported = False


class RealtimeBridge:
    """The realtime model of one media session."""

    def __init__(
        self,
        session: MediaSession,
        settings: RealtimeConfig,
        *,
        http: aiohttp.ClientSession,
        owner: BridgeOwner,
        instructions: str,
        tools: list[dict[str, Any]],
        transcription_model: str,
        barge_in: bool,
        protect_opening: bool = False,
    ) -> None:
        """``barge_in`` False: caller speech never cuts the model (notify calls).
        ``protect_opening``: nor does it during the first line the engine asks for (an
        outbound call's message: the callee's "hello?" must not cut it, as in the cascade)."""
        self.session = session
        self.call_id = session.call_id
        self.settings = settings
        self.barge_in = barge_in
        self._owner = owner
        self._socket = RealtimeSocket(
            http,
            url=realtime_url(settings.base_url, settings.model),
            api_key=settings.api_key or "",
            on_event=self._on_event,
            on_lost=self._lost,
            on_audio=self._audio,
        )
        self._tools = PendingTools(settings.tool_timeout_ms / 1000, self._tool_expired)
        self._relayed = {str(tool["name"]) for tool in settings.tools}
        self._items: dict[str, _Item] = {}
        self._by_segment: dict[Segment, _Item] = {}
        self._cut_items: set[str] = set()
        self._ids = itertools.count(1)
        self._say_texts: dict[str, str] = {}
        """Our request id -> the text a pending ``say`` asked for."""
        self._response_says: dict[str, str] = {}
        """Response id -> the ``say`` text its first audio item speaks."""
        self._waiting: deque[dict[str, Any]] = deque()
        """``response.create`` events held back while a response is active."""
        self._requested: set[str] = set()
        """Our request ids sent but not yet ``response.created``."""
        self._active: set[str] = set()
        """Response ids in progress (ours and the model's own)."""
        self._end_requested = False
        self._ending = False
        self.failed: str | None = None
        """Why the session failed (the call's voice has stopped), or None."""
        self._closed = False
        self._protecting = protect_opening and barge_in
        self._socket.send(
            protocol.session_update(
                model=settings.model,
                voice=settings.voice,
                instructions=instructions,
                vad_threshold=settings.vad_threshold,
                silence_duration_ms=settings.silence_duration_ms,
                tools=tools,
                interrupt=barge_in and not self._protecting,
                transcription_model=transcription_model,
            )
        )

    # ------------------------------------------------------------------ SttSession (audio in)

    @property
    def connected(self) -> bool:
        """True while the model's socket is open."""
        return self._socket.connected

    async def connect(self) -> None:
        """Open the model's socket; a failure ends the call's speech loudly (never raises)."""
        try:
            await self._socket.open()
        except SpeechError as exc:
            self._lost(exc.message)

    def send_audio(self, ulaw: bytes) -> None:
        """Caller audio (mu-law 8 kHz, as the stream carries it) to the model."""
        self._socket.send_audio(ulaw)

    async def close(self) -> None:
        """The stream ended: close the model's socket and forget pending tool calls."""
        if self._closed:
            return
        self._closed = True
        self._tools.clear()
        self._waiting.clear()
        await self._socket.close()
        for item in list(self._items.values()):
            self._report(item)
        self._owner.detach(self)
        # Its socket's and tool timers' callbacks and its handler table are this bridge's
        # bound methods and closures: left, they would keep it and its session in reference
        # cycles, which the media plane's frozen heap keeps (daemon.media.gcpolicy).
        self._socket.forget_listeners()
        self._tools.forget_listener()
        self.__dict__.pop("_handlers", None)

    # ------------------------------------------------------------------ SpeechAgent (speech out)

    @property
    def busy(self) -> bool:
        """True while a response is requested or active, or model audio is still playing."""
        return bool(self._waiting or self._requested or self._active or self._items)

    async def say(self, text: str) -> None:
        """Ask the model to say ``text`` (as it is) as its next response."""
        if self.failed is not None:
            raise MediaError(
                f"the realtime model of call {self.call_id} is gone "
                f"({self.failed}); nothing can be said on it"
            )
        if self._closed:
            raise MediaError(f"media stream of call {self.call_id} has closed")
        request_id = self._request(protocol.say_instructions(text))
        self._say_texts[request_id] = text

    def segment_done(self, segment: Segment) -> None:
        """A segment settled (mark echoed, cut, or the stream closed)."""
        item = self._by_segment.get(segment)
        if item is not None:
            self._report_when_ready(item)

    # ------------------------------------------------------------------ tools (agent side)

    def answer_tool(self, tool_call_id: str, output: Any) -> None:
        """The agent's result of a relayed tool call, given to the model.

        Raises:
            CallError: no call with that id is waiting (answered, timed out, or unknown).
        """
        if self._tools.take(tool_call_id) is None:
            raise CallError(
                f"call {self.call_id} has no tool call {tool_call_id!r} waiting "
                "for a result (already answered, timed out, or never made)",
                callId=self.call_id,
                toolCallId=tool_call_id,
            )
        self._give_tool_output(tool_call_id, output)

    def _give_tool_output(self, tool_call_id: str, output: Any) -> None:
        self._socket.send(protocol.function_output(tool_call_id, output))
        if not self._closed and self.failed is None:
            self._request(None)

    def _tool_expired(self, tool_call_id: str, name: str) -> None:
        message = (
            f"the agent gave no result for tool {name} (call {tool_call_id}) within "
            f"{self.settings.tool_timeout_ms} ms; the model was told it failed"
        )
        logger.warning("call %s: %s", self.call_id, message)
        self._emit_error(message)
        self._give_tool_output(tool_call_id, {"error": f"{name} did not answer in time"})

    # ------------------------------------------------------------------ requests

    def _request(self, instructions: str | None) -> str:
        request_id = f"vc{next(self._ids)}"
        event = protocol.response_create(
            instructions=instructions, metadata={"voicecall": request_id}
        )
        event["event_id"] = f"evt_{request_id}"
        self._waiting.append(event)
        self._pump()
        self.session.refresh_idle()
        return request_id

    def _pump(self) -> None:
        """Send the next held ``response.create`` once no response is active."""
        if self._waiting and not self._active and not self._requested:
            event = self._waiting.popleft()
            self._requested.add(event["response"]["metadata"]["voicecall"])
            self._socket.send(event)

    # ------------------------------------------------------------------ server events

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = protocol.event_type(event)
        if kind == protocol.AUDIO_DELTA:  # the hot one, first
            self._audio(
                str(event.get("item_id", "")),
                str(event.get("response_id", "")),
                str(event.get("delta", "")),
            )
        elif kind == protocol.TRANSCRIPT_DELTA:
            item = self._items.get(str(event.get("item_id", "")))
            if item is not None:
                item.transcript += str(event.get("delta", ""))
        elif kind == protocol.TRANSCRIPT_DONE:
            self._transcript_done(event)
        else:
            handler = self._handlers.get(kind)
            if handler is not None:
                handler(event)

    @cached_property
    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], None]]:
        """The server events other than audio and transcript deltas, by type."""
        return {
            protocol.AUDIO_DONE: lambda e: self._audio_done(str(e.get("item_id", ""))),
            protocol.SPEECH_STARTED: lambda _e: self._barge_in(),
            protocol.INPUT_TRANSCRIPT_DONE: lambda e: self._caller_said(
                str(e.get("transcript", "")).strip()
            ),
            protocol.RESPONSE_CREATED: lambda e: self._response_created(e.get("response")),
            protocol.RESPONSE_DONE: lambda e: self._response_done(e.get("response")),
            protocol.FUNCTION_CALL_DONE: self._function_call,
            protocol.ERROR: lambda e: self._vendor_error(e.get("error")),
        }

    def _transcript_done(self, event: dict[str, Any]) -> None:
        item = self._items.get(str(event.get("item_id", "")))
        if item is not None:
            item.transcript = str(event.get("transcript", item.transcript))
            item.transcript_done = True
            self._report_when_ready(item)

    def _audio(self, item_id: str, response_id: str, delta: str) -> None:
        """A chunk of the model's audio (base64 mu-law) for ``item_id``."""
        if item_id in self._cut_items or self._closed:
            return
        item = self._items.get(item_id)
        if item is None:
            item = _Item(item_id, response_id, self._response_says.pop(response_id, None))
            self._items[item_id] = item
            self._by_segment[item.segment] = item
            self.session.playback.begin(item.segment)
        try:
            audio = base64.b64decode(delta, validate=True)
        except (binascii.Error, ValueError):
            return  # a corrupt delta is dropped, like a lost packet
        framer = item.framer
        size = len(audio)
        if size == FRAME_BYTES and not framer.pending:  # the framer would hand it back as is
            frames: list[bytes] | tuple[bytes] = (audio,)
        else:
            frames = framer.push(audio)
        if frames:
            self.session.playback.add_frames(item.segment, frames)

    def _audio_done(self, item_id: str) -> None:
        item = self._items.get(item_id)
        if item is not None and item_id not in self._cut_items:
            self._end_item(item)

    def _end_item(self, item: _Item) -> None:
        """No more audio for ``item``: its mark follows its last frame."""
        if item.ended:
            return
        item.ended = True
        tail = item.framer.flush()
        playback = self.session.playback
        if tail is not None:
            playback.add_frames(item.segment, (tail,))
        playback.end(item.segment)

    def _barge_in(self) -> None:
        """The caller started talking: stop the model's audio, cut its items where heard."""
        playback = self.session.playback
        if not self.barge_in or self._protecting or self._closed or not playback.busy:
            return
        playing = list(self._items.values())
        playback.clear(self.session.hub.pacer.now(), send=True)
        for item in playing:
            segment = item.segment
            if segment.state is SegmentState.HEARD:
                continue
            self._cut_items.add(item.item_id)
            heard_ms = segment.heard_frames * round(FRAME_SECONDS * 1000)
            self._socket.send(protocol.truncate(item.item_id, heard_ms))
            logger.info(
                "call %s: barge-in; model item %s cut at %d ms",
                self.call_id,
                item.item_id,
                heard_ms,
            )
        self.session.refresh_idle()

    def _caller_said(self, text: str) -> None:
        if text:
            self.session.emit(
                ProviderEvent(
                    EventType.SPEECH,
                    self.session.provider_call_id,
                    call_id=self.call_id,
                    transcript=text,
                    is_final=True,
                    turn_token=None,
                )
            )

    def _response_created(self, response: Any) -> None:
        if not isinstance(response, dict):
            return
        response_id = str(response.get("id", ""))
        self._active.add(response_id)
        metadata = response.get("metadata")
        request_id = metadata.get("voicecall") if isinstance(metadata, dict) else None
        if isinstance(request_id, str):
            self._requested.discard(request_id)
            text = self._say_texts.pop(request_id, None)
            if text is not None:
                self._response_says[response_id] = text

    def _response_done(self, response: Any) -> None:
        response_id = str(response.get("id", "")) if isinstance(response, dict) else ""
        self._active.discard(response_id)
        self._response_says.pop(response_id, None)
        for item in list(self._items.values()):
            if item.response_id == response_id:
                # No more audio or words are coming for it (also when the response was
                # cancelled or failed before its audio.done): let it play out and settle.
                if item.item_id not in self._cut_items:
                    self._end_item(item)
                item.transcript_done = True
                self._report_when_ready(item)
        self._pump()
        self._maybe_end()
        self.session.refresh_idle()

    def _function_call(self, event: dict[str, Any]) -> None:
        name = str(event.get("name", ""))
        tool_call_id = str(event.get("call_id", ""))
        if name == END_CALL:
            logger.info("call %s: the model ended the call", self.call_id)
            self._end_requested = True
            self._maybe_end()
            return
        if name not in self._relayed:
            self._give_tool_output(tool_call_id, {"error": f"there is no tool named {name}"})
            return
        try:
            arguments = protocol.parse_arguments(event.get("arguments"))
        except ValueError as exc:
            self._give_tool_output(tool_call_id, {"error": str(exc)})
            return
        self._tools.add(tool_call_id, name)
        self._owner.publish_tool(self.call_id, tool_call_id, name, arguments)

    def _vendor_error(self, error: Any) -> None:
        detail = error if isinstance(error, dict) else {"message": str(error)}
        message = str(detail.get("message", "unknown error"))
        event_id = detail.get("event_id")
        logger.warning("call %s: %s error event: %s", self.call_id, VENDOR, message)
        if isinstance(event_id, str) and event_id.startswith("evt_"):
            request_id = event_id[4:]
            if request_id in self._requested:  # our response.create was refused
                self._requested.discard(request_id)
                text = self._say_texts.pop(request_id, None)
                self._end_protection()
                if text is not None:
                    self._emit_error(f"the realtime model refused to say {text[:60]!r}: {message}")
                self._pump()
                self.session.refresh_idle()

    # ------------------------------------------------------------------ settling

    def _report_when_ready(self, item: _Item) -> None:
        """Record an item once it has settled (and, if heard in full, its words are known)."""
        segment = item.segment
        if item.reported or not segment.done:
            return
        if segment.state is SegmentState.HEARD and not item.transcript_done:
            return
        self._report(item)
        self._maybe_end()
        self.session.refresh_idle()

    def _report(self, item: _Item) -> None:
        if item.reported:
            return
        item.reported = True
        self._items.pop(item.item_id, None)
        self._by_segment.pop(item.segment, None)
        segment = item.segment
        heard_all = segment.state is SegmentState.HEARD
        words = (item.transcript or item.say_text or "").split()
        if heard_all:
            heard = " ".join(words)
        else:
            total = max(segment.frames_queued, 1)
            heard = " ".join(words[: round(len(words) * min(1.0, segment.heard_frames / total))])
        heard_ms = round(segment.heard_frames * FRAME_SECONDS * 1000)
        if item.say_text is not None:
            self._end_protection()
            result = UtteranceResult(
                item.say_text, item.say_text if heard_all else heard, not heard_all, heard_ms
            )
            self.session.hub.utterance_finished(self.session, result)
        elif heard:
            self._owner.note_spoken(self.call_id, heard)

    def _end_protection(self) -> None:
        """The opening line has been heard (or cut short): the caller may interrupt now."""
        if self._protecting:
            self._protecting = False
            self._socket.send(
                protocol.vad_update(
                    self.settings.vad_threshold, self.settings.silence_duration_ms, interrupt=True
                )
            )

    def _maybe_end(self) -> None:
        """``end_call`` (or a failure) ends the call once the last words have been heard."""
        if (
            not self._end_requested
            or self._ending
            or self._active
            or self._requested
            or self._waiting
            or self._items
            or self.session.playback.busy
        ):
            return
        self._ending = True
        self._owner.end_call(self.call_id)

    def _lost(self, reason: str) -> None:
        """The model's socket failed: say so loudly, then hang up after what is playing."""
        if self._closed or self.failed is not None:
            return
        self.failed = reason
        message = f"{VENDOR} session lost: {reason}; the call's voice has stopped, hanging up"
        logger.error("call %s: %s", self.call_id, message)
        self._emit_error(message)
        self._tools.clear()
        self._waiting.clear()
        self._requested.clear()
        self._active.clear()
        self._say_texts.clear()
        for item in list(self._items.values()):
            self._end_item(item)  # what arrived still plays out, then the call ends
            item.transcript_done = True
        self._end_requested = True
        self._maybe_end()
        self.session.refresh_idle()

    def _emit_error(self, message: str) -> None:
        self.session.emit(
            ProviderEvent(
                EventType.ERROR, self.session.provider_call_id, call_id=self.call_id, error=message
            )
        )
