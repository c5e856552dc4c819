"""Concurrent streamed calls on the REAL daemon, one core (SPEC 12: >= 400 healthy streams,
outbound p99 jitter <= 10 ms, <= 1 MiB per call; first reply audio p99 <= 50 ms at 200 calls;
webhook p99 <= 50 ms during a 50 calls/s ramp).

For each level of --n, three processes:
- `voicecall daemon run` (the real CLI entry point, exec'd into the daemon: real engine, SQLite
  store, webhook server, media plane, vendor clients), Twilio provider, streaming on, pinned to
  core --daemon-core with `taskset`;
- bench/daemon_fakes.py: Twilio REST, OpenAI TTS (pcm 24 kHz: resampled) or ElevenLabs TTS
  (`ulaw_8000`: passed through), OpenAI realtime STT and the chat model, pinned to --other-core;
- bench/daemon_loadgen.py: N inbound calls by signed voice webhooks at --rate per second, each
  answered with `<Connect><Stream>`, whose websocket it opens as Twilio does, then caller audio
  every 20 ms per stream and mark echoes; pinned to --other-core too.
Every call is greeted with the same one-sentence greeting (the TTS fake returns --tts-seconds
of audio per sentence; the daemon says it from memory from the third call on), and the STT fake
sends each connection a final transcript every --turn-every seconds, which the auto-responder
answers through the chat fake with a reply worded differently each time (so synthesised
afresh, resampled on the OpenAI path): the daemon talks all the time.

After the ramp and --warmup seconds (by default until every call is past its greeting), a
--seconds window: per stream the generator counts frames and gaps; healthy = >= 90 % of
real-time audio in the window and no gap > 100 ms. Jitter is |interval - 20 ms| between
consecutive outbound frames, pooled. First audio is the time from the stream's `start` to its
first outbound frame (the greeting). CPU % is from
/proc/<pid>/stat over the window (100 % = one core); RSS per call = (daemon RSS at the end of
the window - RSS before any call) / N. "waited" is the share of the window the daemon was
runnable but not running (/proc/<pid>/schedstat): above 10 % the shared machine starved it and
the level is marked STARVED; `--nice -10` (root) shields the three processes from other work
for the length of a level. "core others" is what the rest of the machine took of the daemon's
core over the window (its busy time in /proc/stat less the daemon's own CPU: other processes
and interrupts) and "steal" the time the hypervisor gave that virtual CPU to another guest:
both slow the daemon even when it never waits. The kernel samples a CPU's busy time per
scheduler tick and a process's exactly, so "core others" reads within about 7 points of
zero (sometimes below it) when nothing else ran: only a larger figure means interference.
"yardstick" is the machine's speed just before the level, on the daemon's core (microseconds
per media message's base64 and JSON round trip in pure CPython; higher is slower): on this VM
the same code runs up to half as fast again from one hour to the next. "floor" is the same
for the kernel's loopback TCP path, the daemon's largest single cost (bench_send_floor.py for
2 s on the daemon's core: microseconds of the sender's CPU per 340-byte write to 400 sockets).
"us/media msg" is the daemon's CPU time over the window divided by the media messages it
handled (caller frames in + frames out): the figure to compare between runs on a busy machine.
A level where the generator missed or was late on its own 20 ms clock (p99 > 10 ms) is
INVALID: the daemon cannot be judged by it.

Run: python bench/bench_daemon_streams.py --tts openai --n 120,200,300,400
Prints one line per level (and --json the raw figures); `uptime` is printed first and last.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from _procs import (  # noqa: E402
    StealSampler,
    StealTimeline,
    command,
    core_times,
    cpu_seconds,
    cpu_split,
    daemon_status,
    expect,
    family,
    pinned,
    prioritise,
    rss_kib,
    runqueue_wait,
    send_floor,
    start_daemon,
    start_loadgen,
    start_py_spy,
    stop_all,
    uptime,
    yardstick,
)

AUTH_TOKEN = "bench-twilio-auth-token-0123456789"
ACCOUNT_SID = "AC" + "b" * 32
API_KEY = "sk-bench-openai-key-0001"
XI_KEY = "xi-bench-elevenlabs-key-0001"
FROM = "+15550100000"
STARVED_PCT = 10.0
"""A daemon that waited for its core more than this share of the window was starved by other
work on the machine: its figures say little about the daemon."""
GREETING = "Thank you for calling the Acme clinic, this is the automated assistant."
"""One sentence, the same for every call, as a number's greeting is: the daemon keeps its audio
from the second call on (`daemon.speech.tts.cache`). What keeps every call talking is the
replies: the chat fake words each one differently, as a model does, so each is synthesised
afresh, and a reply's --tts-seconds of audio outlasts the --turn-every between them."""


