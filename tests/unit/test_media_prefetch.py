"""Speech synthesised while its stream is on the way (daemon.media.prefetch) and the hub's
bookkeeping of it: bounded buffer, errors after audio, cancellation, order of speech."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from daemon.errors import SpeechError
from daemon.media.hub import MediaHub
from daemon.media.prefetch import PREFETCH_MAX_BYTES, Prefetch
from daemon.model.events import CallMode, Direction, ProviderEvent
from daemon.model.record import CallRecord
from daemon.providers.streaming import speak_over_stream


class SlowTts:
    """Yields `chunks` chunks of `size` bytes, each once `gate` lets it through."""

    name = "slow"

    def __init__(self, chunks: int = 4, size: int = 1600, fail_after: int | None = None) -> None:
        self.chunks = chunks
        self.size = size
        self.fail_after = fail_after
        self.gate = asyncio.Semaphore(0)
        self.produced = 0
        self.closed = False
        self.texts: list[str] = []

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.texts.append(text)
        try:
            for n in range(self.chunks):
                if self.fail_after is not None and n == self.fail_after:
                    raise SpeechError("vendor went away")
                await self.gate.acquire()
                self.produced += 1
                yield bytes([n % 256]) * self.size
        finally:
            self.closed = True


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_audio_made_before_the_stream_plays_first_then_the_rest_flows() -> None:
    tts = SlowTts(chunks=4)
    fetch = Prefetch(tts, "Hello.")
    tts.gate.release()
    tts.gate.release()
    await settle()
    assert fetch.buffered == 2 * 1600  # synthesised with nobody listening yet
    received = []
    source = fetch.chunks()
    received.append(await anext(source))
    received.append(await anext(source))
    tts.gate.release()
    tts.gate.release()
    received.extend([chunk async for chunk in source])
    assert [chunk[0] for chunk in received] == [0, 1, 2, 3]
    assert tts.closed


async def test_the_buffer_is_bounded_and_reading_resumes_when_taken() -> None:
    size = 8000
    tts = SlowTts(chunks=PREFETCH_MAX_BYTES // size + 5, size=size)
    fetch = Prefetch(tts, "A long greeting.")
    for _ in range(tts.chunks):
        tts.gate.release()
    await settle()
    assert fetch.buffered == PREFETCH_MAX_BYTES  # paused at the cap, not read to the end
    assert tts.produced == PREFETCH_MAX_BYTES // size
    total = sum([len(chunk) async for chunk in fetch.chunks()])
    assert total == tts.chunks * size


async def test_a_failure_after_some_audio_reaches_the_session_after_that_audio() -> None:
    tts = SlowTts(chunks=4, fail_after=1)
    fetch = Prefetch(tts, "Hello.")
    tts.gate.release()
    got = []
    with pytest.raises(SpeechError, match="vendor went away"):
        async for chunk in fetch.chunks():
            got.append(chunk)
    assert len(got) == 1


async def test_cancel_closes_the_vendor_request_and_drops_the_audio() -> None:
    tts = SlowTts(chunks=4)
    fetch = Prefetch(tts, "Hello.")
    tts.gate.release()
    await settle()
    fetch.cancel()
    await settle()
    assert tts.closed and fetch.buffered == 0 and fetch.task.done()


async def ignore(events: Sequence[ProviderEvent]) -> None:
    del events


async def test_the_hub_hands_the_prefetch_only_to_the_same_first_sentence() -> None:
    tts = SlowTts(chunks=1)
    hub = MediaHub(ignore, tts=tts)
    hub.prefetch("c1", None, "Hello there. How can I help?")
    await settle()
    assert tts.texts == ["Hello there."]  # only the first sentence ahead
    assert hub.take_prefetch("c1", "Something else.") is None  # speech is said in order
    await settle()
    assert tts.closed
    assert hub.take_prefetch("c1", "Hello there.") is None  # used or dropped: once

    hub.prefetch("c2", None, "Hi.")
    tts.gate.release()
    source = hub.take_prefetch("c2", "Hi.")
    assert source is not None
    assert [len(chunk) async for chunk in source] == [1600]
    await hub.close()


async def test_a_call_that_ends_before_its_stream_drops_its_prefetch() -> None:
    tts = SlowTts(chunks=2)
    hub = MediaHub(ignore, tts=tts)
    hub.prefetch("c1", None, "Hello.")
    await settle()
    hub.revoke("c1")
    await settle()
    assert tts.closed
    assert hub.take_prefetch("c1", "Hello.") is None
    await hub.close()


async def test_no_prefetch_without_tts_or_in_realtime_mode() -> None:
    hub = MediaHub(ignore, tts=None)
    hub.prefetch("c1", None, "Hello.")
    assert hub.take_prefetch("c1", "Hello.") is None
    tts = SlowTts()
    realtime_hub = MediaHub(ignore, tts=tts)

    class Realtime:
        async def attach(self, session: object) -> bool:
            return True

    realtime_hub.realtime = Realtime()  # type: ignore[assignment]
    realtime_hub.prefetch("c1", None, "Hello.")
    await settle()
    assert tts.texts == []
    await hub.close()
    await realtime_hub.close()


def call_record(call_id: str) -> CallRecord:
    return CallRecord(
        call_id, "telnyx", Direction.OUTBOUND, CallMode.CONVERSATION, "+15550100000", "+15550001234"
    )


async def test_speech_that_falls_back_to_the_providers_voice_gives_up_its_prefetch() -> None:
    """The stream failed (or never came): the provider speaks with its own voice, so the audio
    synthesised ahead is dropped at once, not held (a vendor request open) until the call ends."""
    for abandoned in (True, False):
        tts = SlowTts(chunks=3)
        hub = MediaHub(ignore, tts=tts)
        hub.prefetch("c1", None, "Hi, it is the clinic.")
        await settle()  # the vendor request is open
        abandon = asyncio.Event()
        if abandoned:
            abandon.set()
        spoken = await speak_over_stream(
            hub,
            call_record("c1"),
            "Hi, it is the clinic.",
            None,
            wait_seconds=0.05,
            fallback="the provider's speech",
            abandon=abandon,
        )
        assert spoken is False
        await settle()
        assert tts.texts == ["Hi, it is the clinic."]
        assert tts.closed  # the vendor request was cancelled
        assert hub.take_prefetch("c1", "Hi, it is the clinic.") is None
        await hub.close()
