"""Store write throughput and latency: `record()` (event + snapshot, durable) per backend.

    python bench/bench_store.py --backend sqlite
    python bench/bench_store.py --backend postgresql [--url postgresql://...]

Without --url the PostgreSQL run starts a throwaway local cluster (tests/pg_cluster.py; fsync off
there, so the figure is the store's own cost, not the disk's). Bounded: --events records spread
over --calls calls, --concurrency at a time, as the engine issues them (one call's writes are
serialised by its lock, different calls' writes overlap).
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
from daemon.model.record import CallRecord
from daemon.store.factory import create_store
from daemon.store.location import StoreLocation


async def run(location: StoreLocation, events: int, calls: int, concurrency: int) -> None:
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
    per_call = events // calls
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def one_call(record: CallRecord) -> None:
        for n in range(per_call):
            async with gate:
                started = time.perf_counter()
                await store.record(
                    record,
                    EventType.SPEECH,
                    {"transcript": f"turn {n}", "turnLatencyMs": 12.5},
                    dedupe_key=f"{record.call_id}:{n}",
                )
                latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(one_call(r) for r in records))
    elapsed = time.perf_counter() - started
    await store.close()
    done = len(latencies)
    print(
        f"{location.kind.value}: {done} records in {elapsed:.2f} s = {done / elapsed:.0f}/s; "
        f"latency p50 {percentile(latencies, 50):.2f} ms, p99 {percentile(latencies, 99):.2f} "
        f"ms (concurrency {concurrency}, {calls} calls)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--url", help="PostgreSQL URL (default: a throwaway local cluster)")
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=16)
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
        asyncio.run(run(location, args.events, args.calls, args.concurrency))
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
