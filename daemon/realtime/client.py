"""One websocket to the Realtime API: ordered sends, batched caller audio, a reader task.

Caller audio is on the hot path (50 frames a second per call). While the writer task is idle
(nothing queued, nothing waiting for the socket to drain), ``send_audio`` writes the
``input_audio_buffer.append`` at once, from the caller's own packet handler: no event, no task
wake-up and no loop turn between the caller's frame and the model's socket (SPEC 12, toolkit
latency per frame). Otherwise it appends to a buffer and wakes the writer task, which sends
what has accumulated as one append once what is ahead of it is out. Control events are sent
in order before any audio that was queued after them. Events queued
before the socket is open wait for it. The socket is not reopened when it drops: a new one
would be a new conversation without its history, so the owner is told (``on_lost``) and ends
the call's speech loudly instead.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import aiohttp

from daemon.realtime.protocol import AUDIO_APPEND_PREFIX, audio_delta_fields
from daemon.speech.vendor import connect_vendor_ws, redact
from daemon.speech.wsdirect import (
    attach_reader,
    detach_reader,
    direct_reading,
    direct_writer,
    write_text,
)

logger = logging.getLogger(__name__)

VENDOR = "OpenAI Realtime"
MAX_BUFFERED_BYTES = 16000
"""Caller audio kept while the writer catches up (2 s); older audio is dropped."""
CONNECT_TIMEOUT_SECONDS = 10.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class RealtimeSocket:
    """The connection of one call."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        url: str,
        api_key: str,
        on_event: Callable[[dict[str, Any]], None],
        on_lost: Callable[[str], None],
        on_audio: Callable[[str, str, str], None] | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    ) -> None:
        self._http = http
        self.url = url
        self._api_key = api_key
        self._on_event = on_event
        self._on_lost = on_lost
        self._on_audio = on_audio
        """Audio deltas, ``(item_id, response_id, base64)``, without a JSON parse."""
        self.connect_timeout = connect_timeout
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._outbox: deque[str] = deque()
        self._audio = bytearray()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.dropped_bytes = 0
        self._idle = False
        """The writer task waits for work with nothing in hand (the direct path may write)."""
        self._frames: Any = None
        """aiohttp's websocket frame writer of the open socket, when the direct path can use it
        (see :mod:`daemon.speech.wsdirect`)."""
        self.direct_sends = 0
        """Audio appends written by ``send_audio`` itself (the rest went through the task)."""

    @property
    def connected(self) -> bool:
        """True while the socket is open."""
        return self._ws is not None and not self._ws.closed

    async def open(self) -> None:
        """Connect and start the reader and writer.

        Raises:
            SpeechError: refused (HTTP status), unreachable or too slow; the key never appears.
        """
        with direct_reading(MAX_MESSAGE_BYTES):
            ws = await connect_vendor_ws(
                self._http,
                self.url,
                api_key=self._api_key,
                vendor=VENDOR,
                connect_timeout=self.connect_timeout,
                max_msg_size=MAX_MESSAGE_BYTES,
            )
        if self._closing:
            await ws.close()
            return
        self._ws = ws
        self._frames = direct_writer(ws)
        self._tasks = [
            asyncio.create_task(self._read(ws), name="realtime-reader"),
            asyncio.create_task(self._write(ws), name="realtime-writer"),
        ]
        self._wake.set()

    def send(self, event: dict[str, Any]) -> None:
        """Queue a client event (sent in order, after the socket opens)."""
        self._outbox.append(json.dumps(event, ensure_ascii=False))
        self._wake.set()

    def send_audio(self, ulaw: bytes) -> None:
        """Queue caller audio (mu-law 8 kHz); dropped while not connected."""
        if self._ws is None:
            self.dropped_bytes += len(ulaw)
            return
        audio = self._audio
        audio += ulaw
        excess = len(audio) - MAX_BUFFERED_BYTES
        if excess > 0:
            del audio[:excess]
            self.dropped_bytes += excess
        frames = self._frames
        if (
            self._idle
            and frames is not None
            and not self._outbox
            and write_text(
                frames, AUDIO_APPEND_PREFIX + base64.b64encode(audio).decode("ascii") + '"}'
            )
        ):
            audio.clear()
            self.direct_sends += 1
            return
        self._wake.set()

    async def close(self) -> None:
        """Stop both tasks and close the socket; idempotent, never reports a loss."""
        self._closing = True
        self._frames = None
        if self._ws is not None:
            detach_reader(self._ws)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    def forget_listeners(self) -> None:
        """Drop the callbacks once the socket is closed: they are the owner's bound methods,
        and would keep the owner in a reference cycle with this socket."""
        self._on_event = _ignore_event
        self._on_lost = _ignore_loss
        self._on_audio = None

    async def _write(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        outbox, audio = self._outbox, self._audio
        try:
            while True:
                if not self._wake.is_set():
                    self._idle = True
                    await self._wake.wait()
                self._idle = False
                self._wake.clear()
                while outbox:
                    await ws.send_str(outbox.popleft())
                if audio:
                    payload = base64.b64encode(audio).decode("ascii")
                    audio.clear()
                    await ws.send_str(AUDIO_APPEND_PREFIX + payload + '"}')
        except (aiohttp.ClientError, ConnectionError) as exc:
            self._frames = None
            if not self._closing:
                logger.warning("%s: sending failed: %s", VENDOR, exc)  # the reader reports it

    def _on_text(self, data: str) -> None:
        """A server event other than a fast-pathed audio delta: parsed and handed on."""
        try:
            event = json.loads(data)
        except ValueError:
            logger.warning("%s sent a frame that is not JSON; ignored", VENDOR)
            return
        if isinstance(event, dict):
            try:
                self._on_event(event)
            except Exception:
                logger.exception("%s: handling a %s event failed", VENDOR, event.get("type"))

    def _deliver(self, data: str) -> None:
        """One text message of the model's, from the reader task or straight from the
        socket's parser (:func:`~daemon.speech.wsdirect.attach_reader`)."""
        if self._closing:
            return
        on_audio = self._on_audio
        if on_audio is not None:
            fields = audio_delta_fields(data)
            if fields is not None:
                try:
                    on_audio(*fields)
                except Exception:
                    logger.exception("%s: handling an audio delta failed", VENDOR)
                return
        self._on_text(data)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Drains what arrived before the direct path could be attached, then waits for
        the close (and answers pings); text reaches ``_deliver`` without this task once
        attached."""
        reason = "the connection closed"
        deliver = self._deliver
        direct = attach_reader(ws, deliver)
        try:
            async for message in ws:
                if message.type is aiohttp.WSMsgType.TEXT:
                    deliver(message.data)
                    if not direct:
                        direct = attach_reader(ws, deliver)
                elif message.type is aiohttp.WSMsgType.ERROR:
                    reason = f"the connection failed ({ws.exception()})"
            if ws.close_code is not None:
                reason = f"the connection closed (code {ws.close_code})"
        except (aiohttp.ClientError, ConnectionError) as exc:
            reason = f"the connection failed ({type(exc).__name__})"
        detach_reader(ws)
        if not self._closing:
            self._closing = True
            self._on_lost(redact(reason, self._api_key))


def _ignore_event(event: dict[str, Any]) -> None:
    """A forgotten listener's event callback: the socket is closed."""
    del event


def _ignore_loss(reason: str) -> None:
    """A forgotten listener's loss callback: the socket is closed."""
    del reason
