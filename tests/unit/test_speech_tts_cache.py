"""Repeated sentences said from memory (daemon.speech.tts.cache): admission on the second
request, one vendor request shared by every call saying a sentence meanwhile, failures not
kept, bounds on text, audio and the whole cache, and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from daemon.errors import SpeechError
from daemon.speech.tts import cache as cache_module
from daemon.speech.tts.cache import CachedTts, cached
from tests.harness import until_async as until


class GatedTts:
    """A vendor engine: `chunks` chunks per request, each let through by `gate` (or at once
    when `gated` is False); chunk bytes name the request so a test sees whose audio it got."""

    name = "gated"

    def __init__(self, chunks: int = 3, size: int = 4, *, gated: bool = False) -> None:
        self.chunks = chunks
        self.size = size
        self.gated = gated
        self.gate = asyncio.Semaphore(0)
        self.texts: list[str] = []
        self.fail_after: int | None = None
        self.open = 0

    def let(self, chunks: int) -> None:
        for _ in range(chunks):
            self.gate.release()

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.texts.append(text)
        request = len(self.texts)
        self.open += 1
        try:
            for n in range(self.chunks):
                if self.fail_after is not None and n == self.fail_after:
                    raise SpeechError("gated TTS: HTTP 500 from http://vendor/speech")
                if self.gated:
                    await self.gate.acquire()
                yield bytes([request, n]) * (self.size // 2)
        finally:
            self.open -= 1


async def said(engine: CachedTts, text: str) -> bytes:
    return b"".join([chunk async for chunk in engine.synthesize(text)])


async def asked_once(text: str, vendor: GatedTts) -> CachedTts:
    """A cache over `vendor` that has said `text` once: its next request for it starts a fill."""
    engine = CachedTts(vendor)
    await said(engine, text)
    return engine


async def test_a_sentence_is_kept_from_its_second_request_and_then_said_from_memory() -> None:
    vendor = GatedTts()
    engine = CachedTts(vendor)
    first = await said(engine, "Hello, Acme clinic.")
    assert engine.kept_bytes == 0  # once is not yet "again"
    second = await said(engine, "Hello, Acme clinic.")
    assert engine.kept_bytes == len(second) == 12
    third = await said(engine, "Hello, Acme clinic.")
    fourth = await said(engine, "Hello, Acme clinic.")
    assert vendor.texts == ["Hello, Acme clinic."] * 2
    assert third == fourth == second  # the second request's audio, byte for byte
    assert first != second  # the first was the vendor's own (request 1)
    assert (engine.vendor_requests, engine.said_from_memory) == (2, 2)


async def test_replies_said_once_pass_through_and_keep_nothing() -> None:
    vendor = GatedTts()
    engine = CachedTts(vendor)
    for n in range(20):
        await said(engine, f"Reply number {n}.")
    assert engine.kept_bytes == 0
    assert len(vendor.texts) == 20
    assert engine.said_from_memory == 0


async def test_calls_saying_a_sentence_meanwhile_share_one_vendor_request() -> None:
    vendor = GatedTts(chunks=4, gated=True)
    engine = CachedTts(vendor)
    first = asyncio.create_task(said(engine, "Welcome."))
    vendor.let(4)
    await first
    # The second request starts the fill; three more calls arrive while it is under way.
    listeners = [asyncio.create_task(said(engine, "Welcome.")) for _ in range(4)]
    await asyncio.sleep(0)
    vendor.let(1)
    await asyncio.sleep(0.01)
    assert not any(t.done() for t in listeners)
    vendor.let(3)
    audio = await asyncio.gather(*listeners)
    assert len(vendor.texts) == 2
    assert all(a == audio[0] for a in audio) and len(audio[0]) == 16
    assert engine.kept_bytes == 16


async def test_a_slow_listener_hears_everything_while_the_fill_runs_ahead() -> None:
    engine = await asked_once("Hi.", GatedTts(chunks=5))
    slow = engine.synthesize("Hi.")
    got = [await anext(slow)]
    await until(lambda: engine.kept_bytes == 20, 2, "the fill to read the whole answer")
    got += [chunk async for chunk in slow]
    assert b"".join(got) == await said(engine, "Hi.")


async def test_a_failed_fill_raises_after_its_audio_and_is_asked_again_next_time() -> None:
    vendor = GatedTts(chunks=3)
    engine = await asked_once("Hello.", vendor)
    vendor.fail_after = 2
    heard: list[bytes] = []
    with pytest.raises(SpeechError, match="HTTP 500"):
        async for chunk in engine.synthesize("Hello."):
            heard.append(chunk)
    assert len(heard) == 2  # what arrived before the failure was said
    assert engine.kept_bytes == 0
    vendor.fail_after = None
    await said(engine, "Hello.")  # not kept, so asked again (and seen again)
    await said(engine, "Hello.")
    assert len(vendor.texts) == 4
    assert engine.kept_bytes == 12


async def test_a_listener_that_stops_early_leaves_the_fill_to_finish() -> None:
    vendor = GatedTts(chunks=4)
    engine = await asked_once("Good morning.", vendor)
    barged = engine.synthesize("Good morning.")
    await anext(barged)
    await barged.aclose()  # type: ignore[attr-defined]  # barge-in
    await until(lambda: engine.kept_bytes == 16, 2, "the fill to finish and be kept")
    assert vendor.open == 0


async def test_long_texts_are_never_kept() -> None:
    vendor = GatedTts()
    engine = CachedTts(vendor)
    text = "x" * (cache_module.TEXT_MAX_CHARS + 1)
    for _ in range(3):
        await said(engine, text)
    assert len(vendor.texts) == 3 and engine.kept_bytes == 0


async def test_audio_over_a_minute_is_cut_and_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "ENTRY_MAX_BYTES", 10)
    vendor = GatedTts(chunks=4)
    engine = await asked_once("Endless.", vendor)
    assert len(await said(engine, "Endless.")) == 8  # two whole chunks fit under the cap
    assert engine.kept_bytes == 0
    await said(engine, "Endless.")
    assert len(vendor.texts) == 3


async def test_the_least_recently_said_sentence_leaves_first() -> None:
    vendor = GatedTts(chunks=1, size=100)
    engine = CachedTts(vendor, max_bytes=250)
    for text in ("A.", "A.", "B.", "B."):
        await said(engine, text)
    await said(engine, "A.")  # said from memory: now the most recent
    for text in ("C.", "C."):
        await said(engine, text)
    assert engine.kept_bytes == 200
    asked = len(vendor.texts)
    await said(engine, "A.")
    await said(engine, "C.")
    assert len(vendor.texts) == asked  # both still kept
    await said(engine, "B.")
    assert len(vendor.texts) == asked + 1  # B went out


async def test_texts_waiting_for_a_second_request_are_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cache_module, "SEEN_TEXTS", 3)
    vendor = GatedTts()
    engine = CachedTts(vendor)
    for text in ("A.", "B.", "C.", "D."):
        await said(engine, text)
    await said(engine, "A.")  # forgotten: a first request again
    assert engine.kept_bytes == 0
    await said(engine, "D.")  # remembered: kept now
    assert engine.kept_bytes == 12


async def test_close_stops_a_fill_and_its_listeners_get_an_error() -> None:
    vendor = GatedTts(chunks=3, gated=True)
    vendor.let(3)
    engine = await asked_once("Bye.", vendor)
    listener = asyncio.create_task(said(engine, "Bye."))
    await until(lambda: vendor.open == 1, 2, "the fill's vendor request")
    await engine.close()
    with pytest.raises(SpeechError, match="shutting down"):
        await listener
    assert vendor.open == 0
    assert engine.kept_bytes == 0


async def test_close_before_a_fill_ever_ran_still_ends_its_listeners() -> None:
    engine = await asked_once("Now.", GatedTts())
    listener = engine.synthesize("Now.")  # the fill task exists but has not run yet
    await engine.close()
    with pytest.raises(SpeechError, match="shutting down"):
        async with asyncio.timeout(2):
            async for _ in listener:
                pass


def test_no_engine_stays_no_engine() -> None:
    assert cached(None) is None
    engine = cached(GatedTts())
    assert isinstance(engine, CachedTts) and engine.name == "gated"


async def test_an_unexpected_vendor_bug_is_a_speech_error_for_every_listener() -> None:
    class Broken(GatedTts):
        async def synthesize(self, text: str) -> AsyncIterator[bytes]:
            self.texts.append(text)
            yield b"ab"
            raise ValueError("parser bug")

    vendor = Broken()
    engine = CachedTts(vendor)
    with contextlib.suppress(ValueError):
        await said(engine, "Oops.")
    results = await asyncio.gather(
        said(engine, "Oops."), said(engine, "Oops."), return_exceptions=True
    )
    assert all(isinstance(r, SpeechError) and "ValueError" in r.message for r in results)
    assert engine.kept_bytes == 0
