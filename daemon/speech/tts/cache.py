"""Speech said on many calls, synthesised once: the greeting every inbound call opens with.

Every inbound call to a number opens with the same `inbound_greeting`. Asking the vendor anew
for each call puts the vendor's first-byte time (100-800 ms for OpenAI) on the caller's ear
again when the stream is there first, pays for the same audio again, and costs the daemon the
HTTP reads, resampling and mu-law encoding of it: 1.7 ms of its core per new call at the top of
a 50 calls/s ramp to 400 calls, a third of all a new streamed call costs (docs/benchmarks.md).
So the telephony audio of a sentence asked for again is kept in memory and said from there.

Admission: a sentence is kept from its *second* request on, while its first is still
remembered (the last :data:`SEEN_TEXTS` texts). A model's replies are new sentences almost
every time: they pass through untouched, as without a cache (read at the pace of the call's
playback, never held whole), and only their text is remembered, so they cannot push the
greetings out.

Sharing: the second request starts one *fill*, a task that reads the vendor's answer whole, as
fast as the vendor sends it, into one list of chunks; that request and every other one for the
same sentence meanwhile follow the list, each at its own call's pace. A ramp of fifty calls a
second thus asks the vendor twice for its greeting, not fifty times; once the fill finished,
the audio is said from memory and the vendor is not asked again.

Bounds: only sentences up to :data:`TEXT_MAX_CHARS` are kept; one sentence's audio stops at
:data:`ENTRY_MAX_BYTES` (a minute: a vendor that sends more is cut there, logged, and that
sentence is not kept); the whole cache holds at most ``max_bytes`` of audio, the least
recently said out first. A fill that fails raises the vendor's error in each follower once it
has said what arrived before it, and is not kept: the next request asks the vendor again. The
cache belongs to one engine (the call TTS, or a number table's own), so audio is said only in
the voice it was made with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator

from daemon.errors import SpeechError
from daemon.media.codecs import SAMPLE_RATE
from daemon.speech.tts.base import TtsEngine

logger = logging.getLogger(__name__)

TEXT_MAX_CHARS = 300
"""Longer texts are never kept (a greeting sentence is far shorter)."""
SEEN_TEXTS = 1024
"""How many texts said once are remembered, waiting for a second request."""
ENTRY_MAX_BYTES = 60 * SAMPLE_RATE
"""One sentence's audio is cut at a minute of 8 kHz mu-law (a 300-character sentence takes
about 20 s to say)."""
CACHE_MAX_BYTES = 16 * 1024 * 1024
"""Audio kept in all (about 35 minutes of 8 kHz mu-law)."""


class _Fill:
    """One sentence being read whole from the vendor, followed by the calls that say it."""

    __slots__ = ("chunks", "done", "error", "grown", "size", "task")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.done = False
        self.error: SpeechError | None = None
        self.grown = asyncio.Event()
        """Set (then replaced) each time a chunk arrives or the fill ends."""
        self.task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Tell every follower waiting now that there is more (or the end)."""
        grown, self.grown = self.grown, asyncio.Event()
        grown.set()

    def end(self, error: SpeechError | None = None) -> None:
        """No more chunks (``error``: why not): wake every follower a last time."""
        if error is not None:
            self.error = error
        self.done = True
        self.wake()


