"""OpenAI realtime transcription over a websocket: mu-law in, server VAD, transcripts out.

The vendor takes ``g711_ulaw`` directly, so call audio is forwarded without decoding. Audio
is batched: ``send_audio`` only appends to a bounded buffer until 100 ms have gathered, then
writes the batch at once while the writer task is idle (:mod:`daemon.speech.wsdirect`: no task
wake-up), or else wakes the writer task (also for a partial batch that waited 200 ms), so the
media path pays a few hundred nanoseconds per frame and never waits on the network. A socket
that cannot be opened, or drops, is reopened with capped exponential backoff for as long as
the call lasts (only refused credentials end it); each outage is reported once to the listener,
and audio that arrives meanwhile is discarded (late audio would only confuse the server's turn
detection).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import random
from typing import Any

import aiohttp

from daemon.errors import SpeechError
from daemon.speech.stt.base import SttListener
from daemon.speech.vendor import connect_vendor_ws, redact
from daemon.speech.wsdirect import direct_writer, write_text

logger = logging.getLogger(__name__)

DEFAULT_URL = "wss://api.openai.com/v1/realtime?intent=transcription"
DEFAULT_MODEL = "gpt-4o-transcribe"
VENDOR = "OpenAI realtime STT"
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 10.0
BATCH_BYTES = 800
"""Caller audio goes to the vendor in 100 ms appends (8 kHz mu-law), not one per 20 ms frame:
a fifth of the writer wake-ups, websocket frames and base64 calls per call (SPEC 12), for at
most 100 ms more before the vendor hears the end of an utterance (its VAD waits
``silence_duration_ms``, 800 ms by default, anyway)."""
FLUSH_SECONDS = 0.2
"""A partial batch still waiting this long is sent as it is (audio that stopped flowing)."""
MAX_BUFFERED_BYTES = 16000
"""Audio kept while the writer catches up: 2 s of 8 kHz mu-law; older audio is dropped."""
_APPEND_PREFIX = '{"type":"input_audio_buffer.append","audio":"'


class OpenAiRealtimeStt:
    """:class:`~daemon.speech.stt.base.SttSession` for OpenAI realtime transcription."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        listener: SttListener,
        *,
        api_key: str,
        url: str = DEFAULT_URL,
        model: str = DEFAULT_MODEL,
        vad_threshold: float = 0.5,
        silence_duration_ms: int = 800,
        backoff_base: float = BACKOFF_BASE_SECONDS,
        backoff_max: float = BACKOFF_MAX_SECONDS,
        connect_timeout: float = 10.0,
    ) -> None:
        self._session = session
        self._listener = listener
        self._api_key = api_key
        self.url = url
        self.model = model
        self.vad_threshold = vad_threshold
        self.silence_duration_ms = silence_duration_ms
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        self.dropped_bytes = 0
        """Audio discarded while disconnected or behind (for diagnostics)."""
        self.outages = 0
        """Times the vendor could not be reached (each reported once to the listener)."""
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._buffer = bytearray()
        self._wake = asyncio.Event()
        self._flush: asyncio.TimerHandle | None = None
        self._idle = False
        """The writer task waits with nothing in hand: a full batch may be written at once."""
        self._frames: Any = None
        self._frames_ws: aiohttp.ClientWebSocketResponse | None = None
        """The socket whose frame writer ``_frames`` is (see :mod:`daemon.speech.wsdirect`)."""
        self.direct_sends = 0
        """Batches written by ``send_audio`` itself (the rest went through the writer task)."""
        self._tasks: list[asyncio.Task[None]] = []
        self._partials: dict[str, str] = {}
        self._closing = False

    @property
    def connected(self) -> bool:
        """True while a socket is open and audio is being forwarded."""
        return self._ws is not None and not self._ws.closed

    async def connect(self) -> None:
        """Open the first socket and start the reader (which reconnects) and writer tasks.

        A vendor that cannot be reached now is reported to the listener (``on_error``) and
        retried in the background with backoff, like a socket that drops later.

        Raises:
            SpeechError: the vendor refused the credentials (HTTP 401/403): retrying is
                pointless.
        """
        if self._tasks or self._closing:
            return
        ws: aiohttp.ClientWebSocketResponse | None
        try:
            ws = await self._open()
        except SpeechError as exc:
            if _refused(exc):
                raise
            self._outage(exc.message, attempt=1)
            ws = None
        if self._closing:  # close() ran while we were connecting: nobody will use this socket
            if ws is not None:
                await ws.close()
            return
        self._ws = ws
        self._tasks = [
            asyncio.create_task(self._run(ws), name="stt-reader"),
            asyncio.create_task(self._write_loop(), name="stt-writer"),
        ]

    def send_audio(self, ulaw: bytes) -> None:
        """Queue audio; the writer sends it once :data:`BATCH_BYTES` have gathered. Drops it
        while disconnected."""
        if self._ws is None:
            self.dropped_bytes += len(ulaw)
            return
        buffer = self._buffer
        buffer += ulaw
        size = len(buffer)
        if size >= BATCH_BYTES:
            if size > MAX_BUFFERED_BYTES:
                del buffer[: size - MAX_BUFFERED_BYTES]
                self.dropped_bytes += size - MAX_BUFFERED_BYTES
            if self._flush is not None:
                self._flush.cancel()
                self._flush = None
            if self._idle:  # written now, without waking the writer task (SPEC 12)
                ws = self._ws
                if self._frames_ws is not ws:
                    self._frames_ws = ws
                    self._frames = direct_writer(ws)
                frames = self._frames
                if frames is not None and write_text(
                    frames, _APPEND_PREFIX + base64.b64encode(buffer).decode("ascii") + '"}'
                ):
                    buffer.clear()
                    self.direct_sends += 1
                    return
            self._wake.set()
        elif self._flush is None:  # a provider that pauses must not strand a partial batch
            self._flush = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self._flush_due)

    def _flush_due(self) -> None:
        self._flush = None
        if self._buffer:
            self._wake.set()

    async def close(self) -> None:
        """Stop the tasks and close the socket; safe to call more than once."""
        self._closing = True
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        ws, self._ws = self._ws, None
        self._buffer.clear()
        if ws is not None:
            await ws.close()

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        return await connect_vendor_ws(
            self._session,
            self.url,
            api_key=self._api_key,
            vendor=VENDOR,
            connect_timeout=self.connect_timeout,
            headers={"OpenAI-Beta": "realtime=v1"},
            first_message=json.dumps(self._session_update()),
        )

    def _session_update(self) -> dict[str, Any]:
        return {
            "type": "transcription_session.update",
            "session": {
                "input_audio_format": "g711_ulaw",
                "input_audio_transcription": {"model": self.model},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": self.vad_threshold,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": self.silence_duration_ms,
                },
            },
        }

    async def _run(self, ws: aiohttp.ClientWebSocketResponse | None) -> None:
        """Read until the socket drops, then reopen it with backoff, for the life of the call.

        Only a refusal of the credentials ends the session early. The first failed attempt of
        each outage is reported to the listener (a ``call.error`` on the call); every attempt
        is logged; so is the recovery.
        """
        attempt = 1 if ws is None else 0  # connect() already failed once when ws is None
        while not self._closing:
            if ws is not None:
                self._ws = ws
                if await self._read(ws):
                    attempt = 0  # the server confirmed the session: this socket was healthy
                self._ws = None
                self._buffer.clear()
                self._partials.clear()
                ws = None
                if self._closing:
                    return
            await asyncio.sleep(self._backoff(attempt))
            attempt += 1
            try:
                ws = await self._open()
            except SpeechError as exc:
                if _refused(exc):
                    self._fail(exc.message)
                    return
                self._outage(exc.message, attempt)
                continue
            if self._closing:
                await ws.close()
                return
            if attempt > 1:
                logger.info("%s reconnected to %s after %d attempts", VENDOR, self.url, attempt)

    def _backoff(self, attempt: int) -> float:
        """Seconds before attempt ``attempt + 1``: doubling from ``backoff_base`` up to
        ``backoff_max``, each drawn from its upper half so that many calls losing the vendor
        at once do not come back in lockstep."""
        delay = min(self.backoff_max, self.backoff_base * 2.0**attempt)
        return delay * random.uniform(0.5, 1.0)  # jitter, not a secret

    def _outage(self, message: str, attempt: int) -> None:
        """Log every failed attempt; tell the listener once per outage (its first attempt)."""
        logger.warning("%s attempt %d failed: %s; retrying with backoff", VENDOR, attempt, message)
        if attempt == 1:
            self.outages += 1
            self._listener.on_error(
                SpeechError(
                    f"{message}; the caller is not heard until it reconnects "
                    "(retrying with backoff)",
                    vendor=VENDOR,
                    url=self.url,
                    retrying=True,
                )
            )

    def _fail(self, message: str) -> None:
        logger.error("%s: %s", VENDOR, message)
        self._listener.on_error(SpeechError(f"{VENDOR}: {message}", vendor=VENDOR, url=self.url))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        """Dispatch events until the socket closes; True if the session was confirmed."""
        confirmed = False
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            try:
                event = json.loads(message.data)
            except ValueError:
                logger.warning("%s sent a frame that is not JSON; ignored", VENDOR)
                continue
            if isinstance(event, dict):
                confirmed = self._dispatch(event) or confirmed
        if not self._closing:
            logger.warning("%s socket closed (code %s)", VENDOR, ws.close_code)
        return confirmed

    def _dispatch(self, event: dict[str, Any]) -> bool:
        kind = event.get("type")
        item = str(event.get("item_id", ""))
        if kind == "input_audio_buffer.speech_started":
            self._partials.clear()
            self._listener.on_speech_start()
        elif kind == "conversation.item.input_audio_transcription.delta":
            text = self._partials.get(item, "") + str(event.get("delta", ""))
            self._partials[item] = text
            self._listener.on_partial(text)
        elif kind == "conversation.item.input_audio_transcription.completed":
            self._partials.pop(item, None)
            text = str(event.get("transcript", "")).strip()
            if text:
                self._listener.on_final(text, _confidence(event.get("logprobs")))
        elif kind == "error":
            error = event.get("error")
            detail = error.get("message", error) if isinstance(error, dict) else error
            logger.warning("%s error event: %s", VENDOR, redact(str(detail), self._api_key))
        elif kind in ("transcription_session.created", "transcription_session.updated"):
            return True
        return False

    async def _write_loop(self) -> None:
        """Send whatever audio has accumulated each time ``send_audio`` wakes us (a batch is
        due), in one ``input_audio_buffer.append``."""
        while True:
            if not self._wake.is_set():
                self._idle = True
                await self._wake.wait()
            self._idle = False
            self._wake.clear()
            ws = self._ws
            if ws is None or not self._buffer:
                continue
            audio = base64.b64encode(self._buffer).decode("ascii")
            self._buffer.clear()
            try:
                # base64 needs no JSON escaping, so skip json.dumps on the hot path.
                await ws.send_str(_APPEND_PREFIX + audio + '"}')
            except (aiohttp.ClientError, ConnectionError):
                self.dropped_bytes += len(audio) * 3 // 4  # the reader notices and reconnects


def _refused(error: SpeechError) -> bool:
    """The vendor refused our credentials: final, unlike any network or server failure."""
    return error.details.get("status") in (401, 403)


def _confidence(logprobs: object) -> float | None:
    """Mean token probability when the vendor sent logprobs, else None."""
    if not isinstance(logprobs, list) or not logprobs:
        return None
    values = [lp.get("logprob") for lp in logprobs if isinstance(lp, dict)]
    numbers = [float(v) for v in values if isinstance(v, int | float)]
    return math.exp(sum(numbers) / len(numbers)) if numbers else None
