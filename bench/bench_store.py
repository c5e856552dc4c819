"""Store write throughput and latency: `record()` (event + snapshot, durable) per backend.

    python bench/bench_store.py --backend sqlite
    python bench/bench_store.py --backend postgresql [--url postgresql://...]

Without --url the PostgreSQL run starts a throwaway local cluster (tests/pg_cluster.py; fsync off
there, so the figure is the store's own cost, not the disk's). Bounded: --events records spread
over --calls calls, --concurrency at a time, as the engine issues them (one call's writes are
serialised by its lock, different calls' writes overlap). --transcript N gives every call N
lines of transcript first (a long call: a line every 5 s is 720 lines an hour), stored once
before the timing starts as they would have been while they were said; --line-every K then adds
a line every K-th record (a turn is about three records and two lines). SQLite runs also report
the bytes the process wrote per record (WAL and checkpoints: `wchar` of /proc/self/io).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from _support import percentile

from daemon.model.events import CallMode, Direction, EventType
from daemon.model.record import CallRecord, TranscriptEntry, utc_now
from daemon.store.factory import create_store
from daemon.store.location import StoreLocation


def bytes_written() -> int:
    """Bytes this process has passed to write() so far (Linux; 0 elsewhere)."""
    try:
        for row in Path("/proc/self/io").read_text().splitlines():
            if row.startswith("wchar:"):
                return int(row.split()[1])
    except OSError:
        pass
    return 0


async def run(
    location: StoreLocation,
    events: int,
    calls: int,
    concurrency: int,
    transcript: int,
    line_every: int,
) -> None:
    store = create_store(location)
    await store.open()
    records = [
        CallRecord(
            f"bench-{i}",
            "mock",
            Direction.OUTBOUND,
            CallMode.CONVERSATION,
            "+15550001111",
            "+15550002222",
            provider_call_id=f"p-{i}",
        )
        for i in range(calls)
    ]
    line = "a sentence of about the length people say on the phone, give or take a few words"
    for record in records:
        record.transcript = [
            TranscriptEntry(utc_now(), "user" if n % 2 else "bot", line) for n in range(transcript)
        ]
    for record in records:  # the lines said so far, stored back when they were said
        await store.record(record, EventType.ANSWERED)
    per_call = events // calls
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def one_call(record: CallRecord) -> None:
        for n in range(per_call):
            async with gate:
                if line_every and n % line_every == 0:
                    record.transcript.append(TranscriptEntry(utc_now(), "user", line))
                started = time.perf_counter()
                await store.record(
                    record,
                    EventType.SPEECH,
                    {"transcript": f"turn {n}", "turnLatencyMs": 12.5},
                    dedupe_key=f"{record.call_id}:{n}",
                )
                latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    cpu = time.process_time()
    written = bytes_written()
    await asyncio.gather(*(one_call(r) for r in records))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    written = bytes_written() - written
    await store.close()
    done = len(latencies)
    disk = f"; {written / done / 1024:.1f} KiB written per record" if written else ""
    print(
        f"{location.kind.value}: {done} records in {elapsed:.2f} s = {done / elapsed:.0f}/s; "
        f"latency p50 {percentile(latencies, 50):.2f} ms, p99 {percentile(latencies, 99):.2f} "
        f"ms (concurrency {concurrency}, {calls} calls, {transcript} transcript lines each, "
        f"a new line every {line_every} records); CPU {cpu / done * 1e3:.3f} ms per record{disk}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--url", help="PostgreSQL URL (default: a throwaway local cluster)")
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--transcript", type=int, default=0, help="transcript lines per call")
    parser.add_argument(
        "--line-every", type=int, default=3, help="a new line every K records (0: none)"
    )
    args = parser.parse_args()
    folder = None
    server = None
    try:
        if args.backend == "sqlite":
            folder = Path(tempfile.mkdtemp(prefix="vc-bench-"))
            location = StoreLocation.sqlite(folder)
        else:
            url = args.url
            if url is None:
                from tests.pg_cluster import start_server

                server = start_server()
                url = server.new_database()
            location = StoreLocation.postgres(url)
        asyncio.run(
            run(
                location,
                args.events,
                args.calls,
                args.concurrency,
                args.transcript,
                args.line_every,
            )
        )
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
