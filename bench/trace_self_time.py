#!/usr/bin/env python3
"""Self time per op of a Chrome trace that qat_bench writes with
MPQ_PROFILE=DIR (DIR/<model>_fp.json, _w4a4.json): each event's duration
less its children's, summed by name, as a share of the top-level time.

Usage: python3 bench/trace_self_time.py DIR/resnet20_fp.json [top=25]
"""
import collections
import json
import sys

trace = json.load(open(sys.argv[1]))
top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
events = [e for e in (trace["traceEvents"] if isinstance(trace, dict) else trace) if e.get("ph") == "X"]
by_thread = collections.defaultdict(list)
for e in events:
    by_thread[e.get("tid")].append(e)
self_us = collections.Counter()
total = 0
for evs in by_thread.values():
    evs.sort(key=lambda e: (e["ts"], -e["dur"]))
    stack = []
    for e in evs:
        while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"]:
            stack.pop()
        if stack:
            self_us[stack[-1]["name"]] -= e["dur"]
        else:
            total += e["dur"]
        self_us[e["name"]] += e["dur"]
        stack.append(e)
for name, us in self_us.most_common(top):
    print(f"{us / 1000:9.1f} ms {100 * us / total:5.1f}%  {name}")
print(f"top-level total {total / 1000:.1f} ms")
