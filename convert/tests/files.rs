//! What the converted files hold (metadata, tensor sets, split files), and
//! what the converter refuses.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use orthrus_convert::convert::{convert, head_path, Options};
use orthrus_convert::FileType;
use orthrus_kernels::gguf::{GgufFile, GgufValue};
use orthrus_kernels::schema::{keys, Layout};
use orthrus_kernels::GgmlType;

fn u64_key(f: &GgufFile, k: &str) -> u64 {
    f.get(k)
        .and_then(GgufValue::as_u64)
        .unwrap_or_else(|| panic!("key {k} missing"))
}

#[test]
fn metadata_follows_llama_cpp_and_orthrus_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.gguf");
    run(&options(
        &fixture("tiny-untied-f16-sharded"),
        &out,
        FileType::Q8_0,
    ));
    let f = GgufFile::open(&out).unwrap();
    // The community layout: every hyperparameter under `orthrus.`.
    assert_eq!(
        f.get(keys::ARCHITECTURE).and_then(GgufValue::as_str),
        Some("orthrus")
    );
    let hp = |suffix: &str| Layout::ORTHRUS.key(suffix);
    assert_eq!(u64_key(&f, keys::FILE_TYPE), 7);
    assert_eq!(u64_key(&f, keys::QUANTIZATION_VERSION), 2);
    assert_eq!(u64_key(&f, &hp(keys::EMBEDDING_LENGTH)), 16);
    assert_eq!(u64_key(&f, "orthrus.block_count"), 3);
    assert_eq!(u64_key(&f, &hp(keys::HEAD_COUNT)), 2);
    assert_eq!(u64_key(&f, &hp(keys::HEAD_COUNT_KV)), 1);
    assert_eq!(u64_key(&f, &hp(keys::KEY_LENGTH)), 16);
    assert_eq!(f.get(&hp(keys::ROPE_FREQ_BASE)), Some(&GgufValue::F32(1e6)));
    assert_eq!(u64_key(&f, "orthrus.diffusion.block_size"), 16);
    assert_eq!(u64_key(&f, "tokenizer.ggml.mask_token_id"), 151662);
    assert!(
        f.metadata().iter().all(|(k, _)| !k.starts_with("qwen3.")),
        "no qwen3.* keys in an orthrus file"
    );
    let eos: Vec<u64> = f
        .get(keys::EOS_IDS)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(
        eos,
        vec![151645, 151643],
        "EOS ids come from generation_config's list"
    );
    assert_eq!(u64_key(&f, keys::EOS_ID), 151645);
    assert_eq!(
        f.get(keys::ADD_BOS).and_then(GgufValue::as_bool),
        Some(false)
    );
    let tokens = f.get(keys::TOKENS).unwrap().as_array().unwrap();
    assert_eq!(tokens.len(), 151936);
    assert_eq!(tokens[151645].as_str(), Some("<|im_end|>"));
    assert_eq!(tokens[151700].as_str(), Some("[PAD151700]"));
    let types = f.get(keys::TOKEN_TYPE).unwrap().as_array().unwrap();
    let ty = |id: usize| types[id].as_i64().unwrap();
    assert_eq!(
        (ty(0), ty(151645), ty(151659), ty(151667), ty(151700)),
        (1, 3, 3, 4, 5)
    );
    assert_eq!(
        f.get(keys::MERGES).unwrap().as_array().unwrap().len(),
        151387
    );
    let hf_json =
        std::fs::read_to_string(fixture("tiny-untied-f16-sharded").join("tokenizer.json")).unwrap();
    assert_eq!(
        f.get(keys::HF_JSON).and_then(GgufValue::as_str),
        Some(hf_json.as_str())
    );
    assert!(f
        .get(keys::CHAT_TEMPLATE)
        .and_then(GgufValue::as_str)
        .unwrap()
        .contains("enable_thinking"));
    assert!(
        f.tensor("output.weight").is_some(),
        "untied model keeps its output matrix"
    );
    assert_eq!(f.tensors().len(), 1 + 3 * 17 + 2);
}

