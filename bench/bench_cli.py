"""Whole-process wall time of `voicecall status` with the daemon up (SPEC 12: median <= 120 ms).

Starts a throwaway mock daemon, then runs the installed `voicecall` console script (the one next
to the running interpreter) N times with `--socket` pointing at it, and `python -c pass` N times as
the interpreter-startup baseline.

Run: python bench/bench_cli.py [--n 30]
Prints one summary line: cli_status median=..ms p90=..ms ... python_startup median=..ms
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import median, percentile, running_daemon


def _console_script() -> str:
    """The `voicecall` script installed next to this interpreter (else the one on PATH)."""
    beside = Path(sys.executable).parent / "voicecall"
    if beside.exists():
        return str(beside)
    found = shutil.which("voicecall")
    if found is None:
        raise SystemExit("no `voicecall` console script: run `pip install -e .` first")
    return found


def _time_runs(argv: list[str], n: int, env: dict[str, str]) -> list[float]:
    """Wall time (ms) of `n` runs of `argv`; every run must exit 0."""
    times = []
    for _ in range(n):
        started = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, check=False)
        times.append((time.perf_counter() - started) * 1000)
        if done.returncode != 0:
            raise SystemExit(f"{argv} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return times


def main() -> None:
    """Parse arguments, run both series, print the summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30, help="runs of each command")
    n = parser.parse_args().n
    script = _console_script()
    with running_daemon() as daemon:
        argv = [script, "--socket", str(daemon.socket), "--no-autostart", "status"]
        _time_runs(argv, 2, daemon.env)  # warm the page cache and .pyc files
        cli = _time_runs(argv, n, daemon.env)
        base = _time_runs([sys.executable, "-c", "pass"], n, daemon.env)
    print(
        f"cli_status median={median(cli):.1f}ms p90={percentile(cli, 90):.1f}ms "
        f"min={min(cli):.1f}ms n={n} target_median<=120ms "
        f"python_startup median={median(base):.1f}ms p90={percentile(base, 90):.1f}ms"
    )


if __name__ == "__main__":
    main()
