"""Tests of scripts/gpu/ab.py, the alternating A/B of `bench`'s pass times, with a stand-in
for the `orthrus` binary (a script that prints a pass_ms whose times depend on the
setting and drift with every run), so that what it orders and reports can be checked
here: each setting runs first in half the rounds, B's change is the setting's alone and
not the drift's, and bad input gets a message, not a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
AB = REPO / "scripts" / "gpu" / "ab.py"

# Every run is 2% slower than the one before (a drifting machine); with FAST=1
# the step is 10% quicker, the one-token pass the same.
STAND_IN = """#!/usr/bin/env python3
import json, os, sys
counter = os.environ["AB_COUNTER"]
n = int(open(counter).read()) if os.path.exists(counter) else 0
open(counter, "w").write(str(n + 1))
open(os.environ["AB_LOG"], "a").write(("B" if os.environ.get("FAST") else "A") + "\\n")
drift = 1.02 ** n
step = 3.0 * (0.9 if os.environ.get("FAST") else 1.0)
print(json.dumps({"args": sys.argv[1:], "pass_ms": {"ar_1": 1.0 * drift, "step_15": step * drift}}))
"""


def stand_in(tmp_path: Path) -> dict:
    binary = tmp_path / "orthrus"
    binary.write_text(STAND_IN)
    binary.chmod(0o755)
    return {**os.environ, "ORTHRUS_BIN": str(binary), "AB_COUNTER": str(tmp_path / "n"),
            "AB_LOG": str(tmp_path / "log")}


def run(args, env):
    return subprocess.run([sys.executable, str(AB), *args], env=env, capture_output=True, text=True)


def row(out: str, key: str) -> list[str]:
    return next(line.split() for line in out.splitlines() if line.startswith(key + " "))


def test_each_setting_runs_first_in_half_the_rounds_and_drift_cancels(tmp_path):
    env = stand_in(tmp_path)
    done = run(["--rounds", "4", "--out", str(tmp_path / "runs"), "-", "FAST=1", "--", "-m", "x.gguf"], env)
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "log").read_text().split()
    assert log == ["A", "B", "B", "A", "B", "A", "A", "B"]
    # The one-token pass is the same under both: drift alone, balanced out.
    ar = row(done.stdout, "ar_1")
    assert abs(float(ar[3].rstrip("%"))) < 0.5, done.stdout
    # The step is 10% quicker under B, every round.
    step = row(done.stdout, "step_15")
    assert -10.5 < float(step[3].rstrip("%")) < -9.5, done.stdout
    assert step[4] == "4/4"
    # The kept runs give the same table.
    again = run(["--report", str(tmp_path / "runs")], env)
    assert again.returncode == 0 and row(again.stdout, "step_15") == step


def test_a_fixed_order_would_have_shown_the_drift(tmp_path):
    # What the alternation is for: the same stand-in with A always first makes
    # B's one-token pass look 2% slower (it always runs later).
    env = stand_in(tmp_path)
    for r in range(4):
        for s, fast in (("A", ""), ("B", "1")):
            out = subprocess.run([env["ORTHRUS_BIN"], "bench"], env={**env, "FAST": fast},
                                 capture_output=True, text=True, check=True).stdout
            (tmp_path / f"{s}-{r}.json").write_text(out)
    done = run(["--report", str(tmp_path)], env)
    assert float(row(done.stdout, "ar_1")[3].rstrip("%")) > 1.5, done.stdout


def test_a_setting_can_name_another_binary(tmp_path):
    # Two builds compared: B's ORTHRUS_BIN is a copy of the stand-in that
    # always runs as FAST; A keeps the default binary.
    env = stand_in(tmp_path)
    other = tmp_path / "other"
    other.write_text(STAND_IN.replace('os.environ.get("FAST")', "True"))
    other.chmod(0o755)
    done = run(["--rounds", "2", "-", f"ORTHRUS_BIN={other}", "--", "-m", "x.gguf"], env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "log").read_text().split() == ["A", "B", "B", "A"]
    assert float(row(done.stdout, "step_15")[3].rstrip("%")) < -9.5, done.stdout


def test_bad_input_gets_a_message(tmp_path):
    env = stand_in(tmp_path)
    bad_setting = run(["NOEQUALS", "-", "--", "-m", "x.gguf"], env)
    assert bad_setting.returncode != 0 and "NAME=VALUE" in bad_setting.stderr
    assert "Traceback" not in bad_setting.stderr
    no_binary = run(["-", "-", "--", "-m", "x.gguf"], {**env, "ORTHRUS_BIN": str(tmp_path / "none")})
    assert no_binary.returncode != 0 and "ORTHRUS_BIN" in no_binary.stderr
    assert "Traceback" not in no_binary.stderr
    no_separator = run(["-", "-"], env)
    assert no_separator.returncode != 0 and "usage" in no_separator.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no round" in run(["--report", str(empty)], env).stdout
