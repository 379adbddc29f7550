//! llama.cpp's decoding speed on a GGUF, measured the way `llama-bench`
//! measures pp512 and tg128 (prompt: one 512-token batch; generation: 128
//! single-token decodes, synchronizing after each), through the `llama_*`
//! code vendored in llama-cpp-sys-2, so it runs on the same ggml build and
//! backends as our engine: `llama_bench MODEL.gguf [REPS] [DEPTH]`, DEPTH
//! (default 0) tokens in the cache before the generation is timed, like
//! llama-bench's `-d`. Also pp16: 16-token batches after DEPTH tokens with
//! every row's logits, as a speculative verify pass takes them (what one of
//! our block passes compares with). Prints JSON.

use std::ffi::CString;
use std::time::Instant;

use llama_cpp_sys_2 as llama;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: llama_bench MODEL.gguf [REPS] [DEPTH]");
        std::process::exit(2);
    };
    let reps: usize = args
        .get(2)
        .map_or(3, |r| r.parse().expect("REPS must be a number"));
    let depth: usize = args
        .get(3)
        .map_or(0, |d| d.parse().expect("DEPTH must be a number"));
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()));
    orthrus_kernels::ggml::load_backends(exe_dir.as_deref());
    // SAFETY: plain llama.cpp API use: every pointer comes from llama.cpp and is checked.
    unsafe {
        llama::llama_backend_init();
        let mut mp = llama::llama_model_default_params();
        mp.n_gpu_layers = 999;
        let cpath = CString::new(path.as_str()).unwrap();
        let model = llama::llama_model_load_from_file(cpath.as_ptr(), mp);
        assert!(!model.is_null(), "llama.cpp could not load {path}");
        let mut cp = llama::llama_context_default_params();
        cp.n_ctx = 4096;
        cp.n_batch = 512;
        cp.n_ubatch = 512;
        cp.flash_attn_type = llama::LLAMA_FLASH_ATTN_TYPE_ENABLED;
        // llama.cpp's default of 4 threads spins on 2 cores: one thread per core, as llama-bench's -t.
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get()) as i32;
        cp.n_threads = cores;
        cp.n_threads_batch = cores;
        let ctx = llama::llama_init_from_model(model, cp);
        assert!(!ctx.is_null(), "llama.cpp could not create a context");
        // A pool of kept threads, as llama-bench attaches (without one,
        // ggml-cpu starts threads for every graph).
        let pool = orthrus_kernels::ggml::ThreadPool::new(cores as usize);
        if let Some(p) = &pool {
            llama::llama_attach_threadpool(ctx, p.raw(), p.raw());
        }
        let n_vocab = llama::llama_vocab_n_tokens(llama::llama_model_get_vocab(model)).min(150_000);
        let seed = std::cell::Cell::new(12345u64);
        let rand_tok = || {
            seed.set(
                seed.get()
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407),
            );
            ((seed.get() >> 33) % n_vocab as u64) as i32
        };
        // Fills the cache with DEPTH tokens (in batches of 512).
        let fill = |ctx: *mut llama::llama_context| {
            llama::llama_memory_clear(llama::llama_get_memory(ctx), true);
            for chunk in (0..depth).collect::<Vec<_>>().chunks(512) {
                let mut toks: Vec<i32> = chunk.iter().map(|_| rand_tok()).collect();
                let n = toks.len() as i32;
                assert_eq!(
                    llama::llama_decode(ctx, llama::llama_batch_get_one(toks.as_mut_ptr(), n)),
                    0
                );
            }
            llama::llama_synchronize(ctx);
        };
        let pp = |ctx: *mut llama::llama_context| {
            llama::llama_memory_clear(llama::llama_get_memory(ctx), true);
            let mut toks: Vec<i32> = (0..512).map(|_| rand_tok()).collect();
            let t = Instant::now();
            assert_eq!(
                llama::llama_decode(ctx, llama::llama_batch_get_one(toks.as_mut_ptr(), 512)),
                0
            );
            llama::llama_synchronize(ctx);
            512.0 / t.elapsed().as_secs_f64()
        };
        let tg = |ctx: *mut llama::llama_context| {
            fill(ctx);
            let t = Instant::now();
            for _ in 0..128 {
                let mut tok = rand_tok();
                assert_eq!(
                    llama::llama_decode(ctx, llama::llama_batch_get_one(&mut tok, 1)),
                    0
                );
                llama::llama_synchronize(ctx);
            }
            128.0 / t.elapsed().as_secs_f64()
        };
        // Every row's logits, as speculative decoding's verify pass (and
        // our block passes) need them.
        let pp16 = |ctx: *mut llama::llama_context| {
            fill(ctx);
            let mut batch = llama::llama_batch_init(16, 0, 1);
            let t = Instant::now();
            for b in 0..16 {
                batch.n_tokens = 16;
                for i in 0..16 {
                    *batch.token.add(i) = rand_tok();
                    *batch.pos.add(i) = (depth + 16 * b + i) as i32;
                    *batch.n_seq_id.add(i) = 1;
                    **batch.seq_id.add(i) = 0;
                    *batch.logits.add(i) = 1;
                }
                assert_eq!(llama::llama_decode(ctx, batch), 0);
                llama::llama_synchronize(ctx);
            }
            let rate = 256.0 / t.elapsed().as_secs_f64();
            llama::llama_batch_free(batch);
            rate
        };
        pp(ctx);
        tg(ctx);
        pp16(ctx);
        let pps: Vec<f64> = (0..reps).map(|_| pp(ctx)).collect();
        let tgs: Vec<f64> = (0..reps).map(|_| tg(ctx)).collect();
        let pp16s: Vec<f64> = (0..reps).map(|_| pp16(ctx)).collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        println!(
            "{{\"model\": {:?}, \"depth\": {}, \"pp512\": {:.1}, \"tg128\": {:.1}, \"pp16\": {:.1}, \"pp512_runs\": {:?}, \"tg128_runs\": {:?}, \"pp16_runs\": {:?}}}",
            path,
            depth,
            mean(&pps),
            mean(&tgs),
            mean(&pp16s),
            pps,
            tgs,
            pp16s
        );
        llama::llama_free(ctx);
        llama::llama_model_free(model);
    }
}
