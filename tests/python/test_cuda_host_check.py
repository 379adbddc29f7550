"""kernels/cuda/ compiles only on the GPU machine (nvcc). Here g++ parses and type-checks
its kernels and their tests (mmv, attn) against host-only stand-ins for the CUDA headers (cuda_stub/),
with the kernel launches' <<<...>>> taken out, so that an edit that breaks them shows in
CI and not only after a GPU machine's cold start.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STUB = Path(__file__).resolve().parent / "cuda_stub"


def host_source(path: Path) -> str:
    return re.sub(r"<<<[^>]*>>>", "", path.read_text())


def compiler() -> str:
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.fail("no C++ compiler")
    return cxx


def check(tmp_path: Path, kernel: str) -> subprocess.CompletedProcess:
    headers = [h.name for h in (REPO / "kernels" / "cuda").glob("*.cuh")]
    for name in [f"{kernel}-test.cu", *headers]:
        (tmp_path / name).write_text(host_source(REPO / "kernels" / "cuda" / name))
    cxx = compiler()
    return subprocess.run(
        [cxx, "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas",
         "-Wno-unused-parameter", "-I", str(STUB), "-x", "c++", str(tmp_path / f"{kernel}-test.cu")],
        capture_output=True, text=True,
    )


@pytest.mark.parametrize("kernel", ["mmv", "attn"])
def test_kernels_parse_and_type_check(tmp_path: Path, kernel: str) -> None:
    r = check(tmp_path, kernel)
    assert r.returncode == 0, r.stderr


def test_a_broken_kernel_fails(tmp_path: Path) -> None:
    # The check can fail: a call with a wrong argument count.
    good = (REPO / "kernels" / "cuda" / "mmv.cuh").read_text()
    assert "mma_k16(c, va, vb, h == 0 ? b[nt].x : b[nt].y);" in good
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "mmv.cuh").write_text(re.sub(r"<<<[^>]*>>>", "", good.replace(
        "mma_k16(c, va, vb, h == 0 ? b[nt].x : b[nt].y);", "mma_k16(c, va, h == 0 ? b[nt].x : b[nt].y);")))
    for name in ("mmv-test.cu", "test-util.cuh", "orthrus-launch.cuh"):
        (bad / name).write_text(host_source(REPO / "kernels" / "cuda" / name))
    r = subprocess.run([compiler(), "-std=c++17", "-fsyntax-only", "-I", str(STUB), "-x", "c++", str(bad / "mmv-test.cu")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "mma_k16" in r.stderr