PACER_LINE = re.compile(
    r"^(\S+ \S+) INFO (?:w\d+ )?daemon\.media\.pacer: media pacer: (\d+) streams; "
    r"tick lateness p50 (\d+) ms, p99 (\d+) ms, max (\d+) ms; "
    r"tick work p50 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms"
    r"(?: \(last (\d+) ticks, (\d+) run between reads\))?"
    r"(?:; synthesis deferred \d+ times; timers up to (\d+) ms late)?"
    r"(?:; (\d+) collections took (\d+) ms, the longest ([\d.]+) ms)?"
)


def pacer_figures(log_text: str, since: float, until: float) -> dict[str, float]:
    """The daemon's own pacer reports (every 10 s) that fall in the window: the worst p99 and
    max of tick lateness and tick work. This is the daemon's share of the jitter the
    generator sees (which adds its own scheduling and the network). `polled`: the share of
    ticks that ran between two reads rather than from their timer (NaN: a daemon from before
    ticks could); `loop_max`: how late the loop ran the pacer's timer at worst (its stalls)."""
    worst: dict[str, float] = {
        "late_p99": 0.0,
        "late_max": 0.0,
        "work_p99": 0.0,
        "work_max": 0.0,
        "reports": 0,
    }
    ticks = polled = 0
    gc_ms = 0.0
    for line in log_text.splitlines():
        found = PACER_LINE.match(line)
        if found is None:
            continue
        at = time.mktime(time.strptime(found.group(1).split(",")[0], "%Y-%m-%d %H:%M:%S"))
        if not since <= at <= until + 1:
            continue
        worst["reports"] += 1
        for key, group in (("late_p99", 4), ("late_max", 5), ("work_p99", 7), ("work_max", 8)):
            worst[key] = max(worst[key], float(found.group(group)))
        if found.group(9) is not None:
            ticks += int(found.group(9))
            polled += int(found.group(10))
        if found.group(11) is not None:
            worst["loop_max"] = max(worst.get("loop_max", 0.0), float(found.group(11)))
        if found.group(12) is not None:
            gc_ms += float(found.group(13))
            worst["gc_max"] = max(worst.get("gc_max", 0.0), float(found.group(14)))
    worst["widened"] = worst["widened_window"] = 0
    for line in log_text.splitlines():
        if "the event loop is behind" not in line:
            continue
        worst["widened"] += 1
        stamp = line[:19]
        try:
            at = time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S"))
        except ValueError:
            continue
        if since <= at <= until + 1:
            worst["widened_window"] += 1
    worst["polled"] = polled / ticks if ticks else math.nan
    seconds = ticks * 0.02
    worst["gc_share"] = gc_ms / 1000 / seconds if seconds and "gc_max" in worst else math.nan
    return worst


RECLAIM_LINE = re.compile(
    r"media gc: reclaimed (\d+) objects \((\d+) streams ended since the last time\) in (\d+) ms"
)


def reclaim_figures(log_text: str) -> list[tuple[int, int, int]]:
    """The daemon's reclaims of frozen cycles (docs/media.md): (objects, ended streams, ms)."""
    return [
        (int(found.group(1)), int(found.group(2)), int(found.group(3)))
        for found in RECLAIM_LINE.finditer(log_text)
    ]