#[test]
fn split_writes_a_plain_base_and_a_head() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.gguf");
    let mut opts = options(&fixture("tiny-tied-bf16"), &out, FileType::Q8_0);
    opts.split = true;
    opts.head_type = Some(GgmlType::F16);
    let summaries = run(&opts);
    assert_eq!(summaries.len(), 2);
    // Bits per weight count tensor data only (the base also holds an 11 MB
    // tokenizer): every head tensor is f16 but the f32 norms.
    let head_bpw = summaries[1].bits_per_weight();
    assert!(
        head_bpw > 16.0 && head_bpw < 17.0,
        "head: {head_bpw} bits per weight"
    );
    assert!(
        summaries[0].bits_per_weight() < 9.0,
        "base: {}",
        summaries[0].bits_per_weight()
    );
    let base = GgufFile::open(&out).unwrap();
    let head = GgufFile::open(&head_path(&out)).unwrap();
    assert_eq!(head_path(&out), tmp.path().join("m.head.gguf"));
    assert!(base.tensors().iter().all(|t| !t.name.contains("_diff")));
    assert!(
        base.metadata()
            .iter()
            .all(|(k, _)| !k.starts_with("orthrus.") && k != keys::MASK_ID),
        "base is plain Qwen3"
    );
    assert_eq!(
        base.get(keys::ARCHITECTURE).and_then(GgufValue::as_str),
        Some("qwen3")
    );
    assert_eq!(u64_key(&base, "qwen3.block_count"), 2);
    assert_eq!(base.tensors().len(), 1 + 2 * 11 + 1);
    assert_eq!(head.tensors().len(), 2 * 6);
    assert!(head.tensors().iter().all(|t| t.name.contains("_diff")));
    assert!(head.get(keys::TOKENS).is_none());
    assert_eq!(
        head.get(keys::TYPE).and_then(GgufValue::as_str),
        Some("orthrus-head")
    );
    assert_eq!(
        head.get(keys::ARCHITECTURE).and_then(GgufValue::as_str),
        Some("orthrus")
    );
    assert_eq!(u64_key(&head, "orthrus.diffusion.block_size"), 8);
    assert_eq!(u64_key(&head, keys::MASK_ID), 151669);
    assert_eq!(u64_key(&head, "orthrus.block_count"), 2);
    let q = head.tensor("blk.0.attn_q_diff.weight").unwrap();
    assert_eq!(
        q.ty,
        GgmlType::F16,
        "--head-type applies to the diffusion matrices"
    );
    assert_eq!(
        head.tensor("blk.0.attn_q_norm_diff.weight").unwrap().ty,
        GgmlType::F32
    );
}

#[test]
fn plain_qwen3_becomes_an_ar_only_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("plain");
    make_checkpoint(
        &dir,
        &[
            "--hidden",
            "32",
            "--heads",
            "2",
            "--kv-heads",
            "1",
            "--head-dim",
            "16",
            "--inter",
            "32",
            "--layers",
            "1",
            "--plain-qwen3",
            "--tied",
            "--copy-tokenizer",
        ],
    );
    let out = tmp.path().join("p.gguf");
    run(&options(&dir, &out, FileType::F16));
    let f = GgufFile::open(&out).unwrap();
    assert!(f.tensors().iter().all(|t| !t.name.contains("_diff")));
    assert_eq!(
        f.get(keys::ARCHITECTURE).and_then(GgufValue::as_str),
        Some("qwen3")
    );
    assert!(f.get("qwen3.diffusion.block_size").is_none() && f.get(keys::MASK_ID).is_none());
    let mut split = options(&dir, &out, FileType::F16);
    split.split = true;
    let err = convert(&split, &mut |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("--split needs an Orthrus checkpoint"), "{err}");
}

/// Runs a conversion that must fail; checks the message and that the
/// existing output file is untouched and nothing else was left behind.
fn refused(dir: &Path, expect: &str) {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("m.gguf");
    std::fs::write(&out, b"previous model").unwrap();
    let err = convert(&options(dir, &out, FileType::Q8_0), &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains(expect), "expected {expect:?} in: {err}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"previous model",
        "output was touched"
    );
    assert_eq!(
        stray_files(out_dir.path(), &["m.gguf"]),
        Vec::<String>::new()
    );
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
}

