#!/usr/bin/env python3
"""Where a variant's instructions run, from the dumps `dimmer-callgrind --keep DIR` keeps.

    bench/callgrind-split.py objects DIR/NoopWasm DIR/DocumentedFlags
    bench/callgrind-split.py calls   DIR/NoopWasm DIR/DocumentedFlags

Each directory holds one variant's dumps: `cg.out.PID.1-NN` are the measured
requests (thread NN), `.2-NN` the same span idle. The worker thread is the
busiest `.1-` dump. Figures are per request (`--requests`, dimmer-callgrind's
default 2000).

`objects`: instructions a request by object, the unsymbolized code split by
address: high addresses are JIT code (the filter's wasm and V8's wrappers),
low ones Envoy's own remapped code (its allocator among it: `free`
resolves there).

`calls`: the functions the second variant calls more often than the first,
ranked by what the extra calls cost (calls a request times inclusive
instructions a call): what the second variant's extra work is made of.
`calls --of FN`: who calls FN (an address, for Envoy's stripped binary), a
request, and how much more often than in the first.
"""

import argparse
import collections
import glob
import os
import re
import subprocess


def worker_dump(directory):
    dumps = glob.glob(os.path.join(directory, "cg.out.*.1-*"))
    if not dumps:
        raise SystemExit(f"{directory}: no cg.out.*.1-* dump (dimmer-callgrind --keep)")
    return max(dumps, key=os.path.getsize)


def objects(dump, requests):
    out = subprocess.run(
        ["callgrind_annotate", "--threshold=100", dump],
        capture_output=True, text=True, check=True,
    ).stdout
    sums = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+) \([^)]*\)\s+(\S+) \[(.*)\]$", line)
        if not m:
            continue
        n = int(m.group(1).replace(",", ""))
        obj = m.group(3)
        if obj == "???":
            low = re.search(r":0x0{6}", m.group(2)) is not None
            obj = "??? low addresses (Envoy's remapped code)" if low else "??? high addresses (JIT: wasm, V8 wrappers)"
        sums[os.path.basename(obj)] += n
    return {k: v / requests for k, v in sums.items()}


def graph(dump):
    """(names, self cost, calls into each function by caller, inclusive cost of each call edge)."""
    names, self_cost = {}, collections.Counter()
    calls = collections.defaultdict(collections.Counter)
    inclusive = collections.Counter()
    current = target = None
    pending_calls = None
    for line in open(dump):
        line = line.rstrip("\n")
        m = re.match(r"^fn=\((\d+)\)(?: (.*))?$", line)
        if m:
            current, target = m.group(1), None
            if m.group(2):
                names[current] = m.group(2)
            continue
        m = re.match(r"^cfn=\((\d+)\)(?: (.*))?$", line)
        if m:
            target = m.group(1)
            if m.group(2):
                names[target] = m.group(2)
            continue
        m = re.match(r"^calls=(\d+)", line)
        if m and target:
            pending_calls = int(m.group(1))
            calls[target][current] += pending_calls
            continue
        m = re.match(r"^[+-]?\d+ (\d+)$", line) or re.match(r"^\* (\d+)$", line)
        if m and current:
            if pending_calls is not None:
                inclusive[target] += int(m.group(1))
                pending_calls, target = None, None
            else:
                self_cost[current] += int(m.group(1))
    return names, self_cost, calls, inclusive


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["objects", "calls"])
    p.add_argument("base")
    p.add_argument("variant")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--of", help="calls: list the callers of this function instead")
    a = p.parse_args()
    base, variant = worker_dump(a.base), worker_dump(a.variant)
    if a.mode == "objects":
        x, y = objects(base, a.requests), objects(variant, a.requests)
        print(f"| object | {a.base} | {a.variant} | difference |\n|---|---:|---:|---:|")
        for k in sorted(set(x) | set(y), key=lambda k: -y.get(k, 0)):
            print(f"| {k} | {x.get(k, 0) / 1000:.1f}k | {y.get(k, 0) / 1000:.1f}k | {(y.get(k, 0) - x.get(k, 0)) / 1000:+.1f}k |")
        return
    bn, _, bc, _ = graph(base)
    vn, _, vc, vi = graph(variant)
    if a.of:
        # Who calls `--of`, and how much more often than in the base.
        named = lambda names, calls: collections.Counter(
            {names.get(c, c): n for f, cs in calls.items() if names.get(f, f) == a.of for c, n in cs.items()})
        b, v = named(bn, bc), named(vn, vc)
        print(f"callers of {a.of}: calls a request, and more than in {a.base}")
        for c in sorted(v, key=lambda c: -(v[c] - b.get(c, 0))):
            if abs(v[c] - b.get(c, 0)) >= 0.5 * a.requests:
                print(f"  {v[c] / a.requests:7.1f} {(v[c] - b.get(c, 0)) / a.requests:+7.1f}  {c}")
        return
    total = lambda names, calls: {names.get(f, f): sum(c.values()) for f, c in calls.items()}
    bcalls, vcalls = total(bn, bc), total(vn, vc)
    ids = {n: i for i, n in vn.items()}
    rows = []
    for f, n in vcalls.items():
        more = (n - bcalls.get(f, 0)) / a.requests
        per_call = vi[ids[f]] / n if f in ids and n else 0
        rows.append((more * per_call, more, n / a.requests, per_call, f))
    print(f"functions called more often than in {a.base}, by the instructions the extra calls cost (inclusive):")
    print("  extra a request | calls more | calls | a call | function")
    for cost, more, n, per_call, f in sorted(rows, reverse=True)[:15]:
        print(f"  {cost / 1000:8.1f}k | {more:+6.1f} | {n:6.1f} | {per_call:7.0f} | {f}")


if __name__ == "__main__":
    main()
