#!/usr/bin/env python3
"""Puts our CUDA matmul (kernels/cuda/) into a copy of ggml's source.

    scripts/gpu/patch-ggml.py GGML_DIR

GGML_DIR is a copy of ggml (prepare.sh stages one in gpu-carry/ggml): copies
kernels/cuda/mmv.cuh and ggml-hook.cu into src/ggml-cuda/ (its CMake compiles
every *.cu there) and edits src/ggml-cuda/ggml-cuda.cu in four places, each
of which must match exactly once: the hook's declarations after the includes,
the mode's setter among the registry's exported functions, a call at the top
of ggml_cuda_mul_mat, and (mode 2) no fused one-column matrix-vector products. Running it again on a patched copy changes
nothing. Fails, changing nothing, when ggml's source no longer matches.
"""
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
        "int ggml_cuda_orthrus_set_mmv_mode(int mode);\n",
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
]


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
        for old, new in EDITS:
            if text.count(old) != 1:
                print(f"patch-ggml: ggml-cuda.cu has {text.count(old)} copies of:\n{old}", file=sys.stderr)
                return 1
            text = text.replace(old, new)
        tmp = target.with_suffix(".cu.tmp")
        tmp.write_text(text)
        tmp.replace(target)
    shutil.copyfile(ROOT / "kernels/cuda/mmv.cuh", cuda / "orthrus-mmv.cuh")
    shutil.copyfile(ROOT / "kernels/cuda/ggml-hook.cu", cuda / "orthrus-mmv.cu")
    print(f"patch-ggml: {cuda} has the orthrus matmul")
    return 0


if __name__ == "__main__":
    sys.exit(main())
