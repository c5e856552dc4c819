"""A probe of the daemon's garbage collections, for bench_daemon_streams.py runs (not shipped).

Put this folder on PYTHONPATH and set GCPROBE; Python imports this module at the
start of every process, and it acts only in the daemon (`voicecall daemon run`), writing to
GCPROBE_DIR (default /tmp) as gcprobe-<pid>-<mode>.txt:

- `collections`: every collection of an older generation, or of 2 ms and more, with its
  wall time, the thread's CPU time in it (so a pause is told from the core being taken
  away) and the generation counts before it.
- `cycles`: from GCPROBE_AT seconds after start (default 30), what the first
  three collections that find 100 objects or more found, by type, and for each type one
  reference cycle through an object of it (attribute names where they can be told): how
  docs/benchmarks.md found what an ended call left behind.

    GCPROBE=cycles PYTHONPATH=bench/gcprobe \\
        python bench/bench_daemon_streams.py --n 200 --churn 10
"""

from __future__ import annotations

import gc
import itertools
import os
import sys
import threading
import time
from collections import Counter, deque
from typing import Any


def _wanted() -> bool:
    """The daemon itself: `python -m daemon ...` (what `voicecall daemon run` execs into).
    The variables' names do not start with VOICECALL_: the benchmarks keep those from it."""
    argv = sys.orig_argv
    return "-m" in argv[:-1] and argv[argv.index("-m") + 1] == "daemon"


def _out(mode: str) -> Any:
    folder = os.environ.get("GCPROBE_DIR", "/tmp")
    return open(os.path.join(folder, f"gcprobe-{os.getpid()}-{mode}.txt"), "w")


def _collections() -> None:
    out = _out("collections")
    started: dict[str, Any] = {}

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.update(wall=time.perf_counter(), cpu=time.thread_time(), count=gc.get_count())
            return
        wall = time.perf_counter() - started["wall"]
        if wall < 0.002 and info["generation"] == 0:
            return
        cpu = time.thread_time() - started["cpu"]
        print(
            f"{time.monotonic():.2f} gen={info['generation']} {wall * 1000:.1f} ms "
            f"cpu={cpu * 1000:.1f} ms counts before={started['count']} "
            f"found={info['collected']}",
            file=out,
            flush=True,
        )

    gc.callbacks.append(note)


def _name(obj: object) -> str:
    kind = type(obj).__qualname__
    code = getattr(obj, "f_code", None)
    if code is not None:
        return f"frame({code.co_name}@{os.path.basename(code.co_filename)})"
    return kind


def _edge(source: object, target: object) -> str:
    """How `source` refers to `target`, as far as it can be told."""
    names = list(getattr(source, "__dict__", {}).items())
    names += [(n, getattr(source, n, None)) for n in getattr(type(source), "__slots__", ())]
    for name, value in names:
        if value is target:
            return f".{name}"
    if isinstance(source, dict):
        for key, value in source.items():
            if value is target:
                return f"[{key!r}]"[:40]
    for name in ("__self__", "__traceback__", "__context__", "tb_frame", "cell_contents"):
        if getattr(source, name, None) is target:
            return f".{name}"
    return " ->"


def _cycle(start: object, among: set[int]) -> str:
    """The shortest reference cycle through `start` within `among` (ids), as text."""
    parent: dict[int, object | None] = {id(start): None}
    todo = deque([start])
    while todo:
        obj = todo.popleft()
        for referent in gc.get_referents(obj):
            if referent is start:
                path = [obj]
                while parent[id(path[-1])] is not None:
                    path.append(parent[id(path[-1])])  # type: ignore[arg-type]
                path.reverse()
                path.append(start)
                steps = " ".join(f"{_name(a)}{_edge(a, b)}" for a, b in itertools.pairwise(path))
                return f"{steps} {_name(start)}"
            if id(referent) in among and id(referent) not in parent:
                parent[id(referent)] = obj
                todo.append(referent)
    return "(on no cycle: held by one)"


def _cycles() -> None:
    time.sleep(float(os.environ.get("GCPROBE_AT", "30")))
    out = _out("cycles")
    reported: list[int] = []

    def note(phase: str, info: dict[str, int]) -> None:
        if phase != "stop":
            return
        if len(reported) >= 3 or info["collected"] < 100:
            gc.garbage.clear()  # saved by DEBUG_SAVEALL, and not wanted
            return
        reported.append(info["collected"])
        kinds = Counter(type(obj).__qualname__ for obj in gc.garbage)
        print(f"== gen={info['generation']} found={info['collected']}: {dict(kinds)}", file=out)
        among = {id(obj) for obj in gc.garbage}
        seen: set[type] = set()
        for obj in gc.garbage:
            if type(obj) in seen or isinstance(obj, (dict, list, tuple, set)):
                continue
            seen.add(type(obj))
            print(f"  {type(obj).__qualname__}: {_cycle(obj, among)}", file=out)
        out.flush()
        gc.garbage.clear()

    gc.callbacks.append(note)
    gc.set_debug(gc.DEBUG_SAVEALL)


_MODE = os.environ.get("GCPROBE", "")
if _MODE and _wanted():
    if _MODE == "collections":
        _collections()
    elif _MODE == "cycles":
        threading.Thread(target=_cycles, name="gcprobe", daemon=True).start()
