"""Process plumbing of the multi-process benches (bench_streams, bench_daemon_streams,
bench_realtime): /proc figures of a child, the stdin/stdout line protocol the children speak,
core pinning and priority, and stopping them."""

from __future__ import annotations

import bisect
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from daemon.rpc.client import DaemonUnreachableError, RpcClient  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process, from /proc/<pid>/stat: its own code against the kernel's
    work on its behalf (system calls; on loopback, the peer's receive path too)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def rss_kib(pid: int) -> int:
    """Resident set size in KiB, from /proc/<pid>/statm."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE_KIB


def runqueue_wait(pid: int) -> float:
    """Seconds the process's main thread spent runnable but not running (/proc schedstat):
    on a shared machine, the share of the window the process was starved by other work."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


def core_times(core: int) -> tuple[float, float]:
    """(busy, stolen) seconds of one CPU since boot, from /proc/stat.

    Busy is every column but idle, iowait and steal; stolen is the time the hypervisor ran
    something else while this virtual CPU wanted to run. Their deltas over a window, less the
    daemon's own CPU, say how much of the daemon's core other work took."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{core} "):
                user, nice, system, _idle, _iowait, irq, softirq, steal = map(
                    int, line.split()[1:9]
                )
                return (user + nice + system + irq + softirq) / TICKS, steal / TICKS
    raise ValueError(f"no cpu{core} in /proc/stat")


class StealSampler:
    """Samples the hypervisor's steal time of every CPU every ``period`` seconds, from a
    thread pinned to ``core`` (not the daemon's: reading /proc there would take its time).

    /proc/stat counts steal in clock ticks (10 ms): a sample whose steal moved says that
    virtual CPU was not running for about that long in that period, whatever ran in the
    guest. Its per-window total hides single long preemptions (100 ms in a 20 s window is
    0.5 %); kept per period, they can be set beside the moments the streams' frames came
    late (:meth:`StealTimeline.stolen_before`)."""

    def __init__(self, core: int, period: float = 0.01) -> None:
        self.period = period
        self.samples: list[tuple[float, tuple[int, ...]]] = []
        self._core = core
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steal-sampler", daemon=True)

    def start(self) -> StealSampler:
        self._thread.start()
        return self

    def stop(self) -> StealTimeline:
        """Stop sampling; what was sampled."""
        self._stop.set()
        self._thread.join(5)
        return StealTimeline(self.samples)

    def _run(self) -> None:
        os.sched_setaffinity(0, {self._core})  # this thread only
        with open("/proc/stat", "rb") as f:
            while not self._stop.wait(self.period):
                f.seek(0)
                steal = tuple(
                    int(line.split()[8])
                    for line in f.read().splitlines()
                    if line.startswith(b"cpu") and not line.startswith(b"cpu ")
                )
                self.samples.append((time.monotonic(), steal))


class StealTimeline:
    """The samples of a :class:`StealSampler`: (monotonic time, steal ticks per CPU)."""

    def __init__(self, samples: list[tuple[float, tuple[int, ...]]]) -> None:
        self.samples = samples
        self.times = [t for t, _ in samples]

    def total(self, cpu: int) -> float:
        """Seconds of steal on ``cpu`` over the whole timeline."""
        if len(self.samples) < 2:
            return 0.0
        return (self.samples[-1][1][cpu] - self.samples[0][1][cpu]) / TICKS

    def stolen_before(self, at: float, span: float, cpu: int) -> float:
        """Seconds of steal on ``cpu`` in the ``span`` seconds before ``at`` (to sample
        precision; 0 outside the timeline)."""
        end = bisect.bisect_left(self.times, at)
        start = bisect.bisect_left(self.times, at - span) - 1
        if end >= len(self.samples) or start < 0 or cpu >= len(self.samples[0][1]):
            return 0.0
        return (self.samples[end][1][cpu] - self.samples[start][1][cpu]) / TICKS


def uptime() -> str:
    """The load averages, to say how busy the shared machine was."""
    with open("/proc/loadavg") as f:
        return "load " + " ".join(f.read().split()[:3])


def expect(proc: subprocess.Popen[str], prefix: str, timeout: float) -> str:
    """Read the child's stdout until a line starting with `prefix`; the rest of that line.

    The timeout is checked between lines: a child that says nothing at all blocks the read
    (every child prints its lines promptly or exits)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"process exited ({proc.poll()}) before {prefix!r}")
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise RuntimeError(f"timed out waiting for {prefix!r}")


def command(proc: subprocess.Popen[str], line: str) -> None:
    """Send the child one command line (`mark`, `report` ...)."""
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def pinned(core: int | None, argv: list[str]) -> list[str]:
    """``argv`` on one core (taskset); unchanged when `core` is None."""
    return ["taskset", "-c", str(core), *argv] if core is not None else argv


def prioritise(proc: subprocess.Popen[Any], nice: int) -> None:
    """Give a child started with ``start_new_session`` the nice value `nice` (0: leave it).

    The child has its own session, hence its own scheduler autogroup, whose nice value is set
    here: with autogroups on (the Linux default) a plain ``nice`` only ranks processes within
    one session, not against other users' work."""
    if not nice:
        return
    try:
        Path(f"/proc/{proc.pid}/autogroup").write_text(str(nice))
    except OSError:
        os.setpriority(os.PRIO_PROCESS, proc.pid, nice)


_YARDSTICK = """
import binascii, json, sys, time
sys.stdin.readline()  # go once the parent has set this process's priority
frame = bytes(range(160))
best = float("inf")
for _ in range(5):
    start = time.perf_counter()
    for _ in range(4000):
        payload = binascii.b2a_base64(frame, newline=False).decode()
        json.loads(json.dumps({"event": "media", "media": {"payload": payload}}))
    best = min(best, time.perf_counter() - start)
print(best / 4000 * 1e6)
"""


def yardstick(core: int | None, nice: int) -> float:
    """How fast the machine is this minute, on ``core``: microseconds per reference operation
    (one media message's base64 and JSON round trip in pure CPython), best of 5 x 4000.

    The same daemon costs 15-24 us per media message on this VM from one hour to the next
    with nothing else on its core; this figure, taken just before a level, says which kind
    of minute the level ran in."""
    proc = subprocess.Popen(
        pinned(core, [sys.executable, "-c", _YARDSTICK]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    prioritise(proc, nice)
    out, _ = proc.communicate("go\n", timeout=60)
    return float(out)


_FLOOR_LINE = re.compile(r"sender CPU ([0-9.]+) us per write")


def send_floor(core: int | None, reader_core: int, nice: int, seconds: float = 2.0) -> float:
    """How fast the machine's loopback TCP path is this minute: microseconds of the sender's
    CPU per 340-byte write, 400 connections each written every 20 ms from ``core`` to a reader
    on ``reader_core`` (``bench/bench_send_floor.py``: none of our code).

    The yardstick above is pure Python and barely moves when the daemon's cost per media
    message does: the slow minutes of this VM are in system calls and the kernel's TCP path,
    which this measures. ``nan`` without a core to pin to."""
    if core is None:
        return float("nan")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "bench" / "bench_send_floor.py"),
            "--seconds",
            str(seconds),
            "--core",
            str(core),
            "--reader-core",
            str(reader_core),
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    prioritise(proc, nice)
    out, _ = proc.communicate(timeout=60)
    found = _FLOOR_LINE.search(out)
    return float(found.group(1)) if found else float("nan")


def family(pid: int) -> list[int]:
    """`pid` and its children (a `--workers` parent and its workers)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *(int(c) for c in children)]


def start_daemon(
    home: Path,
    *,
    core: int | None,
    nice: int,
    log_level: str,
    cwd: Path = REPO,
    workers: int = 1,
    python: str = sys.executable,
) -> subprocess.Popen[bytes]:
    """`voicecall daemon run` (the real CLI entry point, exec'd into the daemon) on `home`'s
    config.toml, pinned to `core`, logging to home/daemon.log; no vendor key or voicecall
    setting of the caller's environment leaks in. `workers` > 1: `--workers N` (the workers
    inherit the pinning). `python`: the interpreter that runs it (another CPython's
    environment with voicecall installed, to compare interpreters)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VOICECALL_", "OPENAI_", "ELEVENLABS_", "TWILIO_"))
    }
    env.update(VOICECALL_HOME=str(home), VOICECALL_NO_KEYRING="1", VOICECALL_LOG_LEVEL=log_level)
    with open(home / "daemon.log", "wb") as daemon_log:
        daemon = subprocess.Popen(
            pinned(
                core,
                [
                    python,
                    "-m",
                    "voicecall_cli",
                    "--socket",
                    str(home / "run" / "daemon.sock"),
                    "daemon",
                    "run",
                    *(["--workers", str(workers)] if workers > 1 else []),
                ],
            ),
            env=env,
            cwd=cwd,
            stdout=daemon_log,
            stderr=daemon_log,
            start_new_session=True,
        )
    prioritise(daemon, nice)
    return daemon


def daemon_status(home: Path, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """Poll `daemon.status` on the daemon of `home` until it answers; its answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited {proc.returncode}")
        try:
            with RpcClient(home / "run" / "daemon.sock", timeout=2.0) as client:
                status: dict[str, Any] = client.call("daemon.status")
                return status
        except (DaemonUnreachableError, ConnectionError, OSError):
            time.sleep(0.1)
    raise RuntimeError("the daemon did not answer daemon.status")


def stop_all(procs: list[subprocess.Popen[Any]], timeout: float = 30.0) -> None:
    """Stop the children, last started first, each gone before the next is told (the load
    generator before the daemon before the fakes): SIGTERM, wait, kill what lingers."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_loadgen(
    script: Path,
    *,
    core: int | None,
    nice: int,
    webhook: str,
    auth_token: str,
    to: str,
    n: int,
    rate: float,
    extra: list[str],
    log: Any,
) -> subprocess.Popen[str]:
    """A load generator (`daemon_loadgen.py`, `realtime_loadgen.py`) pinned to `core`, in its
    own session at `nice`, speaking the line protocol over its stdin/stdout."""
    gen = subprocess.Popen(
        pinned(
            core,
            [
                sys.executable,
                str(script),
                "--webhook",
                webhook,
                "--auth-token",
                auth_token,
                "--to",
                to,
                "--n",
                str(n),
                "--rate",
                str(rate),
                *extra,
            ],
        ),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    prioritise(gen, nice)
    return gen


def start_py_spy(
    pid: int,
    out: str,
    *,
    seconds: float,
    rate: int,
    core: int | None,
    native: bool,
    log: Any,
    timeline: bool = False,
) -> subprocess.Popen[bytes]:
    """py-spy on `pid` for `seconds`, raw collapsed stacks to `out` (bench/pyspy_breakdown.py
    reads them). Without `native` it samples without pausing the process (--nonblocking);
    --native needs the pauses (py-spy refuses both), so that run's latency figures include
    them. With `timeline`, every sample in time order (chrometrace, idle samples included, so
    the loop's waits in epoll show; bench/pyspy_turns.py reads it)."""
    return subprocess.Popen(
        pinned(
            core,
            [
                "py-spy",
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--duration",
                str(max(1, round(seconds))),
                "--format",
                "chrometrace" if timeline else "raw",
                *(["--idle"] if timeline else []),
                "--native" if native else "--nonblocking",
                "-o",
                out,
            ],
        ),
        stdout=log,
        stderr=log,
    )
