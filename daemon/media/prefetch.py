"""Speech synthesised while its stream is still on the way.

A call answered with a media stream speaks first (the greeting) before the provider has even
opened the websocket: the provider gets our answer, then connects back, which takes from a few
milliseconds (a local load generator) to about a second (a real carrier). Waiting for the
stream before asking the TTS vendor puts the vendor's first-byte time (100-800 ms for OpenAI)
after that, on the caller's ear. So the first sentence of speech queued for a stream that has
not started is synthesised at once into a bounded buffer, and the session that binds takes the
buffer over and plays it from the first frame; what the vendor sends after that flows through
as usual.

A prefetch is given up (the vendor request cancelled) when the call ends, when the stream does
not start within ``PREFETCH_SECONDS``, or when the session's first sentence is another one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from daemon.media.codecs import FRAME_BYTES
from daemon.media.deferral import Deferral
from daemon.media.playback import DEFAULT_CAPACITY_FRAMES
from daemon.speech.tts.base import TtsEngine

PREFETCH_SECONDS = 20.0
"""How long synthesised speech waits for its stream before it is dropped (the engine still
speaks it, synthesised again, if the stream starts later)."""
PREFETCH_MAX_BYTES = DEFAULT_CAPACITY_FRAMES * FRAME_BYTES
"""Audio buffered ahead of the stream; reading the vendor pauses there. As much as the stream's
playback queue holds (3 s of 8 kHz mu-law), so a new call synthesises no more up front than it
would with its stream already there. It was 10 s: with a vendor faster than real time every
new call then resampled and encoded 10 s of audio at once, and at the top of a 50 calls/s ramp
to 400 calls that front-loaded work filled the daemon's core (docs/benchmarks.md)."""


class Prefetch:
    """One sentence being synthesised into a buffer until a session takes it."""

    __slots__ = (
        "_arrived",
        "_buffer",
        "_deferral",
        "_error",
        "_finished",
        "_room",
        "_size",
        "task",
        "text",
    )

    def __init__(self, tts: TtsEngine, text: str, deferral: Deferral | None = None) -> None:
        """``deferral``: the pacer's, so audio buffered ahead waits while the loop is behind."""
        self.text = text
        self._deferral = deferral
        self._buffer: deque[bytes] = deque()
        self._size = 0
        self._finished = False
        self._error: BaseException | None = None
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.task = asyncio.create_task(self._fill(tts.synthesize(text)), name="tts-prefetch")

    @property
    def buffered(self) -> int:
        """Bytes of audio waiting to be taken."""
        return self._size

    async def _fill(self, source: AsyncIterator[bytes]) -> None:
        try:
            async for chunk in source:
                self._buffer.append(chunk)
                self._size += len(chunk)
                self._arrived.set()
                while self._size >= PREFETCH_MAX_BYTES:
                    self._room.clear()
                    await self._room.wait()
                deferral = self._deferral
                if deferral is not None and deferral.strained:
                    await deferral.wait(self._frames)
        except asyncio.CancelledError:
            # Ended by `cancel()` (or shutdown): nothing to keep. Re-raised, the cancellation
            # would stay on the task with a traceback whose frame holds this prefetch, which
            # holds the task: a reference cycle per greeting cut short.
            return
        except Exception as exc:  # handed to the session, which reports it like its own
            self._error = exc
        finally:
            self._finished = True
            self._arrived.set()
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def _frames(self) -> int:
        return self._size // FRAME_BYTES

    async def chunks(self) -> AsyncIterator[bytes]:
        """What was synthesised so far, then the rest as it comes (the session's TTS source).

        Raises what synthesis raised (a ``SpeechError``), after the audio before it.
        """
        try:
            while True:
                if self._buffer:
                    chunk = self._buffer.popleft()
                    self._size -= len(chunk)
                    if self._size < PREFETCH_MAX_BYTES:
                        self._room.set()
                    yield chunk
                    continue
                if self._finished:
                    break
                self._arrived.clear()
                await self._arrived.wait()
            if self._error is not None:
                raise self._error
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Stop synthesising (the vendor request is closed) and drop the audio."""
        if not self.task.done():
            self.task.cancel()
        self._buffer.clear()
        self._size = 0
