"""Tests of scripts/gpu/trace-report.py, which reads what scripts/gpu/ktrace.cpp records
on the GPU machine (CUPTI has no stand-in here), on traces written by hand: passes are the
kernels of one cudaGraphLaunch, kinds are CUDA graphs, and the times it reports are the
ones the trace implies.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REPORT = REPO / "scripts" / "gpu" / "trace-report.py"

MMV = "void orthrus_mmv::mmv_kernel<(orthrus_mmv::WType)0, 2, 1>(char const*, void const*, float const*, float*, int)"
NORM = "void rms_norm_f32<1024, true, false, false>(float const*, float*, int)"


def trace(tmp_path: Path) -> Path:
    """Graph 7 (a pass of three kernels, 1000 ns idle inside) and graph 9 (one kernel)
    alternate 6 times each, 10 us apart; one eager kernel and one copy besides."""
    lines, t, corr = [], 0, 100
    for i in range(12):
        graph = 7 if i % 2 == 0 else 9
        lines.append(f"R,{t},{t + 2000},{corr},cudaGraphLaunch_v10000")
        s = t + 3000
        kernels = [(MMV, 4000), (NORM, 2000), (MMV, 4000)] if graph == 7 else [(NORM, 5000)]
        for j, (name, dur) in enumerate(kernels):
            lines.append(f"K,{s},{s + dur},{corr},{graph},{name}")
            s += dur + (500 if j < len(kernels) - 1 else 0)
        t = s + 10000
        corr += 1
    lines.append(f"R,{t},{t + 100},999,cudaLaunchKernel_v7000")
    lines.append(f"K,{t + 200},{t + 300},999,0,{NORM}")
    lines.append(f"M,{t + 400},{t + 500},998,0,64,2")
    path = tmp_path / "trace.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPORT), *args], capture_output=True, text=True)


def test_passes_kinds_and_times(tmp_path: Path) -> None:
    r = run(str(trace(tmp_path)), "hand-made", "3")
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == "== hand-made: 12 graph launches, 24 of 25 kernels inside them"
    kinds = [line for line in out if line.startswith("-- graph")]
    assert len(kinds) == 2
    # Graph 7: three kernels, 4000 + 2000 + 4000 ns with two 500 ns gaps; the GPU idled
    # 10 us before each pass; a step of the two kinds is 3000 + 11000 + 10000 + 3000 + 5000 + 10000 ns.
    assert kinds[0] == ("-- graph 7: 6 passes, 3 kernels; span 11.0 us, busy 10.0, idle 1.0, before 13.0, "
                        "period 42.0; launch call to first kernel 3.0")
    assert kinds[1].startswith("-- graph 9: 6 passes, 1 kernels; span 5.0 us, busy 5.0, idle 0.0, before 13.0")
    # The kernels of graph 7 by name (without namespaces and parameters), per pass.
    first = out.index(kinds[0])
    assert out[first + 2].split() == ["mmv_kernel<(WType)0,", "2,", "1>", "8.0", "2.0", "4.00"]
    assert out[first + 3].split() == ["rms_norm_f32<1024,", "true,", "false,", "false>", "2.0", "1.0", "2.00"]


def test_kinds_below_the_minimum_are_left_out(tmp_path: Path) -> None:
    r = run(str(trace(tmp_path)), "hand-made", "7")
    assert r.returncode == 0, r.stderr
    assert not [line for line in r.stdout.splitlines() if line.startswith("-- graph")]


def test_usage() -> None:
    r = run()
    assert r.returncode != 0 and "usage" in r.stderr
