"""Tests of scripts/gpu/patch-ggml.py, which puts our CUDA kernels (kernels/cuda/) into
ggml-cuda. The GPU machine is the only place that compiles it, so here: the patch must
apply to the ggml-cuda.cu that llama-cpp-sys-2 vendors (each of its anchors found once),
declare what ggml-hook.cu defines, change nothing when run twice, and refuse, leaving the
file as it was, a source it no longer matches.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PATCH = REPO / "scripts" / "gpu" / "patch-ggml.py"
HOOK = REPO / "kernels" / "cuda" / "ggml-hook.cu"


def vendored_cuda() -> Path:
    home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    found = sorted(glob.glob(str(home / "registry/src/*/llama-cpp-sys-2-0.1.161/llama.cpp/ggml/src/ggml-cuda")))
    if not found:
        pytest.fail("llama-cpp-sys-2 0.1.161's ggml-cuda is not in the cargo registry (run cargo build first)")
    return Path(found[0])


@pytest.fixture()
def ggml(tmp_path: Path) -> Path:
    cuda = tmp_path / "ggml" / "src" / "ggml-cuda"
    cuda.mkdir(parents=True)
    shutil.copyfile(vendored_cuda() / "ggml-cuda.cu", cuda / "ggml-cuda.cu")
    return tmp_path / "ggml"


def run(ggml: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PATCH), str(ggml)], capture_output=True, text=True)


def test_applies_once_and_declares_the_hook(ggml: Path) -> None:
    before = (ggml / "src/ggml-cuda/ggml-cuda.cu").read_text()
    r = run(ggml)
    assert r.returncode == 0, r.stderr
    after = (ggml / "src/ggml-cuda/ggml-cuda.cu").read_text()
    cuda = ggml / "src" / "ggml-cuda"
    assert (cuda / "orthrus-mmv.cuh").read_bytes() == (REPO / "kernels/cuda/mmv.cuh").read_bytes()
    assert (cuda / "orthrus-attn.cuh").read_bytes() == (REPO / "kernels/cuda/attn.cuh").read_bytes()
    assert (cuda / "orthrus-launch.cuh").read_bytes() == (REPO / "kernels/cuda/orthrus-launch.cuh").read_bytes()
    assert (cuda / "orthrus-mmv.cu").read_bytes() == HOOK.read_bytes()
    # The call sits at the top of ggml_cuda_mul_mat, before ggml's own choices.
    body = after[after.index("static void ggml_cuda_mul_mat(ggml_backend_cuda_context & ctx"):]
    assert body.index("ggml_cuda_orthrus_mul_mat(ctx, src0, src1, dst)") < body.index("ggml_cuda_should_use_mmvf(")
    # Mode 2 turns the fused one-column products off.
    fuse = after[after.index("static bool ggml_cuda_should_fuse_mul_mat_vec_q("):]
    assert fuse.index("ggml_cuda_orthrus_mmv_mode() >= 2") < fuse.index("bad_padding_clear")
    # The residual add fuses into our matmul in ggml's mul_mat + add, before its own kernels.
    fuse = after[after.index("    // mul_mat + add\n"):]
    assert fuse.index("ggml_cuda_orthrus_mul_mat_add(*cuda_ctx, src0, src1, bias_tensor, bias_node)") < fuse.index(
        "ggml_cuda_should_fuse_mul_mat_vec_f(mm_node)")
    # Our attention comes first for GGML_OP_FLASH_ATTN_EXT.
    fa = after[after.index("        case GGML_OP_FLASH_ATTN_EXT:\n            if"):]
    assert fa.index("ggml_cuda_orthrus_flash_attn(ctx, dst)") < fa.index("ggml_cuda_flash_attn_ext(ctx, dst)")
    # Our RMS norm + matmul comes first in the fusion loop, before ggml's own fusions.
    loop = after[after.index("static int ggml_cuda_try_fuse("):]
    assert loop.index("ggml_cuda_orthrus_norm_mul_mat(*cuda_ctx, cgraph, i)") < loop.index("GGML_OP_MUL_MAT_ID")
    assert loop.index("ggml_cuda_orthrus_norm_mul_mat(*cuda_ctx, cgraph, i)") < loop.index("GGML_OP_RMS_NORM, GGML_OP_MUL")
    # The setter is exported by the registry under the name the engine asks for.
    assert '"ggml_backend_cuda_orthrus_set_mmv_mode") == 0' in after
    engine = (REPO / "kernels/src/ggml/backend.rs").read_text()
    assert 'c"ggml_backend_cuda_orthrus_set_mmv_mode"' in engine
    # Every function the patch declares is defined by the hook, with the same signature.
    hook = HOOK.read_text()
    decls = re.findall(r"^(int|bool) (ggml_cuda_orthrus_\w+)\(([^;]*)\);$", after, re.M)
    assert len(decls) == 6
    for ret, name, params in decls:
        flat = " ".join(params.split())
        defn = re.search(rf"^{ret} {name}\(([^{{]*)\)\s*{{", hook, re.M)
        assert defn, f"{name} is not defined in ggml-hook.cu"
        assert " ".join(defn.group(1).split()) == flat
    # Only additions: every line of ggml's file is still there, in order.
    kept = iter(after.splitlines())
    assert all(any(line == k for k in kept) for line in before.splitlines())


def test_written_files_keep_their_sources_times(ggml: Path) -> None:
    # A rebuild recompiles only what changed: each file written has the newest time of its sources.
    original = (ggml / "src/ggml-cuda/ggml-cuda.cu").stat().st_mtime_ns
    assert run(ggml).returncode == 0
    cuda = ggml / "src" / "ggml-cuda"
    for src, dst in [("mmv.cuh", "orthrus-mmv.cuh"), ("attn.cuh", "orthrus-attn.cuh"),
                     ("orthrus-launch.cuh", "orthrus-launch.cuh"), ("ggml-hook.cu", "orthrus-mmv.cu")]:
        assert (cuda / dst).stat().st_mtime_ns == (REPO / "kernels/cuda" / src).stat().st_mtime_ns
    assert (cuda / "ggml-cuda.cu").stat().st_mtime_ns == max(original, PATCH.stat().st_mtime_ns)


def test_twice_changes_nothing(ggml: Path) -> None:
    assert run(ggml).returncode == 0
    once = (ggml / "src/ggml-cuda/ggml-cuda.cu").read_text()
    assert run(ggml).returncode == 0
    assert (ggml / "src/ggml-cuda/ggml-cuda.cu").read_text() == once


def test_refuses_a_source_it_does_not_match(ggml: Path) -> None:
    target = ggml / "src/ggml-cuda/ggml-cuda.cu"
    text = target.read_text().replace("static void ggml_cuda_mul_mat(", "static void ggml_cuda_mul_mat_renamed(")
    text = text.replace("    const int warp_size = ggml_cuda_info().devices[ctx.device].warp_size;\n\n", "", 1)
    target.write_text(text)
    r = run(ggml)
    assert r.returncode == 1
    assert "copies of" in r.stderr
    assert target.read_text() == text
    assert not (ggml / "src/ggml-cuda/orthrus-mmv.cu").exists()


def test_usage_and_missing_tree(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(PATCH)], capture_output=True, text=True)
    assert r.returncode == 2 and "GGML_DIR" in r.stderr
    r = run(tmp_path / "nowhere")
    assert r.returncode == 1 and "no " in r.stderr
