#!/usr/bin/env python3
"""Self time per op of a Chrome trace that qat_bench writes with
MPQ_PROFILE=DIR (DIR/<model>_fp.json, _w4a4.json): each event's duration
less its children's, summed by name, as a share of the top-level time; and
beside it the count times the median of that name's self times, which a
few stalled events do not inflate (in a trace of 2026-12-03 on 2 cores,
single BatchNorm backwards of 19-134 ms among typical ones of 0.4-1.7 ms,
while unprofiled FP steps that hour stayed within 7%): where the two
differ much, the sum is the stalls'. For an op whose events differ in
shape (the convolutions), count x median is only a rough figure.

Usage: python3 bench/trace_self_time.py DIR/resnet20_fp.json [top=25]
"""
import collections
import json
import statistics
import sys

trace = json.load(open(sys.argv[1]))
top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
events = [e for e in (trace["traceEvents"] if isinstance(trace, dict) else trace) if e.get("ph") == "X"]
by_thread = collections.defaultdict(list)
for e in events:
    by_thread[e.get("tid")].append(e)
self_us = collections.Counter()
each = collections.defaultdict(list)  # name -> one self time per event
total = 0


def close(entry):  # [event, its self time]
    each[entry[0]["name"]].append(entry[1])


for evs in by_thread.values():
    evs.sort(key=lambda e: (e["ts"], -e["dur"]))
    stack = []  # [event, its self time so far]
    for e in evs:
        while stack and stack[-1][0]["ts"] + stack[-1][0]["dur"] <= e["ts"]:
            close(stack.pop())
        if stack:
            self_us[stack[-1][0]["name"]] -= e["dur"]
            stack[-1][1] -= e["dur"]
        else:
            total += e["dur"]
        self_us[e["name"]] += e["dur"]
        stack.append([e, e["dur"]])
    while stack:
        close(stack.pop())
print(f"{'sum':>12} {'share':>6} {'count x median':>16}  name")
for name, us in self_us.most_common(top):
    robust = len(each[name]) * statistics.median(each[name])
    print(f"{us / 1000:9.1f} ms {100 * us / total:5.1f}% {robust / 1000:13.1f} ms  {name} ({len(each[name])})")
print(f"top-level total {total / 1000:.1f} ms")