class CachedTts:
    """A :class:`~daemon.speech.tts.base.TtsEngine` that says repeated sentences from memory."""

    def __init__(self, inner: TtsEngine, *, max_bytes: int = CACHE_MAX_BYTES) -> None:
        """Wrap ``inner`` (a vendor engine) with a cache of at most ``max_bytes`` of audio."""
        self.inner = inner
        self.name = inner.name
        self.max_bytes = max_bytes
        self._kept: OrderedDict[str, tuple[bytes, ...]] = OrderedDict()
        self._kept_bytes = 0
        self._filling: dict[str, _Fill] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.said_from_memory = 0
        """Requests answered from a kept or filling sentence (no vendor request of their own)."""
        self.vendor_requests = 0
        """Requests that asked the vendor (passed through, or a fill)."""

    def __repr__(self) -> str:
        return f"CachedTts({self.inner!r}, {len(self._kept)} sentences, {self._kept_bytes} bytes)"

    @property
    def kept_bytes(self) -> int:
        """Audio held for finished sentences."""
        return self._kept_bytes

    def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Yield ``text`` spoken as mu-law 8 kHz chunks: from memory, a fill, or the vendor."""
        kept = self._kept.get(text)
        if kept is not None:
            self._kept.move_to_end(text)
            self.said_from_memory += 1
            return _replay(kept)
        fill = self._filling.get(text)
        if fill is not None:
            self.said_from_memory += 1
            return _follow(fill)
        self.vendor_requests += 1
        if len(text) > TEXT_MAX_CHARS or not self._seen_before(text):
            return self.inner.synthesize(text)
        fill = _Fill()
        self._filling[text] = fill
        fill.task = asyncio.create_task(self._fill(text, fill), name="tts-cache-fill")
        return _follow(fill)

    def _seen_before(self, text: str) -> bool:
        """Whether ``text`` was asked for recently; remembers it either way."""
        if text in self._seen:
            del self._seen[text]  # a fill starts now: kept from here on, or asked afresh
            return True
        self._seen[text] = None
        if len(self._seen) > SEEN_TEXTS:
            self._seen.popitem(last=False)
        return False

    async def _fill(self, text: str, fill: _Fill) -> None:
        source = self.inner.synthesize(text)
        whole = True
        try:
            async for chunk in source:
                if fill.size + len(chunk) > ENTRY_MAX_BYTES:
                    logger.warning(
                        "%s TTS sent more than %d s of audio for a %d-character sentence: "
                        "said up to there, not kept",
                        self.name,
                        ENTRY_MAX_BYTES // SAMPLE_RATE,
                        len(text),
                    )
                    whole = False
                    break
                fill.chunks.append(chunk)
                fill.size += len(chunk)
                fill.wake()
        except asyncio.CancelledError:
            fill.error = self._stopped()
            raise
        except SpeechError as exc:
            fill.error = exc
        except Exception as exc:
            logger.exception("%s TTS: synthesis failed", self.name)
            fill.error = SpeechError(f"{self.name} TTS: synthesis failed ({type(exc).__name__})")
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            self._filling.pop(text, None)
            fill.end()
        if whole and fill.error is None:
            self._keep(text, tuple(fill.chunks), fill.size)

    def _keep(self, text: str, chunks: tuple[bytes, ...], size: int) -> None:
        if size > self.max_bytes:
            return
        self._kept[text] = chunks
        self._kept_bytes += size
        while self._kept_bytes > self.max_bytes:
            _, old = self._kept.popitem(last=False)
            self._kept_bytes -= sum(len(chunk) for chunk in old)

    async def close(self) -> None:
        """Stop the fills under way (their followers get a ``SpeechError``)."""
        fills = list(self._filling.values())
        tasks = [fill.task for fill in fills if fill.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for fill in fills:
            if not fill.done:  # cancelled before it ever ran: its own ending never came
                fill.end(self._stopped())
        self._filling.clear()

    def _stopped(self) -> SpeechError:
        return SpeechError(f"{self.name} TTS: synthesis stopped (shutting down)")


def cached(engine: TtsEngine | None) -> TtsEngine | None:
    """``engine`` with a cache of repeated sentences (None stays None)."""
    return None if engine is None else CachedTts(engine)


async def _replay(chunks: tuple[bytes, ...]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _follow(fill: _Fill) -> AsyncIterator[bytes]:
    """The fill's chunks from the first, then each as it arrives; its error at the end."""
    index = 0
    while True:
        if index < len(fill.chunks):
            chunk = fill.chunks[index]
            index += 1
            yield chunk
            continue
        if fill.done:
            break
        await fill.grown.wait()
    if fill.error is not None:
        raise SpeechError(fill.error.message, **fill.error.details)
