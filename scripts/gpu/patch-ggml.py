#!/usr/bin/env python3
"""Puts our CUDA kernels (kernels/cuda/) into a copy of ggml's source.

    scripts/gpu/patch-ggml.py GGML_DIR

GGML_DIR is a copy of ggml (prepare.sh stages one in gpu-carry/ggml): copies
kernels/cuda/mmv.cuh, attn.cuh, orthrus-launch.cuh and ggml-hook.cu into src/ggml-cuda/ (its
CMake compiles every *.cu there) and edits src/ggml-cuda/ggml-cuda.cu in seven
places, each of which must match exactly once: the hook's declarations after
the includes, the mode's setter among the registry's exported functions, a
call at the top of ggml_cuda_mul_mat, (mode 2) no fused one-column
matrix-vector products, our matmul with the residual add in the fusion loop's
mul_mat + add, our attention before ggml's, and our RMS norm + matmul first in
the fusion loop. It only adds lines. Running
it again on a patched copy changes nothing. Fails, changing nothing, when
ggml's source no longer matches.

Each file it writes gets the newest modification time of what it was made
from, so that a rebuild on the GPU machine (ninja compares times) recompiles
only what changed.
"""
import os
import pathlib
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
MARK = "// orthrus: kernels/cuda/ggml-hook.cu"

EDITS = [
    (
        '#include "ggml-cuda/mmvq.cuh"\n',
        '#include "ggml-cuda/mmvq.cuh"\n'
        f"{MARK}\n"
        "int ggml_cuda_orthrus_mmv_mode();\n"
        "bool ggml_cuda_orthrus_mul_mat(ggml_backend_cuda_context & ctx, const ggml_tensor * src0,\n"
        "                               const ggml_tensor * src1, ggml_tensor * dst);\n"
        "int ggml_cuda_orthrus_set_mmv_mode(int mode);\n"
        "bool ggml_cuda_orthrus_mul_mat_add(ggml_backend_cuda_context & ctx, const ggml_tensor * src0,\n"
        "                                   const ggml_tensor * src1, const ggml_tensor * add, ggml_tensor * dst);\n"
        "bool ggml_cuda_orthrus_flash_attn(ggml_backend_cuda_context & ctx, ggml_tensor * dst);\n"
        "bool ggml_cuda_orthrus_norm_mul_mat(ggml_backend_cuda_context & ctx, ggml_cgraph * cgraph, int i);\n",
    ),
    (
        "    if (strcmp(name, \"ggml_backend_get_features\") == 0) {\n",
        "    if (strcmp(name, \"ggml_backend_cuda_orthrus_set_mmv_mode\") == 0) {\n"
        "        return (void *)ggml_cuda_orthrus_set_mmv_mode;\n"
        "    }\n"
        "    if (strcmp(name, \"ggml_backend_get_features\") == 0) {\n",
    ),
    (
        "    const int warp_size = ggml_cuda_info().devices[ctx.device].warp_size;\n\n"
        "    if (ggml_cuda_should_use_mmvf(src0->type, cc, warp_size, src0->ne, src0->nb, ne11)) {\n",
        "    const int warp_size = ggml_cuda_info().devices[ctx.device].warp_size;\n\n"
        "    if (ggml_cuda_orthrus_mul_mat(ctx, src0, src1, dst)) {\n"
        "        return;\n"
        "    }\n"
        "    if (ggml_cuda_should_use_mmvf(src0->type, cc, warp_size, src0->ne, src0->nb, ne11)) {\n",
    ),
    (
        "static bool ggml_cuda_should_fuse_mul_mat_vec_q(const ggml_tensor * tensor) {\n",
        "static bool ggml_cuda_should_fuse_mul_mat_vec_q(const ggml_tensor * tensor) {\n"
        "    if (ggml_cuda_orthrus_mmv_mode() >= 2) {\n"
        "        return false;\n"
        "    }\n",
    ),
    (
        "        fusion_data.x_bias = bias_tensor;\n",
        "        fusion_data.x_bias = bias_tensor;\n"
        "        if (op == GGML_OP_MUL_MAT && ggml_cuda_orthrus_mul_mat_add(*cuda_ctx, src0, src1, bias_tensor, bias_node)) {\n"
        "            fused_mul_mat_vec = true;\n"
        "            fused_node_count  = 2;\n"
        "            break;\n"
        "        }\n",
    ),
    (
        "        case GGML_OP_FLASH_ATTN_EXT:\n"
        "            ggml_cuda_flash_attn_ext(ctx, dst);\n",
        "        case GGML_OP_FLASH_ATTN_EXT:\n"
        "            if (ggml_cuda_orthrus_flash_attn(ctx, dst)) {\n"
        "                break;\n"
        "            }\n"
        "            ggml_cuda_flash_attn_ext(ctx, dst);\n",
    ),
    (
        "    ggml_tensor * node = cgraph->nodes[i];\n\n"
        "    if (node->op == GGML_OP_MUL_MAT_ID && cuda_ctx->stream_context().concurrent_events.empty() &&\n",
        "    ggml_tensor * node = cgraph->nodes[i];\n\n"
        "    if (node->op == GGML_OP_RMS_NORM && ggml_cuda_orthrus_norm_mul_mat(*cuda_ctx, cgraph, i)) {\n"
        "        return 2;\n"
        "    }\n"
        "    if (node->op == GGML_OP_MUL_MAT_ID && cuda_ctx->stream_context().concurrent_events.empty() &&\n",
    ),
]

COPIES = [("mmv.cuh", "orthrus-mmv.cuh"), ("attn.cuh", "orthrus-attn.cuh"), ("orthrus-launch.cuh", "orthrus-launch.cuh"),
          ("ggml-hook.cu", "orthrus-mmv.cu")]


def stamp(path: pathlib.Path, *times_ns: int) -> None:
    """Gives `path` the newest of `times_ns` (its sources' modification times)."""
    t = max(times_ns)
    os.utime(path, ns=(t, t))


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    cuda = pathlib.Path(sys.argv[1]) / "src" / "ggml-cuda"
    target = cuda / "ggml-cuda.cu"
    if not target.is_file():
        print(f"patch-ggml: no {target}", file=sys.stderr)
        return 1
    text = target.read_text()
    if MARK not in text:
        original = target.stat().st_mtime_ns
        for old, new in EDITS:
            if text.count(old) != 1:
                print(f"patch-ggml: ggml-cuda.cu has {text.count(old)} copies of:\n{old}", file=sys.stderr)
                return 1
            text = text.replace(old, new)
        tmp = target.with_suffix(".cu.tmp")
        tmp.write_text(text)
        stamp(tmp, original, pathlib.Path(__file__).stat().st_mtime_ns)
        tmp.replace(target)
    for src, dst in COPIES:
        shutil.copyfile(ROOT / "kernels/cuda" / src, cuda / dst)
        stamp(cuda / dst, (ROOT / "kernels/cuda" / src).stat().st_mtime_ns)
    print(f"patch-ggml: {cuda} has the orthrus kernels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
