//! Text in and out of the engine: the tokenizer stored in the GGUF encodes
//! like Hugging Face `tokenizers`, and the chat template renders like
//! transformers' `apply_chat_template`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use orthrus_engine::chat::{ChatTemplate, Message};
use orthrus_engine::tokenizer::{StreamDecoder, TextStream, Tokenizer};
use orthrus_kernels::gguf::GgufFile;
use orthrus_tests::{convert_fixture, repo};

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

#[test]
fn tokenizer_from_the_gguf_encodes_like_hugging_face() {
    let (_dir, path) = converted();
    let file = GgufFile::open(&path).unwrap();
    let json = file
        .get("tokenizer.huggingface.json")
        .unwrap()
        .as_str()
        .unwrap();
    let tok = Tokenizer::from_json(json).unwrap();
    let tok_json = repo().join("models/qwen3-tokenizer/tokenizer.json");
    let mut args = vec![tok_json.to_str().unwrap()];
    args.extend(TEXTS);
    let want: Vec<Vec<u32>> = serde_json::from_value(python("hf_tokenize.py", &args, "")).unwrap();
    for (text, want) in TEXTS.iter().zip(want) {
        let ids = tok.encode(text).unwrap();
        assert_eq!(ids, want, "{text:?}");
        assert_eq!(tok.decode(&ids).unwrap(), *text);
        // Streaming pieces add up to the text, whole characters at a time.
        let mut s = StreamDecoder::new(&tok);
        let joined: String = ids.iter().map(|&i| s.push(i).unwrap()).collect();
        assert_eq!(joined, *text);
    }
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
    let file = GgufFile::open(&path).unwrap();
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
