#!/usr/bin/env python3
"""Type-checks our CUDA code here, where there is no GPU and no nvcc: clang's
CUDA front end (the system's libclang, through the `libclang` bindings from
PyPI) parses, for both the device and the host side,

  - kernels/cuda/*-test.cu (each kernel and its test), and
  - ggml-cuda with our kernels in, as kernels/cuda/CMakeLists.txt builds it
    from the ggml that llama-cpp-sys-2 vendors: our hook, ggml-hook.cu, and
    ggml-cuda.cu with kernels/cuda/patches/*.patch applied (by the same CMake
    code, kernels/cuda/cmake/apply-patches.cmake; needs cmake),

against the CUDA 12.8 headers from NVIDIA's wheels on PyPI. A compile error
then shows before a GPU machine spends minutes building. It is not a
compiler: it finds what a front end finds (names, types, argument counts,
templates), not what ptxas would.

    scripts/cuda-check.py    exit status 1 on any error, 2 if it cannot set itself up

The first run downloads about 640 MB into $XDG_CACHE_HOME (~/.cache)
/orthrus-cuda-check: the runtime, CCCL, cuBLAS and nvcc wheels (for
their headers and libdevice) and the bindings. Needs libclang 14 or later
with its clang resource headers (Debian: libclang-dev).

clang 14 knows CUDA only up to 11.5; what it lacks for 12.8's headers is
patched into a copy of its resource headers (no texture<> template, no
curand header) and a header included first (cudaConfigureCall, the sm_80
warp reductions, the __noinline__ macro that clashes with libstdc++).
"""
from __future__ import annotations

import glob
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
CACHE = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "orthrus-cuda-check"
WHEELS = [
    "nvidia-cuda-runtime-cu12==12.8.90",
    "nvidia-cuda-cccl-cu12==12.8.90",
    "nvidia-cuda-nvcc-cu12==12.8.93",
    "nvidia-cublas-cu12==12.8.4.1",
]
SHIM = """#include <cuda_runtime.h>
extern "C" __host__ __device__ cudaError_t cudaConfigureCall(dim3, dim3, size_t = 0, cudaStream_t = 0);
#undef __noinline__
#define __noinline__ noinline
__device__ unsigned __reduce_add_sync(unsigned, unsigned);
__device__ int __reduce_add_sync(unsigned, int);
__device__ unsigned __reduce_max_sync(unsigned, unsigned);
__device__ int __reduce_max_sync(unsigned, int);
__device__ unsigned __reduce_min_sync(unsigned, unsigned);
__device__ int __reduce_min_sync(unsigned, int);
__device__ unsigned __reduce_or_sync(unsigned, unsigned);
__device__ unsigned __reduce_and_sync(unsigned, unsigned);
"""


def fail(msg: str) -> None:
    print(f"cuda-check: {msg}", file=sys.stderr)
    sys.exit(2)


def system_clang() -> tuple[pathlib.Path, pathlib.Path]:
    """The newest system libclang with clang's CUDA headers, and its resource directory."""
    found = []
    for wrapper in glob.glob("/usr/lib/llvm-*/lib/clang/*/include/__clang_cuda_runtime_wrapper.h"):
        res = pathlib.Path(wrapper).parents[1]  # .../llvm-N/lib/clang/VERSION
        lib = res.parents[1] / "libclang.so.1"
        if lib.exists():
            found.append((int(res.parents[2].name.split("-")[1]), lib, res))
    if not found:
        fail("no libclang with clang's CUDA headers under /usr/lib/llvm-* (apt install libclang-dev)")
    _, lib, res = max(found)
    return lib, res


