#!/usr/bin/env python3
"""Picks prompts on which the bundled model's acceptance changes mid-generation.

The prompts are the 8 lines of Python before a docstring opens or a comment
follows code: the model first writes prose, where its drafts are rarely
accepted, and then code, where most are. Each candidate runs 256 tokens in
`orthrus` mode (`orthrus run --json`); a prompt is kept when its first
quarter of the generation commits at most 2.5 tokens a step and its second
half at least 2.5 times as many, with no quarter at 15 or more (a loop that
repeats itself). Writes the first COUNT kept, in a shuffled order (seed 7),
as a JSON list of strings for `orthrus bench --prompts-file`.

    python3 scripts/shifting-prompts.py /usr/lib/python3.11 target/release/orthrus \\
        > models/tiny-orthrus/shifting-prompts.json

Takes about a minute a hundred candidates on 2 cores; prints progress on
stderr.
"""
import json
import pathlib
import random
import subprocess
import sys

MODEL = "models/tiny-orthrus/tiny-orthrus-q8_0.gguf"
COUNT = 16
TOKENS = 256


def candidates(lib):
    out = []
    for f in sorted(pathlib.Path(lib).glob("*.py")):
        try:
            lines = f.read_text().splitlines(keepends=True)
        except (OSError, UnicodeDecodeError):
            continue
        for i, line in enumerate(lines):
            s = line.strip()
            if i <= 8:
                continue
            docstring = (s.startswith('"""') and len(s) > 12 and not s.endswith('"""')
                         and i + 1 < len(lines) and lines[i + 1].strip()
                         and not lines[i + 1].strip().startswith('"""'))
            comment = (s.startswith("# ") and len(s) > 30
                       and not lines[i - 1].strip().startswith("#"))
            if docstring or comment:
                out.append("".join(lines[i - 8:i + 1]))
    random.Random(7).shuffle(out)
    return out


def quarters(binary, prompt):
    """Tokens committed per step in each quarter of the generation."""
    r = subprocess.run([binary, "run", "-m", MODEL, "-p", prompt, "-n", str(TOKENS),
                        "--mode", "orthrus", "--draft-max", "15", "--json"],
                       capture_output=True, text=True)
    if r.returncode:
        return None
    tokens = [s["accepted"] + 1 for s in json.loads(r.stdout)["steps"]]
    total, done = sum(tokens), 0
    q = [[], [], [], []]
    for t in tokens:
        q[min(3, 4 * done // total)].append(t)
        done += t
    return [sum(x) / len(x) if x else 0.0 for x in q]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    lib, binary = sys.argv[1:]
    kept = []
    for n, prompt in enumerate(candidates(lib)):
        q = quarters(binary, prompt)
        if q and q[0] <= 2.5 and (q[2] + q[3]) / 2 >= 2.5 * q[0] and max(q) < 15:
            kept.append(prompt)
            print(f"candidate {n}: kept ({len(kept)}), tokens a step by quarter "
                  + " ".join(f"{x:.2f}" for x in q), file=sys.stderr, flush=True)
        if len(kept) == COUNT:
            break
    json.dump(kept, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
