"""Concurrent Twilio media streams at real time (SPEC 12: >= 500 streams, outbound frame-interval
p99 jitter <= 10 ms, no gap > 60 ms, <= 2 MiB per streamed call).

For each level of --n, starts two processes:
- bench/stream_server.py: the daemon's real media plane (install_media on an aiohttp app,
  MediaHub, the one Pacer, MediaSession/Playback/FrameWriter, uvloop, gc.freeze) with a faked
  engine, an endless instant TTS (every stream talks all the time) and a no-op STT; it issues N
  stream tokens and records per-frame send times with the pacer's benchmark hook;
- bench/stream_client.py: N Twilio websockets (signed upgrade, connected/start with the token,
  160-byte media every 20 ms in, marks echoed) recording the arrival time of every frame out.
After all streams are up and --warmup seconds have passed, both processes are told `mark`;
--seconds later `report`. Jitter is |interval - 20 ms| between consecutive frames of one
stream, pooled over all streams; the first 5 frames of each stream (sent together by design,
the 80 ms lead) are skipped. The server figure is what the daemon's loop did; the client
figure adds the client's own scheduling (it shares the 2 cores). CPU is from /proc/<pid>/stat
over the steady window (100 % = one core); rss_per_stream = (server RSS at the mark - RSS
with no stream) / N.

Run: python bench/bench_streams.py [--n 100,250,500] [--seconds 20] [--warmup 3]
Prints one summary line per level.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _procs import command, cpu_seconds, expect, rss_kib  # noqa: E402
from stream_server import AUTH_TOKEN  # noqa: E402


def run_level(
    n: int, seconds: float, warmup: float, log: IO[str], refreeze: bool = False
) -> dict[str, Any]:
    """One level: server + client processes, steady window, both reports."""
    extra = ["--refreeze"] if refreeze else []
    server = subprocess.Popen(
        [sys.executable, str(HERE / "stream_server.py"), "--n", str(n), *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    client = None
    try:
        ready = json.loads(expect(server, "READY ", 30))
        time.sleep(0.5)
        idle_rss = rss_kib(server.pid)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(ready["calls"], f)
            calls_file = f.name
        client = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "stream_client.py"),
                "--port",
                str(ready["port"]),
                "--calls",
                calls_file,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "BENCH_TWILIO_TOKEN": AUTH_TOKEN},
        )
        connected = expect(client, "CONNECTED ", 120).split()
        os.unlink(calls_file)
        time.sleep(warmup)
        server_cpu0, client_cpu0 = cpu_seconds(server.pid), cpu_seconds(client.pid)
        wall0 = time.monotonic()
        command(server, "mark")
        command(client, "mark")
        expect(server, "MARKED ", 10)
        expect(client, "MARKED ", 10)
        busy_rss = rss_kib(server.pid)
        time.sleep(seconds)
        wall = time.monotonic() - wall0
        server_cpu = (cpu_seconds(server.pid) - server_cpu0) / wall * 100
        client_cpu = (cpu_seconds(client.pid) - client_cpu0) / wall * 100
        end_rss = rss_kib(server.pid)
        command(server, "report")
        command(client, "report")
        srv = json.loads(expect(server, "REPORT ", 60))
        cli = json.loads(expect(client, "REPORT ", 60))
    finally:
        for proc in (client, server):
            if proc is not None and proc.poll() is None:
                proc.kill()
            if proc is not None:
                proc.wait()
    return {
        "n": n,
        "connected": int(connected[0]),
        "connect_s": float(connected[1]),
        "server": srv,
        "client": cli,
        "server_cpu": server_cpu,
        "client_cpu": client_cpu,
        "idle_rss": idle_rss,
        "busy_rss": busy_rss,
        "end_rss": end_rss,
        "rss_per_stream": (busy_rss - idle_rss) / 1024 / n,
        "seconds": wall,
    }


def summary(r: dict[str, Any]) -> str:
    """The one-line summary of a level."""
    s, c = r["server"], r["client"]
    return (
        f"streams={r['n']} bound={s['sessions']} "
        f"server_send_jitter p50={s['jitter_p50']:.1f}ms p99={s['jitter_p99']:.1f}ms "
        f"max_gap={s['max_gap']:.0f}ms gaps>60ms={s['gaps_over_60']} "
        f"tick_late_p99={s['tick_late_p99']:.1f}ms "
        f"gc2={s['gc']['2'][0]}x/max{s['gc']['2'][1]}ms | "
        f"client_recv_jitter p50={c['jitter_p50']:.1f}ms p99={c['jitter_p99']:.1f}ms "
        f"max_gap={c['max_gap']:.0f}ms gaps>60ms={c['gaps_over_60']} | "
        f"server_cpu={r['server_cpu']:.0f}% client_cpu={r['client_cpu']:.0f}% "
        f"rss_idle={r['idle_rss'] / 1024:.0f}MiB rss_busy={r['busy_rss'] / 1024:.0f}MiB "
        f"rss_per_stream={r['rss_per_stream']:.3f}MiB | frames_out={s['frames']} "
        f"in={c['inbound_sent']} skipped_in_ticks={c['inbound_ticks_skipped']} "
        f"window={r['seconds']:.0f}s target: n>=500 p99<=10ms gap<=60ms rss<=2MiB"
    )


def main() -> None:
    """Parse arguments, run each level, print one summary line per level."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="500", help="streams; a comma list ramps (100,250,500)")
    parser.add_argument("--seconds", type=float, default=20.0, help="steady window per level")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after connecting")
    parser.add_argument("--log", default=os.devnull, help="server/client stderr goes here")
    parser.add_argument("--json", action="store_true", help="also print the raw figures")
    parser.add_argument(
        "--refreeze",
        action="store_true",
        help="experiment: the server freezes the GC again once streams are up",
    )
    args = parser.parse_args()
    with open(args.log, "a") as log:
        for n in (int(x) for x in args.n.split(",")):
            result = run_level(n, args.seconds, args.warmup, log, args.refreeze)
            print(summary(result), flush=True)
            if args.json:
                print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
