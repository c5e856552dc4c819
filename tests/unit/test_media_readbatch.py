"""Caller audio read a few frames at a time (daemon/media/readbatch.py), on real loopback TCP
sockets: the kernel's low-water mark gathers frames into one read, a message with nothing after
it is still delivered (the sweep lowers the mark), and the close is never held."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import cast

import pytest

from daemon.media.readbatch import SUPPORTED, ReadBatcher, batch_bytes
from tests.loops import BOTH_LOOPS, run_on

pytestmark = pytest.mark.skipif(not SUPPORTED, reason="SO_RCVLOWAT batching is Linux-only")

MESSAGE = b"m" * 300  # about the size of a Twilio media message


@dataclass
class Receiver(asyncio.Protocol):
    """The daemon's side: counts reads and bytes; `received` counts whole messages."""

    reads: int = 0
    data: bytearray = field(default_factory=bytearray)
    received: int = 0
    transport: asyncio.Transport | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self.reads += 1
        self.data += data
        self.received = len(self.data) // len(MESSAGE)

    def eof_received(self) -> bool:
        self.ended.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended.set()

    def __hash__(self) -> int:
        return id(self)


@asynccontextmanager
async def connected() -> AsyncIterator[tuple[Receiver, asyncio.StreamWriter]]:
    accepted: asyncio.Future[Receiver] = asyncio.get_running_loop().create_future()

    def factory() -> Receiver:
        receiver = Receiver()
        accepted.set_result(receiver)
        return receiver

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    receiver = await asyncio.wait_for(accepted, 5)
    try:
        yield receiver, writer
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


async def until(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until `condition` held; fails after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def send_frames(writer: asyncio.StreamWriter, count: int) -> None:
    """`count` messages 20 ms apart, as a provider sends caller audio."""
    for _ in range(count):
        writer.write(MESSAGE)
        await writer.drain()
        await asyncio.sleep(0.02)


async def test_flowing_audio_is_read_several_frames_at_a_time() -> None:
    for batch_ms, most_reads in ((60, 8), (0, None)):
        async with connected() as (receiver, writer):
            batcher = ReadBatcher(batch_ms, sweep_seconds=30.0)  # the sweep is not under test
            assert batcher.add(receiver, receiver.transport) is (batch_ms > 0)
            await send_frames(writer, 20)
            # Batched, the last 2 frames (under the 720-byte mark) wait for a sweep; not here.
            await until(lambda: receiver.received >= 18, 2)
            if most_reads is not None:
                assert receiver.reads <= most_reads  # 3 frames a read, not one
            else:
                assert receiver.reads >= 10  # unbatched: about a read per frame (some may merge)
            batcher.close()


async def test_a_message_with_nothing_after_it_is_delivered_by_the_sweep() -> None:
    """A mark echo after the caller's audio paused: held below the mark by the kernel until
    the sweep lowers it (without a sweep it would wait for more audio, possibly forever)."""
    for sweep, delivered_within in ((0.1, 2.0), (30.0, None)):
        async with connected() as (receiver, writer):
            batcher = ReadBatcher(60, sweep_seconds=sweep)
            assert batcher.add(receiver, receiver.transport)
            await send_frames(writer, 6)
            await until(lambda: receiver.received >= 6, 2)
            writer.write(MESSAGE)  # then nothing
            await writer.drain()
            if delivered_within is not None:
                waited = await until(lambda: receiver.received == 7, delivered_within)
                assert waited < delivered_within
                # Audio flowing again gets its batch back at the next sweep.
                await asyncio.sleep(0.25)
                reads = receiver.reads
                await send_frames(writer, 15)
                await until(lambda: receiver.received == 22, 2)
                assert receiver.reads - reads <= 10  # batched again (15 reads if not)
            else:
                await asyncio.sleep(0.3)
                assert receiver.received == 6  # the hazard the sweep exists for is real
            batcher.close()


async def test_the_close_is_reported_at_once_below_the_mark() -> None:
    async with connected() as (receiver, writer):
        batcher = ReadBatcher(200, sweep_seconds=30.0)
        assert batcher.add(receiver, receiver.transport)
        writer.write(b"stop")
        await writer.drain()
        writer.close()
        await asyncio.wait_for(receiver.ended.wait(), 0.5)
        assert bytes(receiver.data) == b"stop"
        batcher.close()


async def test_forgotten_sockets_stop_the_sweep() -> None:
    async with connected() as (receiver, _writer):
        batcher = ReadBatcher(60, sweep_seconds=0.01)
        assert batcher.add(receiver, receiver.transport)
        assert not batcher.add(receiver, receiver.transport)  # once per stream
        assert len(batcher) == 1
        batcher.discard(receiver)
        assert len(batcher) == 0 and batcher._timer is None
        assert not ReadBatcher(10).enabled  # under one frame: nothing to gather
        assert not ReadBatcher(60).add(receiver, None)


async def a_socket_closed_under_the_sweep() -> None:
    async with connected() as (receiver, _writer):
        batcher = ReadBatcher(60, sweep_seconds=0.01)
        assert batcher.add(receiver, receiver.transport)
        assert receiver.transport is not None
        receiver.transport.close()  # closed before its handler discarded it
        await asyncio.sleep(0.05)
        batcher.sweep()  # lowering the closed socket's mark fails quietly
        batcher.sweep()
        assert batcher._timer is not None  # and the sweep goes on for the others
        batcher.close()


@BOTH_LOOPS
def test_a_socket_closed_before_it_was_forgotten_does_not_stop_the_sweep(loop_kind: str) -> None:
    """uvloop (the daemon's loop) raises ValueError for a closed transport's socket, asyncio an
    OSError: neither may escape the sweep, whose end would leave messages held for good."""
    run_on(loop_kind, a_socket_closed_under_the_sweep)


def test_the_mark_counts_the_smallest_message_of_any_provider() -> None:
    assert batch_bytes(60) == 3 * 240
    assert batch_bytes(0) == batch_bytes(19) == 1