def set_up(resource: pathlib.Path) -> None:
    done = CACHE / "ready"
    if done.exists():
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = CACHE / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels), *WHEELS], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(CACHE / "py"), "libclang==18.1.1"], check=True)
    cuda = CACHE / "cuda"
    shutil.rmtree(cuda, ignore_errors=True)
    (cuda / "include").mkdir(parents=True)
    for whl in wheels.glob("*.whl"):
        with zipfile.ZipFile(whl) as z:
            for name in z.namelist():
                parts = pathlib.PurePosixPath(name).parts
                if len(parts) > 3 and parts[0] == "nvidia" and parts[2] == "include" and not name.endswith("/"):
                    out = cuda / "include" / pathlib.PurePosixPath(*parts[3:])
                elif "libdevice" in parts and name.endswith(".bc"):
                    out = cuda / "nvvm/libdevice" / parts[-1]
                else:
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                if not out.exists():
                    out.write_bytes(z.read(name))
    (cuda / "include/curand_mtgp32_kernel.h").write_text("")
    # What clang's CUDA detection looks for, besides include/ and libdevice.
    (cuda / "bin").mkdir(exist_ok=True)
    (cuda / "lib64").mkdir(exist_ok=True)
    (cuda / "version.txt").write_text("CUDA Version 12.8.93\n")
    res = CACHE / "clang-resource"
    shutil.rmtree(res, ignore_errors=True)
    shutil.copytree(resource, res)
    tex = res / "include/__clang_cuda_texture_intrinsics.h"
    text = tex.read_text()
    for mode in ("cudaReadModeNormalizedFloat", "cudaReadModeElementType"):
        at = text.find(f"texture<__DataT, __TexT, {mode}> __handle,")
        if at >= 0:
            start = text.rindex("template <class __op, class __DataT", 0, at)
            text = text[:start] + text[text.index("\n}\n", at) + 3:]
    tex.write_text(text)
    (CACHE / "shim.h").write_text(SHIM)
    done.write_text("")


def check(ci, path: pathlib.Path, includes: list[pathlib.Path]) -> int:
    errors = 0
    for side in ("--cuda-device-only", "--cuda-host-only"):
        args = ["-x", "cuda", f"--cuda-path={CACHE / 'cuda'}", "--cuda-gpu-arch=sm_80", "-std=c++17", "-nocudalib",
                "-Wno-unknown-cuda-version", "-resource-dir", str(CACHE / "clang-resource"),
                "-include", str(CACHE / "shim.h"), "-DGGML_USE_CUDA", side]
        args += [f"-I{i}" for i in includes]
        tu = ci.Index.create().parse(str(path), args=args)
        bad = [d for d in tu.diagnostics if d.severity >= ci.Diagnostic.Error]
        for d in bad:
            print(f"{d.location.file}:{d.location.line}: {side[2:]}: {d.spelling}")
        errors += len(bad)
    print(f"{path.name}: {'ok' if not errors else f'{errors} errors'}")
    return errors


def main() -> int:
    if len(sys.argv) > 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    lib, resource = system_clang()
    try:
        set_up(resource)
    except (subprocess.CalledProcessError, OSError, zipfile.BadZipFile) as e:
        fail(f"could not set up in {CACHE}: {e}")
    sys.path.insert(0, str(CACHE / "py"))
    import clang.cindex as ci  # noqa: E402 (from the cache)

    ci.Config.set_library_file(str(lib))
    ci.Config.set_compatibility_check(False)
    errors = 0
    for test in sorted((ROOT / "kernels/cuda").glob("*-test.cu")):
        errors += check(ci, test, [])
    home = pathlib.Path(os.environ.get("CARGO_HOME", pathlib.Path.home() / ".cargo"))
    found = sorted(glob.glob(str(home / "registry/src/*/llama-cpp-sys-2-0.1.161/llama.cpp/ggml")))
    if not found:
        fail("llama-cpp-sys-2 0.1.161's ggml is not in the cargo registry (run cargo build first)")
    with tempfile.TemporaryDirectory() as tmp:
        ggml = pathlib.Path(tmp) / "ggml"
        shutil.copytree(pathlib.Path(found[0]) / "include", ggml / "include")
        src = ggml / "src"
        src.mkdir()
        for f in pathlib.Path(found[0], "src").glob("*.h"):
            shutil.copy(f, src)
        shutil.copytree(pathlib.Path(found[0]) / "src/ggml-cuda", src / "ggml-cuda")
        cuda = ROOT / "kernels/cuda"
        patches = " ".join(f'"{p}"' for p in sorted((cuda / "patches").glob("*.patch")))
        script = pathlib.Path(tmp) / "apply.cmake"
        script.write_text(f'include("{cuda}/cmake/apply-patches.cmake")\n'
                          f'orthrus_apply_patches("{found[0]}" "{ggml}" {patches})\n')
        subprocess.run(["cmake", "-P", str(script)], check=True, stdout=subprocess.DEVNULL)
        inc = [ggml / "include", src]
        errors += check(ci, cuda / "ggml-hook.cu", inc)
        errors += check(ci, src / "ggml-cuda" / "ggml-cuda.cu", inc)
    print("all parsed without errors" if not errors else f"{errors} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