def twilio_config(
    fakes: str, n: int, greeting: str, *, top: str = "", streaming: str = "", tail: str = ""
) -> str:
    """Twilio at the fakes (a local api_base_url lets the local webhook URL stand), inbound
    calls open, streaming on; overall limits sized for n calls, per-address limits left at
    their defaults (the generator spreads calls over many source addresses). `top`: more
    top-level keys, `streaming`: more [streaming] keys, `tail`: more tables."""
    return f"""
provider = "twilio"
from_number = "{FROM}"
inbound_policy = "open"
inbound_greeting = "{greeting}"
max_concurrent_calls = {n + 16}
max_duration_seconds = 3600
{top}
[serve]
port = 0
max_connections = {4 * n + 256}

[twilio]
account_sid = "{ACCOUNT_SID}"
auth_token = "{AUTH_TOKEN}"
api_base_url = "{fakes}"

[streaming]
enabled = true
max_connections = {n + 64}
max_pending_connections = {n + 64}
{streaming}
{tail}"""


def daemon_config(
    fakes: str,
    n: int,
    tts: str,
    turns: bool,
    store: str = "",
    streaming: str = "",
    max_loop_load: float = 1.0,
) -> str:
    """Every vendor at the fakes: STT, the chat model (with `turns`), and `tts`; `streaming`:
    more [streaming] keys; `max_loop_load` 1 (no call refused for load: the level measures
    what the core carries) unless an overload level asks for the daemon's refusals."""
    tts_table = (
        f'[tts]\nprovider = "elevenlabs"\n\n[tts.elevenlabs]\nbase_url = "{fakes}"\n'
        f'api_key = "{XI_KEY}"\nvoice_id = "bench-voice"\n'
        if tts == "elevenlabs"
        else f'[tts]\nprovider = "openai"\n\n[tts.openai]\nbase_url = "{fakes}/v1"\n'
        f'api_key = "{API_KEY}"\n'
    )
    responder = 'response_model = "openai/gpt-4o-mini"\n' if turns else ""
    stt = fakes.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    return twilio_config(
        fakes,
        n,
        GREETING,
        top=responder
        + (f'store = "{store}"\n' if store else "")
        + f"max_loop_load = {max_loop_load}\n",
        streaming=f'api_key = "{API_KEY}"\nstt_url = "{stt}"\n{streaming}',
        tail=f'[agent]\nbase_url = "{fakes}/v1"\napi_key = "{API_KEY}"\n\n{tts_table}',
    )


def _spy(
    args: argparse.Namespace, pid: int, n: int, phase: str, seconds: float, log: IO[str]
) -> subprocess.Popen[bytes] | None:
    """py-spy on the daemon for one phase (--py-spy-phase), collapsed stacks to a file."""
    if not args.py_spy or args.py_spy_phase != phase:
        return None
    suffix = ".json" if args.py_spy_timeline else ".txt"
    out = f"{args.py_spy}-{args.tts}-{n}{'-ramp' if phase == 'ramp' else ''}{suffix}"
    return start_py_spy(
        pid,
        out,
        seconds=seconds,
        rate=1000 if args.py_spy_timeline else 250,
        core=args.other_core,
        native=False,
        log=log,
        timeline=args.py_spy_timeline,
    )


