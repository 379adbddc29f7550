"""Two settings' pass times, in alternating order: `bench`'s `pass_ms` (one
pass of each view and size, and whole steps) under settings A and B, run as
A B B A, B A A B, ... so that a machine whose speed drifts during the runs
favours neither, then per pass the mean of each, B's change and in how many
rounds B was quicker. On an H100 a fixed order (A, then B, every round) made
B look 2% quicker on passes it did not change.

    python3 scripts/gpu/ab.py [--rounds N] [--deadline EPOCH] [--out DIR]
        A B -- BENCH ARGS...

A and B: comma-separated NAME=VALUE environment settings, or "-" for none;
ORTHRUS_BIN among them runs that setting with another binary (two builds).
BENCH ARGS: what `orthrus bench` takes besides --json (the model, the
prompt); ORTHRUS_BIN names the binary (default gpu-carry/bin/orthrus, which
on the GPU machine runs once build-cuda.sh has built libggml-cuda.so beside it,
with LD_LIBRARY_PATH=gpu-carry/bin as start.sh sets it).
Runs after --deadline (seconds since the epoch) are skipped; the table
covers the rounds that ran both settings. With --out, each run's JSON is
kept there too.

    python3 scripts/gpu/ab.py --report DIR   # the table of a kept DIR
"""

import argparse
import json
import os
import subprocess
import sys
import time


def settings(spec):
    if spec == "-":
        return {}
    out = {}
    for item in spec.split(","):
        name, sep, value = item.partition("=")
        if not sep or not name:
            sys.exit(f"ab.py: {item!r} is not NAME=VALUE")
        out[name] = value
    return out


def order(rounds):
    """Which setting runs first in each round: A, B, B, A, ..."""
    return [("A", "B") if r % 4 in (0, 3) else ("B", "A") for r in range(rounds)]


def table(runs):
    """runs: {round: {"A": pass_ms, "B": pass_ms}}; the rounds with both."""
    pairs = [(r["A"], r["B"]) for r in runs.values() if "A" in r and "B" in r]
    if not pairs:
        return "no round ran both settings"
    keys = sorted(set(pairs[0][0]) & set(pairs[0][1]), key=lambda k: (k.split("_")[0], int(k.split("_")[-1])))
    lines = [f"{len(pairs)} rounds; ms, mean of each", f"{'pass':16s} {'A':>8s} {'B':>8s} {'B/A':>7s}  B quicker"]
    for k in keys:
        a = [p[0][k] for p in pairs if k in p[0] and k in p[1]]
        b = [p[1][k] for p in pairs if k in p[0] and k in p[1]]
        ma, mb = sum(a) / len(a), sum(b) / len(b)
        quicker = sum(1 for x, y in zip(a, b) if y < x)
        lines.append(f"{k:16s} {ma:8.3f} {mb:8.3f} {100 * (mb / ma - 1):+6.1f}%  {quicker}/{len(a)}")
    return "\n".join(lines)


def report(directory):
    runs = {}
    for name in os.listdir(directory):
        stem, ext = os.path.splitext(name)
        setting, _, r = stem.partition("-")
        if ext != ".json" or setting not in ("A", "B") or not r.isdigit():
            continue
        with open(os.path.join(directory, name)) as f:
            passes = json.load(f).get("pass_ms")
        if passes:
            runs.setdefault(int(r), {})[setting] = passes
    return table(runs)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        print(report(sys.argv[2]))
        return
    argv = sys.argv[1:]
    if "--" not in argv:
        sys.exit("usage: ab.py [--rounds N] [--deadline EPOCH] [--out DIR] A B -- BENCH ARGS...")
    split = argv.index("--")
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--deadline", type=float, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("a")
    ap.add_argument("b")
    args = ap.parse_args(argv[:split])
    bench = argv[split + 1:]
    env = {"A": settings(args.a), "B": settings(args.b)}
    binary = os.environ.get("ORTHRUS_BIN", "gpu-carry/bin/orthrus")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    runs = {}
    for r, pair in enumerate(order(args.rounds)):
        for s in pair:
            if args.deadline is not None and time.time() > args.deadline:
                continue
            exe = env[s].get("ORTHRUS_BIN", binary)
            try:
                done = subprocess.run([exe, "bench", *bench, "--json"], env={**os.environ, **env[s]},
                                      capture_output=True, text=True)
            except OSError as e:
                sys.exit(f"ab.py: {exe}: {e} (set ORTHRUS_BIN)")
            if done.returncode != 0:
                sys.exit(f"ab.py: setting {s}, round {r}: {done.stderr.strip()[-500:]}")
            result = json.loads(done.stdout)
            if args.out:
                with open(os.path.join(args.out, f"{s}-{r}.json"), "w") as f:
                    json.dump(result, f)
            if result.get("pass_ms"):
                runs.setdefault(r, {})[s] = result["pass_ms"]
    print(f"A: {args.a}   B: {args.b}")
    print(table(runs))


if __name__ == "__main__":
    main()
