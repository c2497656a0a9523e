#!/usr/bin/env python3
"""Time per operator in a stage_bench --trace file.

    stage_bench --model=M --threads=1 --steps=3 --trace=/tmp/trace.json
    python3 tools/bench/trace_ops.py /tmp/trace.json [--top 25]

The trace (libtorch's profiler, Chrome trace JSON) holds nested intervals
per thread; an operator's self time is its interval minus the intervals
directly inside it, so the self times add up to the traced time once.
Prints self milliseconds, share and call count per operator name, largest
first. The profiler adds a few microseconds to every call, so operators
called very often look costlier than they are untraced.
"""
import argparse
import collections
import json
import sys


def self_times(events):
    """{name: [self_us, calls]} over complete ('X') events, per thread."""
    by_thread = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X":
            by_thread[e.get("tid")].append(e)
    totals = collections.defaultdict(lambda: [0.0, 0])
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        open_ = []  # [end, name, child_us, dur_us]
        for e in evs:
            start, end = e["ts"], e["ts"] + e["dur"]
            while open_ and open_[-1][0] <= start:
                open_.pop()
            if open_:
                open_[-1][2] += e["dur"]
            entry = [end, e["name"], 0.0, e["dur"]]
            open_.append(entry)
            totals[e["name"]][1] += 1
            e["_entry"] = entry
        for e in evs:
            entry = e["_entry"]
            totals[entry[1]][0] += entry[3] - entry[2]
    return totals


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    try:
        with open(args.trace) as f:
            events = json.load(f)
    except (OSError, ValueError) as e:
        print(f"trace_ops: cannot read {args.trace}: {e}", file=sys.stderr)
        return 1
    if isinstance(events, dict):
        events = events.get("traceEvents", [])
    totals = self_times(events)
    all_us = sum(t for t, _ in totals.values())
    if all_us <= 0:
        print(f"trace_ops: {args.trace} has no timed events", file=sys.stderr)
        return 1
    print(f"{all_us / 1e3:.1f} ms traced")
    print(f"{'self ms':>10} {'share':>6} {'calls':>7}  operator")
    for name, (us, calls) in sorted(totals.items(), key=lambda kv: -kv[1][0])[: args.top]:
        print(f"{us / 1e3:10.1f} {100 * us / all_us:5.1f}% {calls:7d}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
