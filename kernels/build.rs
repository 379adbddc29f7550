//! With the `cuda` feature: builds ggml's CUDA backend with our kernels inside
//! (kernels/cuda/CMakeLists.txt, the same CMake step the GPU machine's scripts
//! use) as a static library and links it, with the CUDA runtime and cuBLAS.
//! The program registers it with ggml at start (`load_backends`). Without the
//! feature it does nothing.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "cuda")]
    cuda::build();
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::env;
    use std::path::{Path, PathBuf};

    /// Stops the build with `msg` (cargo shows it under the crate's name).
    fn fail(msg: &str) -> ! {
        eprintln!("error: orthrus-kernels (feature cuda): {msg}");
        std::process::exit(1);
    }

    /// `KEY:TYPE=value` of a CMakeCache.txt.
    fn cache_entry(cache: &str, key: &str) -> Option<String> {
        cache.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.split(':').next()? == key).then(|| v.to_string())
        })
    }

    /// The ggml source llama-cpp-sys-2 built from: its build script names the
    /// ggml CMake package it installed (DEP_LLAMA_GGML_CMAKE_DIR, i.e.
    /// OUT_DIR/lib/cmake), and that build's CMakeCache.txt names the source.
    /// The rest of the program is linked with that ggml, so ours must be it.
    fn ggml_source() -> PathBuf {
        let Some(cmake_dir) = env::var_os("DEP_LLAMA_GGML_CMAKE_DIR") else {
            fail("llama-cpp-sys-2 did not say where its ggml is (DEP_LLAMA_GGML_CMAKE_DIR)")
        };
        let out = Path::new(&cmake_dir)
            .ancestors()
            .nth(2)
            .map(Path::to_path_buf);
        let cache = out.map(|o| o.join("build/CMakeCache.txt"));
        let text = cache.as_ref().and_then(|c| std::fs::read_to_string(c).ok());
        let src = text
            .as_deref()
            .and_then(|t| cache_entry(t, "ggml_SOURCE_DIR"));
        match src {
            Some(s) if Path::new(&s).join("src/ggml-cuda/ggml-cuda.cu").is_file() => {
                PathBuf::from(s)
            }
            _ => fail(&format!(
                "no ggml source with a CUDA backend named in {:?}",
                cache.unwrap_or_default()
            )),
        }
    }

    pub fn build() {
        let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
        let project = manifest.join("cuda");
        println!("cargo:rerun-if-changed={}", project.display());
        let ggml = ggml_source();

        let mut cfg = cmake::Config::new(&project);
        cfg.define("GGML_SOURCE_DIR", &ggml)
            .define("ORTHRUS_GGML_CUDA_MODULE", "OFF")
            // Optimised whatever cargo's profile: a debug build of the kernels
            // would make every GPU run crawl.
            .profile("Release")
            .build_target("ggml-cuda");
        // As llama-cpp-sys-2 does: CMAKE_* and GGML_* from the environment
        // reach CMake (e.g. CMAKE_CUDA_ARCHITECTURES=86, GGML_CUDA_FA=OFF);
        // ORTHRUS_CUDA_NATIVE=OFF builds the default architectures even with a
        // GPU visible.
        for (key, value) in env::vars() {
            if key.starts_with("CMAKE_") || key.starts_with("GGML_") || key == "ORTHRUS_CUDA_NATIVE"
            {
                cfg.define(&key, &value);
            }
        }
        for key in [
            "CMAKE_CUDA_ARCHITECTURES",
            "CUDAARCHS",
            "ORTHRUS_CUDA_NATIVE",
            "CUDA_PATH",
            "CUDAToolkit_ROOT",
            "CUDACXX",
        ] {
            println!("cargo:rerun-if-env-changed={key}");
        }
        for (key, _) in env::vars().filter(|(k, _)| k.starts_with("GGML_")) {
            println!("cargo:rerun-if-env-changed={key}");
        }
        let dst = cfg.build();
        let build = dst.join("build");
        let lib = build.join("lib");
        if !lib.join("libggml-cuda.a").is_file() && !lib.join("ggml-cuda.lib").is_file() {
            fail(&format!(
                "the CMake build made no ggml-cuda library in {}",
                lib.display()
            ));
        }
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-lib=static=ggml-cuda");

        // The CUDA libraries ggml-cuda's CMake linked against (a shared
        // ggml-cuda links them itself; a static one leaves them to us): the
        // runtime, cuBLAS and the driver API, where FindCUDAToolkit found them.
        let cache = std::fs::read_to_string(build.join("CMakeCache.txt"))
            .unwrap_or_else(|e| fail(&format!("no CMakeCache.txt in {}: {e}", build.display())));
        for (name, keys) in [
            ("cudart", &["CUDA_cudart_LIBRARY", "CUDA_CUDART"][..]),
            ("cublas", &["CUDA_cublas_LIBRARY"][..]),
            ("cuda", &["CUDA_cuda_driver_LIBRARY"][..]),
        ] {
            let found = keys
                .iter()
                .filter_map(|k| cache_entry(&cache, k))
                .find(|p| Path::new(p).is_file());
            match found {
                Some(p) => {
                    let dir = Path::new(&p).parent().unwrap();
                    println!("cargo:rustc-link-search=native={}", dir.display());
                }
                // The driver's library comes with the driver, not the
                // toolkit: the system's search path has it.
                None if name == "cuda" => {}
                None => fail(&format!("CMake found no lib{name} of the CUDA toolkit")),
            }
            println!("cargo:rustc-link-lib=dylib={name}");
        }
    }
}
