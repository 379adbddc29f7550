#!/usr/bin/env python3
"""Writes tests/golden/reference-generate.json: greedy Orthrus generations of the float64
numpy reference (models/reference.py) on the committed fixtures, which
tests/tests/engine.rs compares the engine's tokens, drafts and acceptances with.

    scripts/make-golden.py            rewrite the file (after a change to the reference or the fixtures)
    scripts/make-golden.py --case N   print case N as computed now, one JSON line (the test
                                      that the committed file is still what this script writes)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "models"))
from reference import Model  # noqa: E402

GOLDEN = REPO / "tests" / "golden" / "reference-generate.json"
FIXTURES = ["tiny-tied-bf16", "tiny-untied-f16-sharded"]
PROMPTS = [[9707, 11, 1879, 0, 151644, 77, 30], [1, 2, 3, 4, 5], [151644, 872, 198, 9707, 30, 151645, 198]]
MAX_NEW = 40
CASES = [(f, p) for f in FIXTURES for p in PROMPTS]


def compute(fixture: str, prompt: list[int], models: dict[str, Model]) -> dict:
    if fixture not in models:
        models[fixture] = Model.load(REPO / "models" / "fixtures" / fixture)
    tokens, steps = models[fixture].generate_greedy(prompt, MAX_NEW, "orthrus", eos_ids=())
    return {"fixture": fixture, "ids": prompt, "max_new": MAX_NEW, "mode": "orthrus", "ignore_eos": True,
            "tokens": tokens, "steps": steps}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", type=int, default=None, help="print this case instead of writing the file")
    a = ap.parse_args()
    models: dict[str, Model] = {}
    if a.case is not None:
        if not 0 <= a.case < len(CASES):
            ap.error(f"--case must be in 0..{len(CASES) - 1}")
        print(json.dumps(compute(*CASES[a.case], models)))
        return 0
    cases = [compute(f, p, models) for f, p in CASES]
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text("[\n" + ",\n".join(json.dumps(c) for c in cases) + "\n]\n")
    print(f"wrote {GOLDEN.relative_to(REPO)}: {len(cases)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