#[test]
fn bad_checkpoints_are_refused_and_leave_the_output_alone() {
    let src = fixture("tiny-tied-bf16");
    let broken = |edit: &dyn Fn(&Path), expect: &str| {
        let tmp = tempfile::tempdir().unwrap();
        copy_checkpoint(&src, tmp.path());
        edit(tmp.path());
        refused(tmp.path(), expect);
    };
    broken(
        &|d| edit_config(d, |c| c["num_hidden_layers"] = 3.into()),
        "model.layers.2.input_layernorm.weight: missing",
    );
    broken(&|d| edit_config(d, |c| c["tie_word_embeddings"] = false.into()), "lm_head.weight: missing from the checkpoint (config.json says tie_word_embeddings is false)");
    broken(
        &|d| edit_config(d, |c| c["intermediate_size"] = 96.into()),
        "does not match config.json",
    );
    broken(
        &|d| edit_config(d, |c| c["model_type"] = "llama".into()),
        "model_type is \"llama\"",
    );
    broken(
        &|d| edit_config(d, |c| c["mask_token_id"] = 151936.into()),
        "mask_token_id 151936 is outside the embedding",
    );
    broken(
        &|d| edit_config(d, |c| c["model_type"] = "qwen3".into()),
        "looks like an Orthrus checkpoint",
    );
    broken(
        &|d| std::fs::remove_file(d.join("tokenizer.json")).unwrap(),
        "tokenizer.json",
    );
    broken(
        &|d| std::fs::remove_file(d.join("model.safetensors")).unwrap(),
        "no model.safetensors",
    );
    broken(
        &|d| std::fs::write(d.join("config.json"), "{not json").unwrap(),
        "config.json: invalid JSON",
    );
    broken(
        &|d| {
            let p = d.join("model.safetensors");
            let len = std::fs::metadata(&p).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(len - 100)
                .unwrap();
        },
        "file has",
    );
    broken(
        &|d| {
            // Rewrite one tensor's dtype in the header to one we do not read.
            let p = d.join("model.safetensors");
            let mut bytes = std::fs::read(&p).unwrap();
            let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
            let patched = header.replacen("\"BF16\"", "\"I16\" ", 1);
            bytes[8..8 + n].copy_from_slice(patched.as_bytes());
            std::fs::write(&p, bytes).unwrap();
        },
        "dtype I16 is not supported",
    );
}

#[test]
fn sharded_index_must_match_the_shards() {
    let tmp = tempfile::tempdir().unwrap();
    copy_checkpoint(&fixture("tiny-untied-f16-sharded"), tmp.path());
    let index = tmp.path().join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index).unwrap();
    std::fs::write(&index, text.replace("model-00002-of-00002", "../escape")).unwrap();
    refused(tmp.path(), "is not a plain file name");
}

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_orthrus-convert"))
}

