"""Provider media-stream framings: Twilio, Telnyx and Plivo JSON messages <-> normalised ones.

One small class per provider behind :class:`MediaFraming`. A framing object lives for one
websocket: it learns the stream id from the ``start`` message and then pre-builds the constant
head and tail of every outbound ``media`` message, so sending a 20 ms frame costs a base64 and
two concatenations instead of a ``json.dumps`` (SPEC 12: 500 streams x 50 frames/s).

Inbound ``media`` messages are the other hot path (the same 25 000 messages/s). ``media_payload``
pulls the base64 payload out by substring search when the message *starts* with the media event
key (so ``"event":"media"`` is the top-level key, not text nested elsewhere) and the payload
holds no JSON escape; anything else falls back to ``json.loads`` in ``decode``. Provider
camelCase / snake_case appears only in this module (style guide 2.2).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import parse_qsl

from daemon.media.codecs import SAMPLE_RATE
from daemon.providers import catalog


class StreamEvent(StrEnum):
    """The normalised kinds of inbound stream messages."""

    CONNECTED = "connected"
    START = "start"
    MEDIA = "media"
    DTMF = "dtmf"
    MARK = "mark"
    """A mark (Plivo: checkpoint) we sent was reached: the audio before it has been played."""
    CLEARED = "cleared"
    """The provider confirmed a clear (Plivo ``clearedAudio``)."""
    ERROR = "error"
    """The provider reports the stream failed (Telnyx ``error`` frames)."""
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """One inbound stream message, parsed once at the edge."""

    kind: StreamEvent
    stream_id: str | None = None
    provider_call_id: str | None = None
    """Twilio ``callSid``, Telnyx ``call_control_id``, Plivo ``callId`` (on ``start``)."""
    parameters: Mapping[str, str] = field(default_factory=dict)
    """Per-stream custom parameters (Twilio ``customParameters``; where the token travels)."""
    payload: str | None = None
    """Base64 audio of a ``media`` message."""
    digit: str | None = None
    name: str | None = None
    """The mark / checkpoint name."""
    encoding: str | None = None
    """The inbound media encoding announced on ``start`` (e.g. ``audio/x-mulaw``)."""
    error: str | None = None
    """What an ``error`` frame says (``code title: detail``)."""


class MediaFraming(Protocol):
    """A provider's websocket message format, for one stream."""

    provider: str

    def decode(self, text: str) -> StreamMessage | None:
        """Parse one text message; None for messages we ignore (or malformed ones)."""

    def media_payload(self, text: str) -> str | None:
        """Fast path: the base64 payload when ``text`` is a plain inbound media message."""

    def encode_media(self, b64: str) -> str:
        """An outbound audio message carrying base64 mu-law 8 kHz."""

    def media_affixes(self) -> tuple[str, str]:
        """The text before and after the payload of :meth:`encode_media` (fixed per stream
        once it started): the playback builds each frame's wire bytes around them."""

    def encode_mark(self, name: str) -> str:
        """A mark (checkpoint) the provider echoes once the audio before it was played."""

    def encode_clear(self) -> str:
        """Drop every queued outbound frame at the provider (barge-in)."""


