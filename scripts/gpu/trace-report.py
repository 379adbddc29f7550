#!/usr/bin/env python3
"""Where a decoding run's time goes, from a ktrace.cpp trace: per kind of pass.

A pass is one cudaGraphLaunch and the kernels it ran (ggml-cuda computes a
graph it has seen before as a CUDA graph). Passes of one CUDA graph are one
kind; kinds with fewer than MIN passes are left out (warm-up, a prompt, the
shorter blocks at a run's end). Per kind, medians over its passes after the
first two:
  span      first kernel's start to last kernel's end
  busy      the kernels' own time (union of their intervals)
  idle      span - busy: the GPU waiting between the pass's kernels
  before    GPU idle from the previous pass's end to this pass's first kernel
            (the host's work between passes: argmax read back, inputs set,
            graph checked and launched)
  period    start to start of consecutive passes of this kind (a step of ar
            decoding; of orthrus decoding, for its verify pass)
then its kernels grouped by name, in microseconds per pass.

usage: trace-report.py TRACE.csv [LABEL] [MIN]
"""
import re
import statistics
import sys
from collections import defaultdict


def short(name):
    """A kernel's name with its template arguments, without parameters or namespaces."""
    name = re.sub(r"^void ", "", name)
    depth, cut = 0, len(name)
    for i, ch in enumerate(name):
        depth += (ch == "<") - (ch == ">")
        if ch == "(" and depth == 0 and i > 0:
            cut = i
            break
    return re.sub(r"\b\w+::", "", name[:cut])


def load(path):
    kernels, calls = [], {}
    with open(path, errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split(",", 5)
            if parts[0] == "K" and len(parts) == 6:
                kernels.append((int(parts[1]), int(parts[2]), int(parts[3]), int(parts[4]), parts[5]))
            elif parts[0] == "R" and len(parts) >= 5:
                calls[int(parts[3])] = (int(parts[1]), int(parts[2]), ",".join(parts[4:]))
    return kernels, calls


def union(intervals):
    total, end = 0, None
    for s, e in sorted(intervals):
        if end is None or s >= end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def report(path, label, min_passes):
    kernels, calls = load(path)
    by_corr = defaultdict(list)
    for k in kernels:
        call = calls.get(k[2])
        if call and call[2].startswith("cudaGraphLaunch"):
            by_corr[k[2]].append(k)
    passes = []
    for corr, ks in by_corr.items():
        ks.sort()
        passes.append({
            "launch": calls[corr][0],
            "start": ks[0][0],
            "end": max(k[1] for k in ks),
            "busy": union([(k[0], k[1]) for k in ks]),
            "graph": ks[0][3],
            "kernels": ks,
        })
    passes.sort(key=lambda p: p["start"])
    for prev, p in zip(passes, passes[1:]):
        p["before"] = p["start"] - prev["end"]
    kinds = defaultdict(list)
    for p in passes:
        kinds[p["graph"]].append(p)
    total_k = len(kernels)
    in_graphs = sum(len(p["kernels"]) for p in passes)
    print(f"== {label}: {len(passes)} graph launches, {in_graphs} of {total_k} kernels inside them")
    shown = [(g, ps) for g, ps in kinds.items() if len(ps) >= min_passes]
    shown.sort(key=lambda gp: gp[1][0]["start"])
    for g, ps in shown:
        use = ps[2:] if len(ps) > 4 else ps
        us = lambda xs: med(xs) / 1e3
        span = us([p["end"] - p["start"] for p in use])
        busy = us([p["busy"] for p in use])
        before = us([p["before"] for p in use if "before" in p])
        period = us([b["start"] - a["start"] for a, b in zip(use, use[1:])])
        lat = us([p["start"] - p["launch"] for p in use])
        nk = med([len(p["kernels"]) for p in use])
        print(f"-- graph {g}: {len(ps)} passes, {nk:.0f} kernels; span {span:.1f} us, busy {busy:.1f}, "
              f"idle {span - busy:.1f}, before {before:.1f}, period {period:.1f}; launch call to first kernel {lat:.1f}")
        names = defaultdict(lambda: [0, 0])
        for p in use:
            for k in p["kernels"]:
                n = names[short(k[4])]
                n[0] += k[1] - k[0]
                n[1] += 1
        print(f"   {'kernel':70s} {'us/pass':>8s} {'calls':>6s} {'us/call':>8s}")
        for name, (ns, n) in sorted(names.items(), key=lambda kv: -kv[1][0])[:22]:
            print(f"   {name[:70]:70s} {ns / len(use) / 1e3:8.1f} {n / len(use):6.1f} {ns / n / 1e3:8.2f}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    report(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else sys.argv[1], int(sys.argv[3]) if len(sys.argv) > 3 else 8)