#[test]
fn cli_converts_prints_info_and_reports_errors_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.gguf");
    let run = cli()
        .arg(fixture("tiny-tied-bf16"))
        .args(["-o"])
        .arg(&out)
        .args(["--type", "q4_k_m"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("bits per weight") && stderr.contains("tensors"),
        "{stderr}"
    );

    let info = cli().arg("--info").arg(&out).output().unwrap();
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success());
    for needle in [
        "orthrus.attention.head_count",
        "orthrus.diffusion.block_size",
        "blk.1.attn_v_diff.weight",
        "q8_0",
        "f32",
    ] {
        assert!(text.contains(needle), "--info lacks {needle}:\n{text}");
    }

    let bad = cli()
        .arg(fixture("tiny-tied-bf16"))
        .args(["--type", "q3_xx"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected one of f32, f16"));

    let missing = cli()
        .arg(tmp.path().join("nope"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let msg = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success()
            && msg.lines().count() == 1
            && msg.contains("not a checkpoint directory"),
        "{msg}"
    );

    std::fs::write(tmp.path().join("junk.gguf"), b"GGUF\x03\x00\x00\x00garbage").unwrap();
    let junk = cli()
        .arg("--info")
        .arg(tmp.path().join("junk.gguf"))
        .output()
        .unwrap();
    assert!(!junk.status.success());
    assert!(String::from_utf8_lossy(&junk.stderr).contains("junk.gguf"));
}

/// A write that fails part-way (here a file-size limit, standing in for a
/// full disk) is reported and leaves neither a partial file nor a temp file.
#[cfg(unix)]
#[test]
fn failed_write_leaves_the_output_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.gguf");
    std::fs::write(&out, b"previous model").unwrap();
    let script = format!(
        "trap '' XFSZ; ulimit -f 2048; exec '{}' '{}' -o '{}' --type f32",
        env!("CARGO_BIN_EXE_orthrus-convert"),
        fixture("tiny-tied-bf16").display(),
        out.display()
    );
    let run = Command::new("bash").arg("-c").arg(script).output().unwrap();
    let msg = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success(),
        "conversion should hit the size limit"
    );
    assert!(
        msg.contains("File too large") || msg.contains("too large"),
        "{msg}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"previous model");
    assert_eq!(stray_files(tmp.path(), &["m.gguf"]), Vec::<String>::new());
}

/// The bundled trained model, a file of our earlier layout, is what its
/// committed HF checkpoint converts to: the same tensors byte for byte, the
/// same metadata once each key is renamed to the community layout (and that
/// checkpoint, a real trained model with its own tokenizer, 4160 embedding
/// rows and the mask token past the tokenizer, converts at every type).
#[test]
fn the_bundled_model_is_its_checkpoint_converted() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = repo().join("models/tiny-orthrus/hf");
    let out = tmp.path().join("t.gguf");
    run(&Options {
        name: Some("tiny-orthrus".into()),
        ..options(&hf, &out, FileType::Q8_0)
    });
    let bundled =
        GgufFile::open(&repo().join("models/tiny-orthrus/tiny-orthrus-q8_0.gguf")).unwrap();
    let f = GgufFile::open(&out).unwrap();
    // Our earlier layout's name of each key of the community layout.
    let earlier = |k: &str| -> String {
        match k {
            keys::ARCHITECTURE => k.into(),
            "orthrus.diffusion.block_size" => keys::LEGACY_BLOCK_SIZE.into(),
            keys::MASK_ID => keys::LEGACY_MASK_TOKEN_ID.into(),
            keys::EOS_IDS => k.into(),
            _ => match k.strip_prefix("orthrus.") {
                Some(suffix) => Layout::QWEN3.key(suffix),
                None => k.into(),
            },
        }
    };
    let renamed: Vec<(String, &GgufValue)> =
        f.metadata().iter().map(|(k, v)| (earlier(k), v)).collect();
    let old: Vec<(String, &GgufValue)> = bundled
        .metadata()
        .iter()
        .map(|(k, v)| (k.clone(), v))
        .collect();
    let differ: Vec<&String> = renamed
        .iter()
        .filter(|kv| !old.contains(kv))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(differ, vec![keys::ARCHITECTURE], "keys that differ");
    assert_eq!(renamed.len(), old.len());
    assert_eq!(
        bundled.get(keys::ARCHITECTURE).and_then(GgufValue::as_str),
        Some("qwen3")
    );
    assert_eq!(f.tensors().len(), bundled.tensors().len());
    for (a, b) in f.tensors().iter().zip(bundled.tensors()) {
        assert_eq!((&a.name, a.ty, &a.dims), (&b.name, b.ty, &b.dims));
        assert!(f.tensor_data(a) == bundled.tensor_data(b), "{}", a.name);
    }
    assert_eq!(u64_key(&f, keys::MASK_ID), 4096);
    for ft in [FileType::F32, FileType::BF16, FileType::Q4_K_M] {
        run(&options(&hf, &tmp.path().join(format!("{ft:?}.gguf")), ft));
    }
}

/// Ctrl-C in the middle of a conversion: exit status 130, the existing
/// output untouched, no temporary file left beside it.
#[cfg(unix)]
#[test]
fn ctrl_c_leaves_the_output_alone_and_no_temporary_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("big");
    // About 80 M parameters: seconds of Q4_K_M work on a small machine.
    make_checkpoint(
        &dir,
        &[
            "--hidden",
            "512",
            "--heads",
            "4",
            "--kv-heads",
            "2",
            "--head-dim",
            "128",
            "--inter",
            "1536",
            "--layers",
            "2",
            "--copy-tokenizer",
        ],
    );
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("model.gguf");
    std::fs::write(&out, b"the previous model").unwrap();
    let mut child = cli()
        .arg(&dir)
        .args(["-o", out.to_str().unwrap(), "--type", "q4_k_m"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let temp_files = || {
        std::fs::read_dir(&out_dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp-")
            })
            .count()
    };
    // Interrupt once the temporary output exists, i.e. while tensors are written.
    let t0 = std::time::Instant::now();
    while temp_files() == 0 {
        assert!(
            t0.elapsed().as_secs() < 60 && child.try_wait().unwrap().is_none(),
            "the conversion never started writing"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_eq!(std::fs::read(&out).unwrap(), b"the previous model");
    assert_eq!(temp_files(), 0, "a temporary file was left behind");
}
