"""Realtime voice-to-voice mode on the REAL daemon: the toolkit's added latency per frame,
each way, at N concurrent calls (SPEC 12: p99 <= 5 ms at 100 calls).

Three processes, as in bench_daemon_streams.py (whose process plumbing this reuses):
- `voicecall daemon run` (the real CLI entry point exec'd into the daemon: engine, SQLite store,
  webhook server, media plane, realtime bridges), Twilio provider, `[streaming]` and
  `[realtime]` on, pinned to --daemon-core;
- bench/realtime_fake.py: the OpenAI Realtime API, every connection a model that talks at
  exactly real time (one delta = one 20 ms frame) in 5 s items with 1 s pauses (the caller's
  turns), plus Twilio REST; pinned to --other-core;
- bench/realtime_loadgen.py: N inbound calls by signed webhooks, each answered with
  `<Connect><Stream>`, whose websocket it opens as Twilio does; caller audio every 20 ms and
  mark echoes; pinned to --other-core too.

Every frame carries the monotonic time (one clock for the whole machine) at which its sender
built it: caller frames from the generator, model frames from the fake. So:
- caller frame in -> vendor: fake's arrival time of each caller frame in an
  `input_audio_buffer.append`, minus the generator's send time;
- vendor audio -> caller frame out: generator's arrival time of each `media` frame, minus the
  fake's send time. The model speaks at real time and the daemon's play clock sends a frame as
  soon as it is due, so this is pure forwarding latency, not pacing.
Both include two loopback websocket hops and the fake's and generator's own scheduling delays
(they share a core), so they bound the daemon's own share from above.

The floor (control run, `--against daemon,relay`, the default): the same fake and generator
with bench/realtime_relay.py in the daemon's place (its own process, same core and nice), a
trivial aiohttp pass-through that cuts the base64 out of each message and sends it on, with
none of the toolkit's work. Its figures are what the measurement itself costs; the line
`realtime added (daemon - floor)` gives the daemon's figures minus the relay's, percentile by
percentile (a difference of percentiles, not a percentile of differences). `--repeat K` runs the
sequence K times, interleaved, and prints each target's medians; `--against before,daemon,relay
--before-repo PATH` adds the daemon of another checkout (an older commit) to each round.

Run: python bench/bench_realtime.py --n 100 --nice -10
Prints `uptime` before and after and one line per level (and --json the raw figures).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from _procs import (  # noqa: E402
    command,
    cpu_seconds,
    daemon_status,
    expect,
    pinned,
    prioritise,
    rss_kib,
    runqueue_wait,
    start_daemon,
    start_loadgen,
    start_py_spy,
    stop_all,
    uptime,
)
from bench_daemon_streams import AUTH_TOKEN, FROM, STARVED_PCT, twilio_config  # noqa: E402

API_KEY = "sk-bench-realtime-key-0001"


def daemon_config(fakes: str, n: int, outbound_batch_ms: int | None = None) -> str:
    """Twilio at the fake's REST, streaming and realtime on; no TTS, no STT, no chat model;
    `outbound_batch_ms`: the [streaming] key (None: the daemon's default)."""
    return twilio_config(
        fakes,
        n,
        "Thank you for calling the Acme clinic.",
        streaming="" if outbound_batch_ms is None else f"outbound_batch_ms = {outbound_batch_ms}",
        tail=f"""
[realtime]
enabled = true
base_url = "{fakes.replace("http://", "ws://")}/v1/realtime"
api_key = "{API_KEY}"
""",
    )


def run_level(n: int, args: argparse.Namespace, log: IO[str], *, target: str) -> dict[str, Any]:
    """One level: fake, daemon (``daemon``; ``before``: the one of --before-repo; ``relay``:
    the trivial relay in its place), generator; ramp, warm-up, window; every process's
    report."""
    relay = target == "relay"
    home = Path(tempfile.mkdtemp(prefix="vcr-", dir="/tmp"))
    procs: list[subprocess.Popen[Any]] = []
    try:
        fake = subprocess.Popen(
            pinned(
                args.other_core,
                [sys.executable, str(HERE / "realtime_fake.py"), "--phases", str(args.phases)],
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
        )
        prioritise(fake, args.nice)
        procs.append(fake)
        port = json.loads(expect(fake, "READY ", 30))["port"]
        daemon: subprocess.Popen[Any]
        if relay:
            relay_proc = subprocess.Popen(
                pinned(
                    args.daemon_core,
                    [
                        sys.executable,
                        str(HERE / "realtime_relay.py"),
                        "--vendor",
                        f"ws://127.0.0.1:{port}/v1/realtime",
                    ],
                ),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,
            )
            prioritise(relay_proc, args.nice)
            procs.append(relay_proc)
            daemon = relay_proc
            relay_port = json.loads(expect(relay_proc, "READY ", 30))["port"]
            status = {"webhookUrl": f"http://127.0.0.1:{relay_port}/webhook"}
        else:
            (home / "config.toml").write_text(
                daemon_config(f"http://127.0.0.1:{port}", n, args.outbound_batch_ms)
            )
            real = start_daemon(
                home,
                core=args.daemon_core,
                nice=args.nice,
                log_level=args.log_level,
                cwd=Path(args.before_repo).resolve() if target == "before" else REPO,
            )
            procs.append(real)
            daemon = real
            status = daemon_status(home, real, 30)
        time.sleep(1.0)
        idle_rss = rss_kib(daemon.pid)
        gen = start_loadgen(
            HERE / "realtime_loadgen.py",
            core=args.other_core,
            nice=args.nice,
            webhook=status["webhookUrl"],
            auth_token=AUTH_TOKEN,
            to=FROM,
            n=n,
            rate=args.rate,
            extra=["--phases", str(args.phases)],
            log=log,
        )
        procs.append(gen)
        ramped = json.loads(expect(gen, "RAMPED ", n / args.rate + 120))
        time.sleep(args.warmup)
        spy = _spy(args, daemon.pid, f"{args.py_spy}-{target}-{n}.txt", log)
        before = {p.pid: cpu_seconds(p.pid) for p in procs}
        waited0 = runqueue_wait(daemon.pid)
        wall0 = time.monotonic()
        command(gen, "mark")
        expect(gen, "MARKED", 10)
        command(fake, "mark")
        expect(fake, "MARKED", 10)
        load_during = ""
        time.sleep(args.seconds / 2)
        load_during = uptime()
        time.sleep(args.seconds / 2)
        wall = time.monotonic() - wall0
        cpu = {p.pid: (cpu_seconds(p.pid) - before[p.pid]) / wall * 100 for p in procs}
        starved = (runqueue_wait(daemon.pid) - waited0) / wall * 100
        end_rss = rss_kib(daemon.pid)
        command(fake, "report")
        vendor = json.loads(expect(fake, "REPORT ", 30))
        command(gen, "report")
        report = json.loads(expect(gen, "REPORT ", 60))
        if spy is not None:
            spy.wait(30)
        log_path = home / "daemon.log"
        log_text = log_path.read_text(errors="replace") if log_path.exists() else ""
    finally:
        stop_all(procs)
        shutil.rmtree(home, ignore_errors=True)
    frames = vendor["inbound_frames"] + report["outbound_frames"]
    return {
        "n": n,
        "target": target,
        "phase_note": f" phases={args.phases}" if args.phases > 1 else "",
        "ramp": ramped,
        "gen": report,
        "vendor": vendor,
        "us_per_frame": cpu[daemon.pid] / 100 * wall / max(1, frames) * 1e6,
        "daemon_cpu": cpu[daemon.pid],
        "daemon_runqueue_wait_pct": starved,
        "fake_cpu": cpu[fake.pid],
        "gen_cpu": cpu[gen.pid],
        "rss_per_call_mib": (end_rss - idle_rss) / 1024 / n,
        "window_s": wall,
        "log_errors": sum(1 for line in log_text.splitlines() if " ERROR " in line),
        "log_error_lines": [line for line in log_text.splitlines() if " ERROR " in line][:5],
        "machine": load_during,
    }


def _spy(
    args: argparse.Namespace, pid: int, out: str, log: IO[str]
) -> subprocess.Popen[bytes] | None:
    """py-spy (non-blocking) on the daemon or relay for the window, collapsed stacks to `out`
    (see bench/pyspy_breakdown.py); None without --py-spy."""
    if not args.py_spy:
        return None
    return start_py_spy(
        pid,
        out,
        seconds=args.seconds,
        rate=200,
        core=args.other_core,
        native=args.py_spy_native,
        log=log,
    )


def summary(r: dict[str, Any]) -> str:
    """One line per level."""
    g, v = r["gen"], r["vendor"]
    flags = " INVALID (load generator lagged)" if g["lagging"] else ""
    if r["daemon_runqueue_wait_pct"] > STARVED_PCT:
        flags += " STARVED (the daemon waited for its core: machine busy)"
    who = {"relay": "relay (floor)", "before": "daemon (before)"}.get(r["target"], "daemon")
    return (
        f"realtime {who} n={r['n']}{r['phase_note']} calls={g['streams']} | caller->vendor "
        f"p50={v['inbound_p50_ms']:.2f}ms p99={v['inbound_p99_ms']:.2f}ms "
        f"max={v['inbound_max_ms']:.1f}ms (frames={v['inbound_frames']}) | vendor->caller "
        f"p50={g['outbound_p50_ms']:.2f}ms p99={g['outbound_p99_ms']:.2f}ms "
        f"max={g['outbound_max_ms']:.1f}ms (frames={g['outbound_frames']}) | "
        f"silent streams={g['silent']} closed={g['closed']} | "
        f"{r['target']} cpu={r['daemon_cpu']:.0f}% ({r['us_per_frame']:.0f}us/frame) "
        f"waited={r['daemon_runqueue_wait_pct']:.0f}% "
        f"rss/call={r['rss_per_call_mib']:.2f}MiB | fake cpu={r['fake_cpu']:.0f}% "
        f"(tick p99 late {v['tick_late_p99_ms']:.1f}ms) gen cpu={r['gen_cpu']:.0f}% "
        f"(tick p99 late {g['tick_late_p99_ms']:.1f}ms) | failures={g['failures'] or '-'} "
        f"log errors={r['log_errors']} | {r['machine']} (mid-window){flags}"
    )


def added(daemon: dict[str, Any], relay: dict[str, Any]) -> str:
    """The toolkit's added latency: the daemon's figures minus the relay's (the floor), each
    percentile on its own (a difference of percentiles, not a percentile of differences)."""
    d_in, r_in = daemon["vendor"], relay["vendor"]
    d_out, r_out = daemon["gen"], relay["gen"]
    return (
        f"realtime added ({daemon['target']} - floor) n={daemon['n']} | caller->vendor "
        f"p50={d_in['inbound_p50_ms'] - r_in['inbound_p50_ms']:+.2f}ms "
        f"p99={d_in['inbound_p99_ms'] - r_in['inbound_p99_ms']:+.2f}ms | vendor->caller "
        f"p50={d_out['outbound_p50_ms'] - r_out['outbound_p50_ms']:+.2f}ms "
        f"p99={d_out['outbound_p99_ms'] - r_out['outbound_p99_ms']:+.2f}ms | cpu per frame "
        f"{daemon['us_per_frame']:.0f} us (daemon) vs {relay['us_per_frame']:.0f} us (relay)"
    )


def medians(results: list[dict[str, Any]]) -> str:
    """One target's medians over the rounds of --repeat (each percentile on its own)."""

    def med(key: str, side: str) -> float:
        return float(statistics.median(r[side][key] for r in results))

    cpu = statistics.median(r["us_per_frame"] for r in results)
    waited = max(r["daemon_runqueue_wait_pct"] for r in results)
    lagged = sum(1 for r in results if r["gen"]["lagging"])
    return (
        f"realtime {results[0]['target']} medians of {len(results)} rounds n={results[0]['n']} | "
        f"caller->vendor p50={med('inbound_p50_ms', 'vendor'):.2f}ms "
        f"p99={med('inbound_p99_ms', 'vendor'):.2f}ms | vendor->caller "
        f"p50={med('outbound_p50_ms', 'gen'):.2f}ms p99={med('outbound_p99_ms', 'gen'):.2f}ms | "
        f"{cpu:.0f}us/frame | waited max {waited:.0f}% | generator lagged in {lagged}"
    )


def main() -> None:
    """Parse arguments, run each level, print one line per level."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="100", help="calls per level, comma separated")
    parser.add_argument("--rate", type=float, default=20.0, help="new calls per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=3.0, help="after the ramp")
    parser.add_argument("--daemon-core", type=int, default=0, help="-1: not pinned")
    parser.add_argument("--other-core", type=int, default=1, help="-1: not pinned")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log", default=os.devnull, help="fake/generator stderr")
    parser.add_argument("--json", action="store_true", help="also print the raw figures")
    parser.add_argument(
        "--outbound-batch-ms",
        type=int,
        help="[streaming] outbound_batch_ms of the daemon (default: the daemon's own, 20)",
    )
    parser.add_argument(
        "--py-spy",
        default="",
        metavar="PREFIX",
        help="profile the daemon (and the relay) during the window: PREFIX-daemon-N.txt "
        "(py-spy raw collapsed stacks, --nonblocking, on the other core)",
    )
    parser.add_argument(
        "--before-repo",
        default="",
        metavar="PATH",
        help="the checkout (e.g. a worktree of an older commit) whose daemon the target "
        "`before` runs, for a before/after pair measured beside the same floor",
    )
    parser.add_argument("--py-spy-native", action="store_true", help="py-spy --native")
    parser.add_argument(
        "--against",
        default="daemon,relay",
        help="what stands between the generator and the fake, in order: daemon (the real "
        "one), relay (bench/realtime_relay.py, a trivial pass-through: the floor) and/or "
        "before (the daemon of --before-repo)",
    )
    parser.add_argument(
        "--phases",
        type=int,
        default=1,
        help="1 (default): every call's caller frame and model delta leave the generator and "
        "the fake at the same instant of each 20 ms, the worst case of the SPEC figure; K > 1: "
        "call i at point i mod K of K per 20 ms (real calls' frames are not aligned)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of the --against sequence (interleaved, so each round's targets meet "
        "the same machine), then each target's medians over the rounds",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="scheduler nice of the three processes' own autogroups (root: "
        "-10 shields a level from other work on a shared machine, as in "
        "bench_daemon_streams.py)",
    )
    args = parser.parse_args()
    args.daemon_core = None if args.daemon_core < 0 else args.daemon_core
    args.other_core = None if args.other_core < 0 else args.other_core
    print(
        f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {uptime()} (before); "
        f"daemon on core {args.daemon_core}, fake+generator on core {args.other_core}, "
        f"nice {args.nice}",
        flush=True,
    )
    targets = [t.strip() for t in args.against.split(",") if t.strip()]
    if not targets or set(targets) - {"daemon", "relay", "before"}:
        parser.error("--against takes daemon, relay and/or before")
    if "before" in targets and not args.before_repo:
        parser.error("--against before needs --before-repo")
    with open(args.log, "a") as log:
        for n in (int(x) for x in args.n.split(",")):
            rounds: dict[str, list[dict[str, Any]]] = {target: [] for target in targets}
            for _round in range(args.repeat):
                for target in targets:
                    result = run_level(n, args, log, target=target)
                    rounds[target].append(result)
                    print(summary(result), flush=True)
                    if args.json:
                        print(json.dumps(result), flush=True)
                for name in ("before", "daemon"):
                    if name in rounds and "relay" in rounds:
                        print(added(rounds[name][-1], rounds["relay"][-1]), flush=True)
            if args.repeat > 1:
                for target in targets:
                    print(medians(rounds[target]), flush=True)
    print(f"# {uptime()} (after)", flush=True)


if __name__ == "__main__":
    main()
