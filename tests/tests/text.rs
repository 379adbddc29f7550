//! Text in and out of the engine: the tokenizer stored in the GGUF (our
//! converter's tokenizer JSON, or the `tokenizer.ggml.*` arrays that
//! llama.cpp's converter writes) encodes like Hugging Face `tokenizers`, and
//! the chat template renders like transformers' `apply_chat_template`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use orthrus_engine::chat::{ChatTemplate, Message};
use orthrus_engine::tokenizer::{GgmlVocab, StreamDecoder, TextStream, Tokenizer};
use orthrus_engine::{LoadOptions, Model};
use orthrus_kernels::gguf::{GgufFile, GgufValue, GgufWriter, TensorSpec};
use orthrus_tests::{convert_fixture, fixture, repo};

/// The tokenizer and template as a converted file stores them.
fn converted() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");
    convert_fixture(
        "tiny-tied-bf16",
        &out,
        orthrus_convert::FileType::F16,
        false,
    );
    (dir, out)
}

fn python(script: &str, args: &[&str], stdin: &str) -> serde_json::Value {
    let mut child = Command::new("python3")
        .arg(repo().join("tests/python").join(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed (scripts/setup-debian.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const TEXTS: [&str; 7] = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\n\n    # done",
    "你好，世界。机器学习很有趣！日本語のテキストも。",
    "Emoji: 🦀🚀👩‍👩‍👧 and numbers 1234567 3.14159 ½",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    "   leading spaces, tabs\t\tand CRLF\r\nlines   ",
    "Ünïcödé façade — “quotes” … <tool_call>{\"a\": 1}</tool_call>",
];

/// The vocabulary GGUF that llama.cpp's own `convert_hf_to_gguf.py` writes
/// for the fixture: `tokenizer.ggml.*` arrays and the chat template, no
/// tokenizer JSON.
fn llama_cpp_vocab(dir: &Path) -> PathBuf {
    let out = dir.join("llama-vocab.gguf");
    let fixture = fixture("tiny-tied-bf16");
    let run = Command::new("python3")
        .arg(repo().join("tests/python/llama_vocab.py"))
        .args([fixture.as_os_str(), out.as_os_str()])
        .output()
        .expect("python3 is needed (scripts/setup-debian.sh)");
    assert!(
        run.status.success(),
        "llama_vocab.py: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    out
}

fn hf_ids() -> Vec<Vec<u32>> {
    let tok_json = repo().join("models/qwen3-tokenizer/tokenizer.json");
    let mut args = vec![tok_json.to_str().unwrap()];
    args.extend(TEXTS);
    serde_json::from_value(python("hf_tokenize.py", &args, "")).unwrap()
}

/// `tok` gives Hugging Face's ids on TEXTS, and decodes them (whole and
/// streamed) back to the text.
fn assert_encodes_like_hugging_face(tok: &Tokenizer, want: &[Vec<u32>]) {
    for (text, want) in TEXTS.iter().zip(want) {
        let ids = tok.encode(text).unwrap();
        assert_eq!(&ids, want, "{text:?}");
        assert_eq!(tok.decode(&ids).unwrap(), *text);
        // Streaming pieces add up to the text, whole characters at a time.
        let mut s = StreamDecoder::new(tok);
        let joined: String = ids.iter().map(|&i| s.push(i).unwrap()).collect();
        assert_eq!(joined, *text);
    }
}

#[test]
fn tokenizer_from_the_gguf_encodes_like_hugging_face() {
    let (_dir, path) = converted();
    let file = GgufFile::open(&path).unwrap();
    let json = file
        .get("tokenizer.huggingface.json")
        .unwrap()
        .as_str()
        .unwrap();
    let want = hf_ids();
    assert_encodes_like_hugging_face(&Tokenizer::from_json(json).unwrap(), &want);
    // The same file's tokenizer.ggml.* arrays build the same tokenizer.
    let vocab = GgmlVocab::read(&file).unwrap().unwrap();
    assert_encodes_like_hugging_face(&Tokenizer::from_ggml(&vocab).unwrap(), &want);
}

#[test]
fn tokenizer_from_llama_cpp_arrays_encodes_and_decodes_like_hugging_face() {
    let dir = tempfile::tempdir().unwrap();
    let file = GgufFile::open(&llama_cpp_vocab(dir.path())).unwrap();
    assert!(file.get("tokenizer.huggingface.json").is_none());
    assert_eq!(
        file.get("tokenizer.ggml.pre").and_then(|v| v.as_str()),
        Some("qwen2")
    );
    let vocab = GgmlVocab::read(&file).unwrap().unwrap();
    let tok = Tokenizer::from_ggml(&vocab).unwrap();
    assert_encodes_like_hugging_face(&tok, &hf_ids());
    // Text not in NFC is normalized first, as Hugging Face does.
    let decomposed = "Cafe\u{301} n\u{303}o Ame\u{301}lie";
    let tok_json = repo().join("models/qwen3-tokenizer/tokenizer.json");
    let want: Vec<Vec<u32>> = serde_json::from_value(python(
        "hf_tokenize.py",
        &[tok_json.to_str().unwrap(), decomposed],
        "",
    ))
    .unwrap();
    assert_eq!(tok.encode(decomposed).unwrap(), want[0]);
    // Every id, the added and unused ones included, decodes as Hugging
    // Face's own tokenizer.json decodes it.
    let hf = Tokenizer::from_json(
        &std::fs::read_to_string(repo().join("models/qwen3-tokenizer/tokenizer.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(vocab.tokens.len(), 151936);
    for id in 0..vocab.tokens.len() as u32 {
        assert_eq!(
            tok.decode(&[id]).unwrap(),
            hf.decode(&[id]).unwrap(),
            "id {id}"
        );
    }
}

#[test]
fn tokenizer_arrays_it_cannot_build_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = GgufFile::open(&llama_cpp_vocab(dir.path())).unwrap();
    let good = GgmlVocab::read(&file).unwrap().unwrap();
    let err = |v: GgmlVocab| Tokenizer::from_ggml(&v).err().unwrap().to_string();
    let e = err(GgmlVocab {
        pre: Some("llama-bpe".into()),
        ..good.clone()
    });
    assert!(e.contains("\"llama-bpe\"") && e.contains("qwen2"), "{e}");
    let e = err(GgmlVocab {
        pre: None,
        ..good.clone()
    });
    assert!(e.contains("tokenizer.ggml.pre"), "{e}");
    let e = err(GgmlVocab {
        model: "llama".into(),
        ..good.clone()
    });
    assert!(e.contains("\"llama\"") && e.contains("gpt2"), "{e}");
    let e = err(GgmlVocab {
        token_types: good.token_types[1..].to_vec(),
        ..good.clone()
    });
    assert!(e.contains("token_type"), "{e}");
    let e = err(GgmlVocab {
        merges: vec!["Ġ Ġ".into(), "ĠĠĠĠ".into()],
        ..good.clone()
    });
    assert!(e.contains("ĠĠĠĠ"), "{e}");
    // A control token listed twice cannot keep both ids.
    let mut tokens = good.tokens.clone();
    tokens[151644] = "<|endoftext|>".into();
    let e = err(GgmlVocab {
        tokens,
        ..good.clone()
    });
    assert!(e.contains("twice"), "{e}");
    assert!(Tokenizer::from_ggml(&good).is_ok());
}

#[test]
fn text_stream_hides_eos_and_cuts_at_stop_strings() {
    let tok = Tokenizer::from_json(
        &std::fs::read_to_string(repo().join("models/qwen3-tokenizer/tokenizer.json")).unwrap(),
    )
    .unwrap();
    let eos = tok.encode("<|im_end|>").unwrap();
    assert_eq!(eos.len(), 1);
    let mut ids = tok
        .encode("The cat sat on the mat. Then it slept.")
        .unwrap();
    ids.insert(3, eos[0]);
    // Without stops: the whole text, the EOS token's text left out.
    let mut s = TextStream::new(&tok, vec![], eos.clone());
    let mut shown: String = ids
        .iter()
        .map(|&i| s.push(i).unwrap().to_string())
        .collect();
    shown.push_str(s.finish());
    assert_eq!(shown, "The cat sat on the mat. Then it slept.");
    assert!(!s.stopped());
    // A stop string across token boundaries: nothing of it is ever shown, and
    // text that could start it is held back until it cannot.
    let mut s = TextStream::new(&tok, vec!["xyz".into(), "mat. Th".into()], eos);
    let mut shown = String::new();
    for &i in &ids {
        shown.push_str(s.push(i).unwrap());
        assert!("The cat sat on the ".starts_with(&shown), "{shown:?}");
        if s.stopped() {
            break;
        }
    }
    assert!(s.stopped());
    assert_eq!(s.stop_word(), Some("mat. Th"));
    shown.push_str(s.finish());
    assert_eq!(shown, "The cat sat on the ");
    assert_eq!(s.text(), "The cat sat on the ");
}

#[test]
fn chat_template_renders_like_transformers() {
    let (_dir, path) = converted();
    assert_renders_like_transformers(&path);
}

#[test]
fn chat_template_of_a_llama_cpp_file_renders_like_transformers() {
    let dir = tempfile::tempdir().unwrap();
    assert_renders_like_transformers(&llama_cpp_vocab(dir.path()));
}

/// The chat template stored in `path` renders conversations byte for byte
/// as transformers' `apply_chat_template` does.
fn assert_renders_like_transformers(path: &Path) {
    let file = GgufFile::open(path).unwrap();
    let tmpl = ChatTemplate::new(
        file.get("tokenizer.chat_template")
            .unwrap()
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let m = Message::new;
    let convs: Vec<Vec<Message>> = vec![
        vec![m("user", "Hi!")],
        vec![m("system", "You are terse."), m("user", "What is 2+2?")],
        vec![
            m("system", "Be helpful."),
            m("user", "Name a prime."),
            m("assistant", "<think>\nSmall ones are easy.\n</think>\n\n7"),
            m("user", "Another, in Chinese: 再来一个"),
        ],
        vec![
            m("user", "First"),
            m("assistant", "One"),
            m("user", "Second"),
            m("assistant", "Two"),
            m("user", "Third"),
        ],
    ];
    let mut cases = Vec::new();
    for msgs in &convs {
        for thinking in [true, false] {
            cases.push(serde_json::json!({ "messages": msgs, "enable_thinking": thinking }));
        }
    }
    let dir = repo().join("models/qwen3-tokenizer");
    let want: Vec<String> = serde_json::from_value(python(
        "hf_chat.py",
        &[dir.to_str().unwrap()],
        &serde_json::to_string(&cases).unwrap(),
    ))
    .unwrap();
    let mut i = 0;
    for msgs in &convs {
        for thinking in [true, false] {
            let got = tmpl.render(msgs, true, thinking).unwrap();
            assert_eq!(
                got, want[i],
                "conversation {msgs:?}, enable_thinking {thinking}"
            );
            i += 1;
        }
    }
}

/// `path` rewritten to `out` with `edit` applied to its metadata.
fn with_metadata(path: &Path, out: &Path, edit: impl FnOnce(&mut Vec<(String, GgufValue)>)) {
    let file = GgufFile::open(path).unwrap();
    let mut meta = file.metadata().to_vec();
    edit(&mut meta);
    let specs: Vec<TensorSpec> = file.tensors().iter().map(TensorSpec::from).collect();
    let mut w = GgufWriter::create(out, &meta, &specs).unwrap();
    for t in file.tensors() {
        w.write_data(file.tensor_data(t)).unwrap();
    }
    w.finish().unwrap();
}

fn cpu() -> LoadOptions {
    LoadOptions {
        device: Some("CPU".into()),
        ..Default::default()
    }
}

/// Generation ends on the end-of-turn and end-of-message ids llama.cpp's
/// converter writes for some chat models, as on EOS.
#[test]
fn eot_and_eom_ids_end_generation() {
    let (dir, path) = converted();
    let out = dir.path().join("eot.gguf");
    with_metadata(&path, &out, |meta| {
        meta.push(("tokenizer.ggml.eot_token_id".into(), GgufValue::U32(151643)));
        meta.push(("tokenizer.ggml.eom_token_id".into(), GgufValue::U32(151668)));
    });
    let model = Model::load(&out, &cpu()).unwrap();
    let mut eos = model.hparams.eos_ids.clone();
    eos.sort();
    assert_eq!(eos, [151643, 151645, 151668]);
}

/// A file whose `add_bos_token` is true gets BOS before a text prompt (once);
/// Qwen3's files, false, get none.
#[test]
fn add_bos_token_puts_bos_before_prompts() {
    let (dir, path) = converted();
    let qwen = Model::load(&path, &cpu()).unwrap().tokenizer().unwrap();
    let hi = qwen.encode("Hi").unwrap();
    assert_eq!(qwen.encode_prompt("Hi").unwrap(), hi);
    let out = dir.path().join("bos.gguf");
    with_metadata(&path, &out, |meta| {
        for (k, v) in meta.iter_mut() {
            if k == "tokenizer.ggml.add_bos_token" {
                *v = GgufValue::Bool(true);
            }
        }
    });
    let tok = Model::load(&out, &cpu()).unwrap().tokenizer().unwrap();
    assert_eq!(
        tok.encode_prompt("Hi").unwrap(),
        [&[151643][..], &hi].concat()
    );
    assert_eq!(
        tok.encode_prompt("<|endoftext|>Hi").unwrap(),
        [&[151643][..], &hi].concat()
    );
    assert_eq!(tok.encode("Hi").unwrap(), hi);
}
