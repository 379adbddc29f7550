//! llama.cpp's quantizer (`llama_model_quantize`, the core of `llama-quantize`)
//! as a command, so benchmarks compare against it on the same machine:
//! `llama_quantize IN.gguf OUT.gguf q4_k_m|q8_0|... [THREADS]`.

use std::ffi::CString;
use std::time::Instant;

use llama_cpp_sys_2 as llama;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: llama_quantize IN.gguf OUT.gguf TYPE [THREADS]");
        std::process::exit(2);
    }
    let ftype = match args[3].to_lowercase().as_str() {
        "q4_0" => llama::LLAMA_FTYPE_MOSTLY_Q4_0,
        "q8_0" => llama::LLAMA_FTYPE_MOSTLY_Q8_0,
        "q4_k_m" => llama::LLAMA_FTYPE_MOSTLY_Q4_K_M,
        "q5_k_m" => llama::LLAMA_FTYPE_MOSTLY_Q5_K_M,
        "q6_k" => llama::LLAMA_FTYPE_MOSTLY_Q6_K,
        other => {
            eprintln!("llama_quantize: unsupported type {other}");
            std::process::exit(2);
        }
    };
    let threads: i32 = args
        .get(4)
        .map_or(0, |t| t.parse().expect("THREADS must be a number"));
    let (inp, out) = (
        CString::new(args[1].as_str()).unwrap(),
        CString::new(args[2].as_str()).unwrap(),
    );
    let start = Instant::now();
    // SAFETY: plain C API calls with valid NUL-terminated paths and default params.
    let rc = unsafe {
        llama::llama_backend_init();
        let mut params = llama::llama_model_quantize_default_params();
        params.ftype = ftype;
        params.nthread = threads;
        llama::llama_model_quantize(inp.as_ptr(), out.as_ptr(), &params)
    };
    if rc != 0 {
        eprintln!("llama_quantize: failed ({rc})");
        std::process::exit(1);
    }
    eprintln!(
        "llama_quantize: {} -> {} in {:.2} s",
        args[1],
        args[2],
        start.elapsed().as_secs_f64()
    );
}
