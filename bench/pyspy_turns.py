"""What held the daemon's event loop in its long turns, from a py-spy timeline.

The health line's "timers up to N ms late" says the loop stalled, not why. This reads a py-spy
timeline of the daemon (`bench_daemon_streams.py --py-spy P --py-spy-timeline`: chrometrace,
1 kHz, idle samples included) and splits the main thread's time into busy stretches: runs of
samples in which the loop never waited in epoll. A stretch longer than `--over` ms is a stall
every timer and socket waited through. For those it prints what they were made of (the
categories of bench/pyspy_breakdown.py), the callbacks that ran in them (the first Python frame
above the loop), and the single longest frames, each with its heaviest inner calls, so one long
callback can be told from a crowd of short ones.

Sampling limits: a sample is 1 ms, so two calls of the same function back to back read as one;
py-spy sees Python frames only (C work shows as the Python call that made it). Assumes uvloop,
whose waits show as the bare base stack.

Run: python bench/pyspy_turns.py /tmp/spy-openai-400-ramp.json --over 20
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import Counter
from dataclasses import dataclass, field

from pyspy_breakdown import category


@dataclass
class Frame:
    """One frame instance above the loop: when it began and ended, and its inner time."""

    name: str
    start: int
    end: int = 0
    inner: Counter[str] = field(default_factory=Counter)


Sample = tuple[int, tuple[str, ...]]


def _label(event: dict[str, object]) -> str:
    args = event.get("args") or {}
    assert isinstance(args, dict)
    return f"{event['name']} ({args.get('filename', '?')}:{args.get('line', '?')})"


def samples(path: str) -> list[Sample]:
    """The busiest thread's stacks in time order (a stack holds from its ts to the next)."""
    with open(path) as f:
        events = json.load(f)
    per_thread: Counter[int] = Counter(e["tid"] for e in events)
    tid = per_thread.most_common(1)[0][0]
    stack: list[str] = []
    out: list[Sample] = []
    for event in events:
        if event["tid"] != tid:
            continue
        ts = int(event["ts"])
        if event["ph"] == "B":
            stack.append(_label(event))
        elif event["ph"] == "E" and stack:
            stack.pop()
        if out and out[-1][0] == ts:
            out[-1] = (ts, tuple(stack))
        else:
            out.append((ts, tuple(stack)))
    return out


LOOP_FRAME = "Runner.run ("
"""The last Python frame of the loop under uvloop (asyncio.run's runner): a callback's frames
sit right above it, and a sample that ends in it is the loop waiting in epoll."""


def base_depth(timeline: list[Sample]) -> int:
    """How many frames the loop's own stack has (module, main, asyncio.run, the runner)."""
    for _, stack in timeline:
        for i, label in enumerate(stack):
            if label.startswith(LOOP_FRAME):
                return i + 1
    raise SystemExit(f"no {LOOP_FRAME.strip(' (')} frame: not an asyncio.run program?")


def short(label: str) -> str:
    """`name (file:line)` with the file cut to its last two parts."""
    name, _, where = label.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(path.split('/')[-2:])})"


Stretch = tuple[int, int, list[tuple[int, tuple[str, ...]]]]
"""A busy stretch: start and end (us), and its samples as (duration, stack)."""


def split(timeline: list[Sample], base: int) -> tuple[list[Stretch], list[Frame], int]:
    """The busy stretches, the frame instances right above the loop, and the busy time."""
    stretches: list[Stretch] = []
    current: list[tuple[int, tuple[str, ...]]] = []
    frames: list[Frame] = []
    open_frame: Frame | None = None
    busy = 0
    for (ts, stack), (next_ts, _) in itertools.pairwise(timeline):
        span = next_ts - ts
        if len(stack) > base and stack[base - 1].startswith(LOOP_FRAME):
            busy += span
            current.append((span, stack))
            if open_frame is None or open_frame.name != stack[base]:
                if open_frame is not None:
                    open_frame.end = ts
                open_frame = Frame(stack[base], ts)
                frames.append(open_frame)
            open_frame.inner[stack[-1]] += span
            continue
        if current:
            stretches.append((ts - sum(s for s, _ in current), ts, current))
            current = []
        if open_frame is not None:
            open_frame.end = ts
            open_frame = None
    return stretches, frames, busy


def report_long(long_ones: list[Stretch], base: int, first: int, over: float, top: int) -> None:
    """What the stretches over `over` ms were made of, and each one's main callbacks."""
    in_long = sum(e - s for s, e, _ in long_ones)
    cats: Counter[str] = Counter()
    tops: Counter[str] = Counter()
    for _, _, parts in long_ones:
        for span, stack in parts:
            cats[category(";".join(stack[base:]))] += span
            tops[short(stack[base])] += span
    print(f"\n{len(long_ones)} stretches over {over:.0f} ms, {in_long / 1000:.0f} ms in all:")
    for name, span in cats.most_common():
        print(f"  {span / in_long * 100:5.1f} %  {name}")
    print("\ncallbacks in them (first frame above the loop):")
    for name, span in tops.most_common(top):
        print(f"  {span / in_long * 100:5.1f} %  {name}")
    print("\nthe long stretches (s after the first sample: ms, top callbacks):")
    for start, end, parts in long_ones:
        mix: Counter[str] = Counter()
        for span, stack in parts:
            mix[short(stack[base]).split(" (")[0]] += span
        names = ", ".join(f"{name} {span / 1000:.0f}" for name, span in mix.most_common(4))
        print(f"  {(start - first) / 1e6:6.2f} s {(end - start) / 1000:4.0f} ms: {names}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("timeline", help="py-spy chrometrace output (--idle)")
    parser.add_argument("--over", type=float, default=20.0, help="long stretch, ms")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    timeline = samples(args.timeline)
    base = base_depth(timeline)
    stretches, frames, busy = split(timeline, base)
    total = timeline[-1][0] - timeline[0][0]
    lengths = sorted(end - start for start, end, _ in stretches) or [0]
    print(
        f"{len(timeline)} samples over {total / 1e6:.1f} s; loop busy {busy / total * 100:.0f} %;"
        f" {len(stretches)} busy stretches, longest {lengths[-1] / 1000:.0f} ms;"
        f" over 10/20/40 ms: {sum(x > 10_000 for x in lengths)}/"
        f"{sum(x > 20_000 for x in lengths)}/{sum(x > 40_000 for x in lengths)}"
    )
    long_ones = [s for s in stretches if s[1] - s[0] > args.over * 1000]
    if long_ones:
        report_long(long_ones, base, timeline[0][0], args.over, args.top)
    print("\nlongest single frames above the loop, with their heaviest inner calls:")
    for frame in sorted(frames, key=lambda f: f.start - f.end)[: args.top]:
        inner = ", ".join(
            f"{short(name)} {span / 1000:.0f}" for name, span in frame.inner.most_common(3)
        )
        print(f"  {(frame.end - frame.start) / 1000:5.0f} ms  {short(frame.name)}: {inner}")


if __name__ == "__main__":
    main()