def run_level(n: int, args: argparse.Namespace, log: IO[str]) -> dict[str, Any]:
    """One level: fakes, daemon, generator; ramp, warm-up, window; every process's report."""
    home = Path(tempfile.mkdtemp(prefix="vcb-", dir="/tmp"))
    procs: list[subprocess.Popen[Any]] = []
    try:
        fakes = subprocess.Popen(
            pinned(
                args.other_core,
                [
                    sys.executable,
                    str(HERE / "daemon_fakes.py"),
                    "--tts-seconds",
                    str(args.tts_seconds),
                    "--turn-every",
                    str(args.turn_every),
                ],
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
        )
        prioritise(fakes, args.nice)
        procs.append(fakes)
        port = json.loads(expect(fakes, "READY ", 30))["port"]
        origin = f"http://127.0.0.1:{port}"
        batch = (
            (
                ""
                if args.inbound_batch_ms is None
                else f"inbound_batch_ms = {args.inbound_batch_ms}\n"
            )
            + (
                ""
                if args.outbound_batch_ms is None
                else f"outbound_batch_ms = {args.outbound_batch_ms}\n"
            )
            + (
                ""
                if args.outbound_batch_overload_ms is None
                else f"outbound_batch_overload_ms = {args.outbound_batch_overload_ms}\n"
            )
        )
        # Hung-up calls hold their slot for the stream's end grace (2 s) and their hang-up.
        slots = n + math.ceil(args.churn * 5)
        text = daemon_config(
            origin,
            slots,
            args.tts,
            args.turn_every > 0,
            store_url(args),
            batch,
            args.max_loop_load,
        )
        (home / "config.toml").write_text(text)
        core = args.daemon_core if args.workers == 1 else None  # workers: every core
        speed = yardstick(core, args.nice)
        floor = send_floor(core, args.other_core, args.nice)
        daemon = start_daemon(
            home,
            core=core,
            nice=args.nice,
            log_level=args.log_level,
            cwd=args.repo,
            workers=args.workers,
            python=args.python,
        )
        procs.append(daemon)
        status = daemon_status(home, daemon, 60)
        deadline = time.monotonic() + 60
        while len(family(daemon.pid)) < args.workers + (args.workers > 1):
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not start")
            time.sleep(0.1)
        time.sleep(1.0 if args.workers == 1 else 3.0)
        pids = family(daemon.pid) if args.workers > 1 else [daemon.pid]
        idle_rss = sum(rss_kib(pid) for pid in pids)
        ramp_spy = _spy(args, daemon.pid, n, "ramp", n / args.rate + 2, log)
        gen = start_loadgen(
            HERE / "daemon_loadgen.py",
            core=args.other_core,
            nice=args.nice,
            webhook=status["webhookUrl"],
            auth_token=AUTH_TOKEN,
            to=FROM,
            n=n,
            rate=args.rate,
            extra=["--phases", str(args.phases), "--churn", str(args.churn)],
            log=log,
        )
        procs.append(gen)
        ramped = json.loads(expect(gen, "RAMPED ", n / args.rate + 120))
        if ramp_spy is not None:
            ramp_spy.wait(60)
        time.sleep(args.warmup if args.warmup is not None else args.tts_seconds + 2)
        before = {p.pid: cpu_seconds(p.pid) for p in procs}
        daemon_cpu0 = sum(cpu_seconds(pid) for pid in pids)
        daemon_system0 = sum(cpu_split(pid)[1] for pid in pids)
        waited0 = sum(runqueue_wait(pid) for pid in pids)
        window_rss0 = sum(rss_kib(pid) for pid in pids)
        core_busy0, stolen0 = core_times(args.daemon_core)
        wall0 = time.monotonic()
        epoch0 = time.time()
        sampler = StealSampler(args.other_core).start()
        command(gen, "mark")
        expect(gen, "MARKED", 10)
        spy = _spy(args, daemon.pid, n, "window", args.seconds, log)
        time.sleep(args.seconds)
        if spy is not None:
            spy.wait(60)
        wall = time.monotonic() - wall0
        steal = sampler.stop()
        cpu = {p.pid: (cpu_seconds(p.pid) - before[p.pid]) / wall * 100 for p in procs}
        cpu[daemon.pid] = (sum(cpu_seconds(pid) for pid in pids) - daemon_cpu0) / wall * 100
        system = (sum(cpu_split(pid)[1] for pid in pids) - daemon_system0) / wall * 100
        starved = (sum(runqueue_wait(pid) for pid in pids) - waited0) / wall * 100 / len(pids)
        core_busy1, stolen1 = core_times(args.daemon_core)
        end_rss = sum(rss_kib(pid) for pid in pids)
        command(gen, "report")
        report = json.loads(expect(gen, "REPORT ", 60))
        command(fakes, "report")
        vendor = json.loads(expect(fakes, "REPORT ", 30))
        epoch1 = time.time()
        load = uptime()
        handoff = handoff_counts(home, daemon, args.workers)
    finally:
        stop_all(procs)  # generator, daemon, fakes: each gone before the next
        log_path = home / "daemon.log"
        log_text = log_path.read_text(errors="replace") if log_path.exists() else ""
        if args.keep_logs:
            print(f"# logs kept in {home}", flush=True)
        else:
            shutil.rmtree(home, ignore_errors=True)
    errors = sum(1 for line in log_text.splitlines() if " ERROR " in line)
    warnings = sum(1 for line in log_text.splitlines() if " WARNING " in line)
    messages = report["frames_out_window"] + report["frames_in_window"]
    return {
        "us_per_message": cpu[daemon.pid] / 100 * wall / max(1, messages) * 1e6,
        "n": n,
        "tts": args.tts,
        "ramp": ramped,
        "gen": report,
        "vendor": vendor,
        "daemon_cpu": cpu[daemon.pid],
        "daemon_system_pct": system,
        "daemon_runqueue_wait_pct": starved,
        "yardstick_us": speed,
        "send_floor_us": floor,
        # the rest of the daemon's core (one worker: it is pinned): other processes and
        # interrupts, and the hypervisor running another guest
        "core_others_pct": (core_busy1 - core_busy0) / wall * 100 - cpu[daemon.pid]
        if args.workers == 1
        else None,
        "core_steal_pct": (stolen1 - stolen0) / wall * 100 if args.workers == 1 else None,
        "fakes_cpu": cpu[fakes.pid],
        "gen_cpu": cpu[gen.pid],
        "idle_rss_mib": idle_rss / 1024,
        "end_rss_mib": end_rss / 1024,
        "window_rss_growth_mib": (end_rss - window_rss0) / 1024,
        "reclaims": reclaim_figures(log_text),
        "rss_per_call_mib": (end_rss - idle_rss) / 1024 / n,
        "window_s": wall,
        "log_errors": errors,
        "log_warnings": warnings,
        "machine": load,
        "pacer": pacer_figures(log_text, epoch0, epoch1),
        "steal": steal_figures(steal, report, args.daemon_core, args.other_core),
        "handoff": handoff,
    }


STEAL_SPAN = 0.1
"""How far before a late frame's arrival steal counts as its cause (a frame is due every 20 ms;
a preemption longer than the pacer's lead shows in the frames sent when it ends)."""


BURST_GAP = 0.03
"""Late frames less than this apart belong to one burst: a stall of the daemon's loop makes
every talking stream's next frame late at once; one stream's late frame is a burst of one."""


def bursts(late: list[float]) -> list[tuple[float, int]]:
    """The late frames grouped into bursts, largest first: (when it began, frames)."""
    groups: list[tuple[float, int]] = []
    previous = -math.inf
    for at in late:
        if at - previous > BURST_GAP:
            groups.append((at, 0))
        groups[-1] = (groups[-1][0], groups[-1][1] + 1)
        previous = at
    return sorted(groups, key=lambda g: -g[1])


def steal_figures(
    steal: StealTimeline,
    report: dict[str, Any],
    daemon_core: int,
    other_core: int,
) -> dict[str, Any]:
    """The window's steal per core, its worst ``STEAL_SPAN``, and how many of the frames that
    came more than 10 ms off their 20 ms had steal on either core just before they arrived:
    whether the jitter that misses was the hypervisor's or the daemon's."""
    late = report.get("late_frames_at", [])
    out: dict[str, Any] = {
        "late": len(late),
        "judged": report.get("frames_judged", 0),
        "bursts": bursts(late),
    }
    if len(steal.samples) < 2:
        return out
    for name, core in (("daemon_core", daemon_core), ("other_core", other_core)):
        worst = max(steal.stolen_before(t, STEAL_SPAN, core) for t in steal.times)
        hit = sum(1 for at in late if steal.stolen_before(at, STEAL_SPAN, core) > 0)
        out[name] = {"ms": steal.total(core) * 1000, "worst_ms": worst * 1000, "late_after": hit}
    return out


def handoff_counts(
    home: Path, daemon: subprocess.Popen[bytes], workers: int
) -> dict[str, dict[str, int]] | None:
    """The workers' hand-over counts (`daemon status`: handoff), summed over the workers (each
    status comes from whichever worker accepts the RPC connection: asked until all answered)."""
    if workers < 2:
        return None
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(20 * workers):
        status = daemon_status(home, daemon, 10)
        if status.get("handoff"):
            seen[str(status["daemonId"])] = status["handoff"]
        if len(seen) == workers:
            break
    total: dict[str, dict[str, int]] = {"workers": {"heard": len(seen), "of": workers}}
    for counts in seen.values():
        for key in ("handedOver", "relayed"):
            for kind, value in counts[key].items():
                bucket = total.setdefault(key, {})
                bucket[kind] = bucket.get(kind, 0) + int(value)
    return total


_THROWAWAY: list[Any] = []


def store_url(args: argparse.Namespace) -> str:
    """--store; `--store throwaway`, or --workers and none given: a new database on a throwaway
    PostgreSQL server (tests/pg_cluster.py: Debian's programs, loopback, trust), one per level."""
    if args.store != "throwaway" and (args.store or args.workers == 1):
        return str(args.store)
    if not _THROWAWAY:
        sys.path.insert(0, str(REPO))
        from tests.pg_cluster import start_server

        _THROWAWAY.append(start_server())
    return str(_THROWAWAY[0].new_database())


def summary(r: dict[str, Any]) -> str:
    """One line per level."""
    g, v = r["gen"], r["vendor"]
    invalid = " INVALID (load generator lagged)" if g["lagging"] or r["gen_cpu"] > 90 else ""
    if r["daemon_runqueue_wait_pct"] > STARVED_PCT:
        invalid += " STARVED (the daemon waited for its core: machine busy)"
    return (
        f"tts={r['tts']} n={r['n']} healthy={g['healthy']}/{g['streams']} "
        f"jitter p50={g['jitter_p50_ms']:.1f}ms p99={g['jitter_p99_ms']:.1f}ms "
        f"worst_gap={g['worst_gap_ms']:.0f}ms "
        f"heard: buffered p1={g['buffered_p1_ms']:.0f}ms p50={g['buffered_p50_ms']:.0f}ms "
        f"underruns={g['underruns']} ({g['underrun_ms']:.0f}ms) clears={g['clears']} "
        f"first_audio p50={g['first_audio_p50_ms']:.0f}ms p99={g['first_audio_p99_ms']:.0f}ms "
        f"webhook p50={g['webhook_p50_ms']:.1f}ms p99={g['webhook_p99_ms']:.1f}ms | "
        f"daemon cpu={r['daemon_cpu']:.0f}% (system {r['daemon_system_pct']:.0f}%; "
        f"{r['us_per_message']:.1f}us/media msg) "
        f"waited={r['daemon_runqueue_wait_pct']:.0f}% {_core_text(r)}rss={r['end_rss_mib']:.0f}MiB "
        f"({r['rss_per_call_mib']:.2f}MiB/call) | fakes cpu={r['fakes_cpu']:.0f}% "
        f"daemon tick late p99={r['pacer']['late_p99']:.0f}ms "
        f"max={r['pacer']['late_max']:.0f}ms work p99={r['pacer']['work_p99']:.1f}ms "
        f"between reads={r['pacer']['polled']:.0%} "
        f"timers late max={r['pacer'].get('loop_max', math.nan):.0f}ms "
        f"gc={r['pacer'].get('gc_share', math.nan):.1%} "
        f"gc max={r['pacer'].get('gc_max', math.nan):.0f}ms "
        f"widened={r['pacer'].get('widened', 0):.0f} "
        f"(in window {r['pacer'].get('widened_window', 0):.0f}) | "
        f"gen cpu={r['gen_cpu']:.0f}% gen tick p99={g['tick_late_p99_ms']:.1f}ms "
        f"skipped={g['ticks_skipped']} | stt_open={v['stt_open']} "
        f"tts={v['tts_requests']} transcripts={v['transcripts']} chat={v['chat_requests']} "
        f"failures={g['failures'] or '-'} refused={g.get('refused', 0)} silent={g['silent']} "
        f"closed={g['closed']} "
        f"log E/W={r['log_errors']}/{r['log_warnings']} | {r['machine']} "
        f"yardstick={r['yardstick_us']:.2f}us floor={r.get('send_floor_us', math.nan):.2f}us"
        f"{invalid}" + _handoff_text(r.get("handoff")) + _churn_text(r) + _steal_text(r)
    )


def _churn_text(r: dict[str, Any]) -> str:
    """With --churn: the calls hung up and placed in the window, the new calls' webhook and
    first audio, the daemon's RSS growth over the window and its reclaims of frozen cycles."""
    churn = r["gen"].get("churn")
    if not churn or not churn["placed"]:
        return ""
    reclaims = r["reclaims"]
    return (
        f" | churn: hung up {churn['hung_up']}, placed {churn['placed']} "
        f"(streams {churn['streams']}, silent {churn['silent']}), "
        f"webhook p99={churn['webhook_p99_ms']:.1f}ms "
        f"first_audio p99={churn['first_audio_p99_ms']:.0f}ms, "
        f"rss {r['window_rss_growth_mib']:+.0f}MiB over the window, "
        f"reclaims={len(reclaims)}"
        + (f" (max {max(ms for _, _, ms in reclaims)}ms)" if reclaims else "")
    )


def _core_text(r: dict[str, Any]) -> str:
    """What else ran on the daemon's core: other processes, and the hypervisor (steal)."""
    if r.get("core_others_pct") is None:
        return ""
    return f"core others={r['core_others_pct']:.0f}% steal={r['core_steal_pct']:.0f}% "


BIG_BURST = 100
"""A burst of this many late frames is a stall of the whole loop (a quarter of 400 streams)."""


def _steal_text(r: dict[str, Any]) -> str:
    """The frames off by more than 10 ms, and the hypervisor's steal on each core beside them."""
    st = r.get("steal")
    if not st or "daemon_core" not in st:
        return ""
    d, o = st["daemon_core"], st["other_core"]
    share = st["late"] / st["judged"] if st["judged"] else math.nan
    groups = st["bursts"]
    big = sum(size for _, size in groups if size >= BIG_BURST)
    return (
        f" | late frames={st['late']} ({share:.2%}; in {len(groups)} bursts, "
        f"{big} in bursts of >= {BIG_BURST}, largest {groups[0][1] if groups else 0}; "
        f"after steal on the daemon's core "
        f"{d['late_after']}, on the other {o['late_after']}) steal daemon core={d['ms']:.0f}ms "
        f"(worst {d['worst_ms']:.0f}ms/{STEAL_SPAN * 1000:.0f}ms) other={o['ms']:.0f}ms "
        f"(worst {o['worst_ms']:.0f}ms)"
    )


def _handoff_text(counts: dict[str, dict[str, int]] | None) -> str:
    if not counts:
        return ""
    given, relayed = counts.get("handedOver", {}), counts.get("relayed", {})
    heard = counts.get("workers", {})
    partial = (
        f" (counts of {heard.get('heard')} of {heard.get('of')} workers only)"
        if heard.get("heard") != heard.get("of")
        else ""
    )
    return (
        f" | handed over: {given.get('media', 0)} streams, {given.get('webhook', 0)} webhooks;"
        f" relayed: {relayed.get('media', 0)} streams, {relayed.get('webhook', 0)} webhooks"
        + partial
    )


def interpreter(python: str) -> str:
    """The daemon's interpreter as `CPython 3.x.y`."""
    version = subprocess.run(
        [
            python,
            "-c",
            "import platform; print(platform.python_implementation(), platform.python_version())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return version.stdout.strip()


def main() -> None:
    """Parse arguments, run each level, print one line per level."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="200,400", help="calls per level, comma separated")
    parser.add_argument("--tts", choices=("openai", "elevenlabs"), default="openai")
    parser.add_argument("--rate", type=float, default=50.0, help="new calls per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window")
    parser.add_argument(
        "--churn",
        type=float,
        default=0.0,
        help="calls a second hung up and replaced by new ones during the window (0: none)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds after the ramp before the window (default: --tts-seconds + 2, so every "
        "call is past its greeting and the window hears replies synthesised afresh)",
    )
    parser.add_argument("--tts-seconds", type=float, default=20.0, help="audio per TTS request")
    parser.add_argument(
        "--turn-every",
        type=float,
        default=10.0,
        help="seconds between caller transcripts per call (0: none)",
    )
    parser.add_argument("--daemon-core", type=int, default=0)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="`daemon run --workers N` (N > 1: on every core, not pinned; a "
        "PostgreSQL store: --store, else a throwaway server)",
    )
    parser.add_argument(
        "--store", default="", help="store URL (postgresql://...), or `throwaway` (a local server)"
    )
    parser.add_argument("--other-core", type=int, default=1)
    parser.add_argument(
        "--phases",
        type=int,
        default=20,
        help="spread the streams' caller frames over this many points per 20 ms, as calls "
        "of a real provider are (default 20, 1 ms apart; 1: every frame at once, the "
        "harshest case, which every figure before 2026-12-06 22:00 used)",
    )
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--repo",
        default=str(REPO),
        help="checkout whose daemon runs (compare commits: a git worktree)",
    )
    parser.add_argument(
        "--max-loop-load",
        type=float,
        default=1.0,
        help="the daemon's max_loop_load (default 1: no call refused, the level measures what "
        "one core carries; 0.8, the daemon's default, shows its refusals past the core)",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter that runs the daemon (compare CPython versions: a virtual "
        "environment of that version with this checkout installed)",
    )
    parser.add_argument("--log", default=os.devnull, help="fakes/generator stderr")
    parser.add_argument("--keep-logs", action="store_true", help="keep the daemon's home")
    parser.add_argument("--json", action="store_true", help="also print the raw figures")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="scheduler nice of the three processes' own autogroups (root: "
        "-10 shields a level from other work on a shared machine)",
    )
    parser.add_argument(
        "--inbound-batch-ms",
        type=int,
        help="[streaming] inbound_batch_ms of the daemon (default: the daemon's own; "
        "0 reads every caller frame at once)",
    )
    parser.add_argument(
        "--outbound-batch-ms",
        type=int,
        help="[streaming] outbound_batch_ms of the daemon (default: the daemon's own, 20: "
        "one frame per write; 40 or 60: two or three frames per write)",
    )
    parser.add_argument(
        "--outbound-batch-overload-ms",
        type=int,
        help="[streaming] outbound_batch_overload_ms of the daemon (default: the daemon's own, "
        "20: never; 40: two frames per write while its loop is behind)",
    )
    parser.add_argument(
        "--py-spy",
        metavar="PREFIX",
        help="profile the daemon over the window: PREFIX-<tts>-<n>.txt "
        "(collapsed stacks; see bench/pyspy_breakdown.py)",
    )
    parser.add_argument(
        "--py-spy-phase",
        choices=("window", "ramp"),
        default="window",
        help="profile the measured window or the ramp (webhooks, set-up)",
    )
    parser.add_argument(
        "--py-spy-timeline",
        action="store_true",
        help="with --py-spy: every sample in time order at 1 kHz, idle ones included "
        "(PREFIX-<tts>-<n>.json; see bench/pyspy_turns.py for the loop's long turns)",
    )
    args = parser.parse_args()
    print(
        f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {uptime()} "
        f"(before); daemon on core {args.daemon_core if args.workers == 1 else 'any'}"
        f" ({args.workers} worker{'s' if args.workers > 1 else ''}), fakes+generator on "
        f"core {args.other_core}, nice {args.nice}, caller frames in {args.phases} phase"
        f"{'s' if args.phases > 1 else ''}, daemon on {interpreter(args.python)}",
        flush=True,
    )
    with open(args.log, "a") as log:
        for n in (int(x) for x in args.n.split(",")):
            result = run_level(n, args, log)
            print(summary(result), flush=True)
            if args.json:
                print(json.dumps(result), flush=True)
    print(f"# {uptime()} (after)", flush=True)
    for server in _THROWAWAY:
        server.stop()


if __name__ == "__main__":
    main()