def _dumps(message: Mapping[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def _loads(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _sub(message: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = message.get(key)
    return value if isinstance(value, dict) else {}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _params(value: object) -> dict[str, str]:
    """Custom parameters: an object, a JSON object string, or ``a=1,b=2`` / ``a=1&b=2``."""
    if isinstance(value, str):
        parsed = _loads(value) if value.lstrip().startswith("{") else None
        if parsed is None:
            pairs = parse_qsl(value.replace(",", "&"), keep_blank_values=True)
            return {k.strip(): v.strip() for k, v in pairs}
        value = parsed
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items() if isinstance(v, str | int | float)}
    return {}


def _extra_headers(value: object) -> dict[str, str]:
    """Plivo ``extra_headers``: ``k=v;k=v`` (a JSON object or dict is read too)."""
    if isinstance(value, str) and not value.lstrip().startswith("{"):
        pairs = (item.partition("=") for item in value.split(";"))
        return {k.strip(): v.strip() for k, sep, v in pairs if sep and k.strip()}
    return _params(value)


def _fast_payload(text: str, head: str, outbound_track: str) -> str | None:
    """The payload of a top-level media message, or None to take the full-parse path."""
    if not text.startswith(head) or outbound_track in text:
        return None
    start = text.find('"payload":"')
    if start < 0:
        return None
    start += 11
    end = text.find('"', start)
    if end < 0:
        return None
    payload = text[start:end]
    return None if "\\" in payload else payload


_Handler = Callable[[Any, dict[str, Any]], "StreamMessage | None"]
"""A message parser of a framing: (the framing, the parsed message) -> what it means."""


def _simple(kind: StreamEvent) -> _Handler:
    """A parser for an event that carries nothing else."""
    return lambda framing, message: StreamMessage(kind)


class _JsonFraming:
    """What the three framings share: full-parse decoding of the non-media messages."""

    provider = "?"
    _media_head = '{"event":"media"'
    _outbound_track = '"track":"outbound"'

    def __init__(self) -> None:
        self.stream_id: str | None = None
        self._prefix = ""
        self._suffix = '"}}'
        # Plain functions, not bound methods: a table of its own bound methods would make
        # every framing (and the session holding it) a reference cycle.
        self._table = type(self)._handlers()

    def media_payload(self, text: str) -> str | None:
        """Fast path for inbound audio; see the module docstring for why it is safe."""
        if self.stream_id is None:
            return None  # before start every message takes the careful path
        return _fast_payload(text, self._media_head, self._outbound_track)

    def encode_media(self, b64: str) -> str:
        """Pre-built head + payload + tail (no json.dumps per frame)."""
        return self._prefix + b64 + self._suffix

    def media_affixes(self) -> tuple[str, str]:
        """``encode_media`` in two parts: the text before and after the payload."""
        return self._prefix, self._suffix

    def decode(self, text: str) -> StreamMessage | None:
        """Parse a message; unknown events and malformed JSON give None."""
        message = _loads(text)
        if message is None:
            return None
        event = message.get("event")
        handler = self._table.get(event if isinstance(event, str) else "")
        return handler(self, message) if handler is not None else None

    @classmethod
    def _handlers(cls) -> Mapping[str, _Handler]:
        """Event name -> parser; Twilio's and Telnyx's shared vocabulary by default."""
        return {
            "connected": _simple(StreamEvent.CONNECTED),
            "start": cls._start,
            "media": cls._media,
            "dtmf": cls._dtmf,
            "mark": cls._mark,
            "stop": _simple(StreamEvent.STOP),
        }

    def _start(self, message: dict[str, Any]) -> StreamMessage | None:
        raise NotImplementedError

    def _mark(self, message: dict[str, Any]) -> StreamMessage | None:
        name = _str(_sub(message, "mark").get("name"))
        return StreamMessage(StreamEvent.MARK, name=name) if name else None

    def _media(self, message: dict[str, Any]) -> StreamMessage | None:
        media = _sub(message, "media")
        track = media.get("track")
        if isinstance(track, str) and track.startswith("outbound"):
            return None
        payload = media.get("payload")
        return (
            StreamMessage(StreamEvent.MEDIA, payload=payload) if isinstance(payload, str) else None
        )

    def _dtmf(self, message: dict[str, Any]) -> StreamMessage | None:
        digit = _str(_sub(message, "dtmf").get("digit"))
        return StreamMessage(StreamEvent.DTMF, digit=digit) if digit else None


class TwilioFraming(_JsonFraming):
    """Twilio Media Streams: in ``connected start media dtmf mark stop``; out ``media mark
    clear``, each carrying ``streamSid``."""

    provider = "twilio"

    def _start(self, message: dict[str, Any]) -> StreamMessage | None:
        start = _sub(message, "start")
        sid = _str(start.get("streamSid")) or _str(message.get("streamSid"))
        if sid is None:
            return None
        self.stream_id = sid
        self._prefix = '{"event":"media","streamSid":' + json.dumps(sid) + ',"media":{"payload":"'
        return StreamMessage(
            StreamEvent.START,
            stream_id=sid,
            provider_call_id=_str(start.get("callSid")),
            parameters=_params(start.get("customParameters")),
            encoding=_str(_sub(start, "mediaFormat").get("encoding")),
        )

    def encode_mark(self, name: str) -> str:
        """``{"event":"mark","streamSid":...,"mark":{"name":...}}``."""
        return _dumps({"event": "mark", "streamSid": self.stream_id, "mark": {"name": name}})

    def encode_clear(self) -> str:
        """``{"event":"clear","streamSid":...}``."""
        return _dumps({"event": "clear", "streamSid": self.stream_id})


class TelnyxFraming(_JsonFraming):
    """Telnyx media streaming (``stream_bidirectional_mode: rtp``, PCMU): snake_case ids,
    outbound messages carry no stream id."""

    provider = "telnyx"

    def __init__(self) -> None:
        super().__init__()
        self._prefix = '{"event":"media","media":{"payload":"'

    def _start(self, message: dict[str, Any]) -> StreamMessage | None:
        start = _sub(message, "start")
        sid = _str(message.get("stream_id")) or _str(start.get("stream_id"))
        if sid is None:
            return None
        self.stream_id = sid
        params = _params(start.get("custom_parameters"))
        client_state = _str(start.get("client_state"))
        if client_state is not None:
            params.setdefault("client_state", client_state)
        return StreamMessage(
            StreamEvent.START,
            stream_id=sid,
            provider_call_id=_str(start.get("call_control_id")),
            parameters=params,
            encoding=_str(_sub(start, "media_format").get("encoding")),
        )

    @classmethod
    def _handlers(cls) -> Mapping[str, _Handler]:
        return {**super()._handlers(), "error": cls._error}

    def _error(self, message: dict[str, Any]) -> StreamMessage:
        """``{"event":"error","error":{"code":"100005","title":...,"detail":...}}``."""
        error = _sub(message, "error")
        code = str(error.get("code") or "?")
        title = _str(error.get("title")) or "error"
        detail = _str(error.get("detail"))
        text = f"{code} {title}" + (f": {detail}" if detail else "")
        return StreamMessage(
            StreamEvent.ERROR, stream_id=_str(message.get("stream_id")), error=text[:200]
        )

    def encode_mark(self, name: str) -> str:
        """``{"event":"mark","mark":{"name":...}}``."""
        return _dumps({"event": "mark", "mark": {"name": name}})

    def encode_clear(self) -> str:
        """``{"event":"clear"}``."""
        return '{"event":"clear"}'


class PlivoFraming(_JsonFraming):
    """Plivo audio streams (``bidirectional="true"``, ``audio/x-mulaw;rate=8000``): out
    ``playAudio checkpoint clearAudio``, in ``start media dtmf playedStream``/``played``
    ``clearedAudio``. Plivo reports the end of a stream on the status callback, not on the
    socket (a ``stop`` is still honoured)."""

    provider = "plivo"

    def __init__(self) -> None:
        super().__init__()
        self._prefix = (
            '{"event":"playAudio","media":{"contentType":"audio/x-mulaw","sampleRate":'
            f'{SAMPLE_RATE},"payload":"'
        )

    @classmethod
    def _handlers(cls) -> Mapping[str, _Handler]:
        return {
            "start": cls._start,
            "media": cls._media,
            "dtmf": cls._dtmf,
            "playedStream": cls._played,
            "played": cls._played,  # the name one Plivo support article gives the echo
            "clearedAudio": _simple(StreamEvent.CLEARED),
            "stop": _simple(StreamEvent.STOP),
        }

    def _start(self, message: dict[str, Any]) -> StreamMessage | None:
        start = _sub(message, "start")
        sid = _str(start.get("streamId")) or _str(message.get("streamId"))
        if sid is None:
            return None
        self.stream_id = sid
        return StreamMessage(
            StreamEvent.START,
            stream_id=sid,
            provider_call_id=_str(start.get("callId")),
            parameters=_extra_headers(message.get("extra_headers") or start.get("extra_headers")),
            encoding=_str(_sub(start, "mediaFormat").get("encoding")),
        )

    def _played(self, message: dict[str, Any]) -> StreamMessage | None:
        name = _str(message.get("name"))
        return StreamMessage(StreamEvent.MARK, name=name) if name else None

    def encode_mark(self, name: str) -> str:
        """``{"event":"checkpoint","streamId":...,"name":...}``."""
        return _dumps({"event": "checkpoint", "streamId": self.stream_id, "name": name})

    def encode_clear(self) -> str:
        """``{"event":"clearAudio","streamId":...}``."""
        return _dumps({"event": "clearAudio", "streamId": self.stream_id})


FRAMINGS: Mapping[str, Callable[[], MediaFraming]] = {
    "twilio": TwilioFraming,
    "telnyx": TelnyxFraming,
    "plivo": PlivoFraming,
}
"""Framing per stream protocol; each provider declares the one it speaks
(:attr:`daemon.providers.catalog.ProviderSpec.framing`; `mock` speaks Twilio's)."""


def framing_for(provider: str) -> MediaFraming:
    """A fresh framing for one stream of `provider`.

    Raises:
        ValueError: the provider has no media-stream framing.
    """
    declared = catalog.spec(provider)
    if declared is None or declared.framing not in FRAMINGS:
        raise ValueError(
            f"provider {provider!r} has no media-stream framing; expected one of "
            f"{', '.join(sorted(catalog.NAMES))}"
        )
    return FRAMINGS[declared.framing]()
