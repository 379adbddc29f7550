"""Tests of kernels/cuda/patches/*.patch and of kernels/cuda/cmake/apply-patches.cmake,
which applies them (with CMake alone) when kernels/cuda/CMakeLists.txt stages ggml for
`cargo build --features cuda` and for the GPU machine's build. No GPU or nvcc here, so:
the patches must apply to the ggml-cuda sources that llama-cpp-sys-2 vendors (each hunk's
text found once), as `git apply` applies them, put each hook where it belongs, declare
what ggml-hook.cu defines, leave an up-to-date file untouched, and refuse, writing
nothing, a source they no longer match.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CUDA = REPO / "kernels" / "cuda"
APPLY = CUDA / "cmake" / "apply-patches.cmake"
PATCHES = sorted((CUDA / "patches").glob("*.patch"))
HOOK = CUDA / "ggml-hook.cu"
TARGET = "src/ggml-cuda/ggml-cuda.cu"
COMMON = "src/ggml-cuda/common.cuh"


def vendored_ggml() -> Path:
    home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    found = sorted(glob.glob(str(home / "registry/src/*/llama-cpp-sys-2-0.1.161/llama.cpp/ggml")))
    if not found:
        pytest.fail("llama-cpp-sys-2 0.1.161's ggml is not in the cargo registry (run cargo build first)")
    return Path(found[0])


@pytest.fixture()
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src-ggml"
    (root / "src/ggml-cuda").mkdir(parents=True)
    for f in (TARGET, COMMON):
        shutil.copyfile(vendored_ggml() / f, root / f)
    return root


def apply(tmp_path: Path, src: Path, dest: Path, patches: list[Path] = PATCHES) -> subprocess.CompletedProcess:
    script = tmp_path / "apply.cmake"
    listed = " ".join(f'"{p}"' for p in patches)
    script.write_text(f'include("{APPLY}")\northrus_apply_patches("{src}" "{dest}" {listed})\n')
    return subprocess.run(["cmake", "-P", str(script)], capture_output=True, text=True)


def test_there_are_patches() -> None:
    assert PATCHES, "no kernels/cuda/patches/*.patch"


def test_applies_and_places_each_hook(tmp_path: Path, src: Path) -> None:
    dest = tmp_path / "out"
    r = apply(tmp_path, src, dest)
    assert r.returncode == 0, r.stderr
    before = (src / TARGET).read_text()
    after = (dest / TARGET).read_text()
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
    # Our argmax comes first for GGML_OP_ARGMAX.
    am = after[after.index("        case GGML_OP_ARGMAX:\n            if"):]
    assert am.index("ggml_cuda_orthrus_argmax(ctx, dst)") < am.index("ggml_cuda_argmax(ctx, dst)")
    # Our top-k comes first for GGML_OP_TOP_K.
    tk = after[after.index("        case GGML_OP_TOP_K:\n            if"):]
    assert tk.index("ggml_cuda_orthrus_top_k(ctx, dst)") < tk.index("ggml_cuda_op_top_k(ctx, dst)")
    # Our RMS norm + matmul comes first in the fusion loop, before ggml's own fusions.
    loop = after[after.index("static int ggml_cuda_try_fuse("):]
    assert loop.index("ggml_cuda_orthrus_norm_mul_mat(*cuda_ctx, cgraph, i)") < loop.index("GGML_OP_MUL_MAT_ID")
    assert loop.index("ggml_cuda_orthrus_norm_mul_mat(*cuda_ctx, cgraph, i)") < loop.index("GGML_OP_RMS_NORM, GGML_OP_MUL")
    # Our SwiGLU + product (+ add) before ggml's fusions too.
    assert loop.index("ggml_cuda_orthrus_glu_mul_mat(*cuda_ctx, cgraph, i)") < loop.index("GGML_OP_MUL_MAT_ID")
    # The setter is exported by the registry under the name the engine asks for.
    assert '"ggml_backend_cuda_orthrus_set_mmv_mode") == 0' in after
    assert 'c"ggml_backend_cuda_orthrus_set_mmv_mode"' in (REPO / "kernels/src/ggml/backend.rs").read_text()
    # Every function the patch declares is defined by the hook, with the same signature.
    hook = HOOK.read_text()
    decls = re.findall(r"^(int|bool) (ggml_cuda_orthrus_\w+)\(([^;]*)\);$", after, re.M)
    assert len(decls) == 9
    for ret, name, params in decls:
        defn = re.search(rf"^{ret} {name}\(([^{{]*)\)\s*{{", hook, re.M)
        assert defn, f"{name} is not defined in ggml-hook.cu"
        assert " ".join(defn.group(1).split()) == " ".join(params.split())
    # Only additions: every line of ggml's file is still there, in order.
    kept = iter(after.splitlines())
    assert all(any(line == k for k in kept) for line in before.splitlines())
    # The source is left as it was.
    assert (src / TARGET).read_text() == before
    # ggml-cuda's idle CUDA graphs are evicted only beyond the most recent 64.
    common = (dest / COMMON).read_text()
    sweep = common[common.index("// sweep every 5s"):]
    assert sweep.index("cuda_graphs.size() > orthrus_keep_graphs") < sweep.index("cuda_graphs.erase(it)")
    assert "it->second->last_used_time < kept_from" in sweep
    # ...the count the engine models (engine/src/backend_layout.rs).
    kept = re.search(r"constexpr size_t orthrus_keep_graphs = (\d+);", common)
    engine = re.search(r"pub const GPU_GRAPHS_KEPT: u64 = (\d+);",
                       (REPO / "engine/src/backend_layout.rs").read_text())
    assert kept and engine and kept.group(1) == engine.group(1)


def test_same_result_as_git_apply(tmp_path: Path, src: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("no git here to compare with")
    dest = tmp_path / "out"
    assert apply(tmp_path, src, dest).returncode == 0
    ref = tmp_path / "ref"
    shutil.copytree(src, ref)
    for p in PATCHES:
        r = subprocess.run(["git", "apply", str(p)], cwd=ref, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    for f in (TARGET, COMMON):
        assert (dest / f).read_bytes() == (ref / f).read_bytes()


def test_up_to_date_file_is_not_rewritten(tmp_path: Path, src: Path) -> None:
    # ninja compares times: a reconfigure must not make it recompile ggml-cuda.cu.
    dest = tmp_path / "out"
    assert apply(tmp_path, src, dest).returncode == 0
    os.utime(dest / TARGET, ns=(1_000_000_000, 1_000_000_000))
    assert apply(tmp_path, src, dest).returncode == 0
    assert (dest / TARGET).stat().st_mtime_ns == 1_000_000_000
    # ...but a stale one is.
    (dest / TARGET).write_text("stale\n")
    assert apply(tmp_path, src, dest).returncode == 0
    assert (dest / TARGET).read_text() != "stale\n"


def test_refuses_a_source_it_does_not_match(tmp_path: Path, src: Path) -> None:
    text = (src / TARGET).read_text()
    (src / TARGET).write_text(text.replace("    if (ggml_cuda_should_use_mmvf(src0->type, cc, warp_size", "    if (ggml_cuda_should_use_mmvf(src0->type, cc, ws", 1))
    dest = tmp_path / "out"
    r = apply(tmp_path, src, dest)
    assert r.returncode != 0
    assert "old text is not found" in r.stderr and "rebase the patch" in r.stderr
    assert not (dest / TARGET).exists()
    # A hunk that would match twice is refused too.
    (src / TARGET).write_text(text + "\n" + text)
    r = apply(tmp_path, src, dest)
    assert r.returncode != 0 and "found more than once" in r.stderr
    assert not (dest / TARGET).exists()


def test_refuses_a_malformed_patch(tmp_path: Path, src: Path) -> None:
    lines = PATCHES[0].read_text().splitlines(keepends=True)
    # Claim one more old line in the first hunk than it has.
    i = next(i for i, line in enumerate(lines) if line.startswith("@@"))
    lines[i] = re.sub(r"^@@ -(\d+),(\d+)", lambda m: f"@@ -{m[1]},{int(m[2]) + 1}", lines[i])
    bad = tmp_path / "bad.patch"
    bad.write_text("".join(lines))
    r = apply(tmp_path, src, tmp_path / "out", [bad])
    assert r.returncode != 0 and "bad.patch" in r.stderr
    assert not (tmp_path / "out" / TARGET).exists()
    r = apply(tmp_path, src, tmp_path / "out", [tmp_path / "missing.patch"])
    assert r.returncode != 0 and "no patch" in r.stderr
