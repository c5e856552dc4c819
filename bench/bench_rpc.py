"""JSON-RPC round trip over the Unix socket (SPEC 12: p99 <= 2 ms).

Starts a throwaway mock daemon, then measures, on one persistent connection, N calls alternating
`daemon.status` and `voicecall.status`; then the same with C concurrent clients (threads, one
connection each, N calls in total). Each round trip is send one line -> read one line.

Run: python bench/bench_rpc.py [--n 5000] [--clients 8]
Prints one summary line: rpc single p50/p99/max, concurrent p50/p99/max and calls/s.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import percentile, running_daemon

from daemon.rpc.client import RpcClient

METHODS = ("daemon.status", "voicecall.status")


def _series(socket_path: Path, n: int, out: list[float]) -> None:
    """`n` round trips on one connection, appending each in ms to `out`."""
    with RpcClient(socket_path, timeout=10) as client:
        for i in range(n):
            started = time.perf_counter()
            client.call(METHODS[i % 2])
            out.append((time.perf_counter() - started) * 1000)


def _concurrent(socket_path: Path, n: int, clients: int) -> tuple[list[float], float]:
    """`n` calls split over `clients` threads; returns latencies and wall seconds."""
    per = [[] for _ in range(clients)]  # type: list[list[float]]
    threads = [
        threading.Thread(target=_series, args=(socket_path, n // clients, per[i]))
        for i in range(clients)
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return [x for series in per for x in series], wall


def _fmt(name: str, values: list[float]) -> str:
    return (
        f"{name} p50={percentile(values, 50):.3f}ms p99={percentile(values, 99):.3f}ms "
        f"max={max(values):.2f}ms"
    )


def main() -> None:
    """Parse arguments, run both series, print the summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="round trips per series")
    parser.add_argument("--clients", type=int, default=8, help="concurrent connections")
    args = parser.parse_args()
    with running_daemon() as daemon:
        _series(daemon.socket, 200, [])  # warm-up
        single: list[float] = []
        started = time.perf_counter()
        _series(daemon.socket, args.n, single)
        single_wall = time.perf_counter() - started
        many, wall = _concurrent(daemon.socket, args.n, args.clients)
    print(
        f"rpc {_fmt('single', single)} rate={args.n / single_wall:.0f}/s | "
        f"{_fmt(f'concurrent{args.clients}', many)} rate={len(many) / wall:.0f}/s "
        f"n={args.n} target_p99<=2ms"
    )


if __name__ == "__main__":
    main()
