//! The base file of `--split` is a plain Qwen3 GGUF that llama.cpp loads,
//! tokenizes exactly like Hugging Face, and runs.

use std::ffi::CString;
use std::path::Path;
use std::process::Command;

use llama_cpp_sys_2 as llama;
use orthrus_convert::FileType;
use orthrus_tests::{convert_fixture, fixture, repo};

const TEXTS: [&str; 5] = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "你好，世界。机器学习很有趣！",
    "Emoji: 🦀🚀 and numbers 1234567 3.14159",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
];

fn hf_ids(tokenizer_json: &Path) -> Vec<Vec<i32>> {
    let out = Command::new("python3")
        .arg(repo().join("tests/python/hf_tokenize.py"))
        .arg(tokenizer_json)
        .args(TEXTS)
        .output()
        .expect("python3 with the `tokenizers` package is needed (scripts/setup-debian.sh)");
    assert!(
        out.status.success(),
        "hf_tokenize.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What `run_llama` reads back: layers, vocab size, token ids of each text,
/// the last row's logits.
type LlamaRun = (i32, i32, Vec<Vec<i32>>, Vec<f32>);

/// Loads `path` with llama.cpp; on success tokenizes TEXTS and decodes the
/// last one, returning (layers, vocab size, token ids, last-row logits).
unsafe fn run_llama(path: &Path) -> Option<LlamaRun> {
    llama::llama_backend_init();
    let mut mp = llama::llama_model_default_params();
    mp.n_gpu_layers = 0;
    let cpath = CString::new(path.to_str().unwrap()).unwrap();
    let model = llama::llama_model_load_from_file(cpath.as_ptr(), mp);
    if model.is_null() {
        return None;
    }
    let vocab = llama::llama_model_get_vocab(model);
    let mut all = Vec::new();
    for text in TEXTS {
        let mut ids = vec![0i32; 512];
        let n = llama::llama_tokenize(
            vocab,
            text.as_ptr().cast(),
            text.len() as i32,
            ids.as_mut_ptr(),
            512,
            false,
            true,
        );
        assert!(n >= 0, "llama_tokenize failed on {text:?}");
        ids.truncate(n as usize);
        all.push(ids);
    }
    let mut cp = llama::llama_context_default_params();
    cp.n_ctx = 256;
    cp.n_batch = 256;
    cp.n_threads = 2;
    cp.n_threads_batch = 2;
    let ctx = llama::llama_init_from_model(model, cp);
    assert!(!ctx.is_null(), "llama.cpp could not create a context");
    let mut prompt = all.last().unwrap().clone();
    let batch = llama::llama_batch_get_one(prompt.as_mut_ptr(), prompt.len() as i32);
    assert_eq!(llama::llama_decode(ctx, batch), 0, "llama_decode failed");
    let n_vocab = llama::llama_vocab_n_tokens(vocab);
    let logits =
        std::slice::from_raw_parts(llama::llama_get_logits_ith(ctx, -1), n_vocab as usize).to_vec();
    let layers = llama::llama_model_n_layer(model);
    llama::llama_free(ctx);
    llama::llama_model_free(model);
    Some((layers, n_vocab, all, logits))
}

#[test]
fn split_base_loads_tokenizes_and_runs_in_llama_cpp() {
    let tmp = tempfile::tempdir().unwrap();
    let want = hf_ids(&fixture("tiny-tied-bf16").join("tokenizer.json"));
    for ft in [FileType::F16, FileType::Q8_0] {
        let out = tmp.path().join(format!("base-{ft}.gguf"));
        convert_fixture("tiny-tied-bf16", &out, ft, true);
        let (layers, n_vocab, ids, logits) = unsafe { run_llama(&out) }
            .unwrap_or_else(|| panic!("llama.cpp refused the {ft} base file"));
        assert_eq!((layers, n_vocab), (2, 151936));
        for ((text, got), want) in TEXTS.iter().zip(&ids).zip(&want) {
            assert_eq!(
                got, want,
                "llama.cpp tokenizes {text:?} differently from Hugging Face"
            );
        }
        assert!(logits.iter().all(|x| x.is_finite()), "non-finite logits");
        let spread = logits.iter().cloned().fold(f32::MIN, f32::max)
            - logits.iter().cloned().fold(f32::MAX, f32::min);
        assert!(spread > 1e-3, "logits are flat: the model computes nothing");
    }
}

#[test]
fn whole_orthrus_file_is_not_taken_for_a_plain_qwen3() {
    // A whole file is of architecture `orthrus` (the llama.cpp Orthrus fork's),
    // which upstream llama.cpp does not know; that is why --split exists.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("whole.gguf");
    convert_fixture("tiny-tied-bf16", &out, FileType::F16, false);
    assert!(unsafe { run_llama(&out) }.is_none());
}
