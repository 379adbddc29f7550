//! Model files with hostile hyperparameters or tensor types are refused at
//! load with an error naming the key (or tensor) and the file, before
//! anything is sized by them and before ggml could abort on them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use orthrus_engine::{LoadOptions, Model};
use orthrus_kernels::gguf::{GgufFile, GgufValue, GgufWriter, TensorSpec};
use orthrus_kernels::schema::{keys, Layout};
use orthrus_kernels::GgmlType;

fn source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny-orthrus/tiny-orthrus-q8_0.gguf")
}

/// The source model's hyperparameter key `suffix` (`block_count`, ...).
fn key(suffix: &str) -> String {
    let f = GgufFile::open(&source()).unwrap();
    let arch = f.get(keys::ARCHITECTURE).unwrap().as_str().unwrap();
    Layout::of(arch).unwrap().key(suffix)
}

/// The source model with metadata key `key` set to `value` (or removed with
/// `None`) and the tensors `edit` makes of its tensors (data kept where the
/// name, type and shape are kept, zeros otherwise), written to `dir`.
fn variant(
    dir: &Path,
    key: &str,
    value: Option<GgufValue>,
    edit: impl FnOnce(&mut Vec<TensorSpec>),
) -> PathBuf {
    variant_with(dir, vec![(key, value)], edit)
}

/// [`variant`] with several keys set or removed.
fn variant_with(
    dir: &Path,
    keys: Vec<(&str, Option<GgufValue>)>,
    edit: impl FnOnce(&mut Vec<TensorSpec>),
) -> PathBuf {
    let src = GgufFile::open(&source()).unwrap();
    let mut meta: Vec<(String, GgufValue)> = src
        .metadata()
        .iter()
        .filter(|(k, _)| keys.iter().all(|(key, _)| k != key) && k != "general.alignment")
        .cloned()
        .collect();
    for (key, value) in keys {
        if let Some(v) = value {
            meta.push((key.to_string(), v));
        }
    }
    let mut specs: Vec<TensorSpec> = src.tensors().iter().map(TensorSpec::from).collect();
    edit(&mut specs);
    let path = dir.join("variant.gguf");
    let mut w = GgufWriter::create(&path, &meta, &specs).unwrap();
    for s in &specs {
        match src.tensor(&s.name) {
            Some(t) if t.ty == s.ty && t.dims == s.dims => {
                w.write_data(src.tensor_data(t)).unwrap()
            }
            _ => {
                let rows: u64 = s.dims[1..].iter().product();
                let bytes = s.ty.row_bytes(s.dims[0]).unwrap() * rows;
                w.write_data(&vec![0; bytes as usize]).unwrap();
            }
        }
    }
    w.finish().unwrap();
    path
}

fn cpu() -> LoadOptions {
    LoadOptions {
        device: Some("CPU".into()),
        ..Default::default()
    }
}

/// The load error for `path`, which must name every string of `want`.
fn refused(path: &Path, want: &[&str]) {
    let start = Instant::now();
    let e = match Model::load(path, &cpu()) {
        Ok(_) => panic!("{want:?}: the model loaded"),
        Err(e) => e.to_string(),
    };
    assert!(start.elapsed() < Duration::from_secs(10), "{want:?}: slow");
    assert!(e.contains(&path.display().to_string()), "{e}");
    for w in want {
        assert!(e.contains(w), "wanted {w:?} in: {e}");
    }
}

#[test]
fn the_source_model_loads() {
    Model::load(&source(), &cpu()).unwrap();
}

#[test]
fn norm_epsilon_and_rope_base_must_be_finite_and_positive() {
    let dir = tempfile::tempdir().unwrap();
    let eps = key(keys::RMS_EPS);
    for bad in [f32::NAN, -1e-6, 0.0, f32::INFINITY, 1e-50, 2.0] {
        let p = variant(dir.path(), &eps, Some(GgufValue::F32(bad)), |_| {});
        refused(&p, &[&eps, "between 0 and 1"]);
    }
    // A 64-bit epsilon too small for f32 would become 0.
    let p = variant(dir.path(), &eps, Some(GgufValue::F64(1e-60)), |_| {});
    refused(&p, &[&eps]);
    let theta = key(keys::ROPE_FREQ_BASE);
    for bad in [f32::NAN, 0.0, -1e4, f32::NEG_INFINITY] {
        let p = variant(dir.path(), &theta, Some(GgufValue::F32(bad)), |_| {});
        refused(&p, &[&theta, "above 1"]);
    }
    let p = variant(dir.path(), &theta, Some(GgufValue::F64(1e300)), |_| {});
    refused(&p, &[&theta]);
}

#[test]
fn counts_are_bounded_and_checked_against_the_tensors_first() {
    let dir = tempfile::tempdir().unwrap();
    let layers = key(keys::BLOCK_COUNT);
    // Within the bound but beyond the tensors: refused before a list of
    // 2^12 x 17 expected tensors (or their buffers) is built.
    let p = variant(dir.path(), &layers, Some(GgufValue::U32(4096)), |_| {});
    refused(&p, &[&layers, "4096 layers", "tensors"]);
    for n in [1u64 << 20, 1 << 40] {
        let p = variant(dir.path(), &layers, Some(GgufValue::U64(n)), |_| {});
        refused(&p, &[&layers, "beyond 4096"]);
    }
    // Values beyond u32, never narrowed.
    let ctx = key(keys::CONTEXT_LENGTH);
    let p = variant(
        dir.path(),
        &ctx,
        Some(GgufValue::U64((1 << 32) + 512)),
        |_| {},
    );
    refused(&p, &[&ctx, "4294967808", "beyond"]);
    let heads = key(keys::HEAD_COUNT);
    let p = variant(dir.path(), &heads, Some(GgufValue::U64(1 << 32)), |_| {});
    refused(&p, &[&heads, "beyond"]);
    let kv = key(keys::HEAD_COUNT_KV);
    let p = variant(dir.path(), &kv, Some(GgufValue::U32(3)), |_| {});
    refused(&p, &["cannot share 3 KV heads"]);
    let vlen = key(keys::VALUE_LENGTH);
    let p = variant(dir.path(), &vlen, Some(GgufValue::U32(8)), |_| {});
    refused(&p, &[&vlen, "differs"]);
}

#[test]
fn orthrus_settings_and_token_ids_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let src = GgufFile::open(&source()).unwrap();
    let layout = Layout::of(src.get(keys::ARCHITECTURE).unwrap().as_str().unwrap()).unwrap();
    let block = layout.block_size_key();
    for (n, why) in [
        (1u64, "a block holds"),
        (257, "beyond 256"),
        (1 << 33, "beyond"),
    ] {
        let p = variant(dir.path(), &block, Some(GgufValue::U64(n)), |_| {});
        refused(&p, &[&block, why]);
    }
    // 2^32 + 1 would wrap to token 1, inside the vocabulary.
    let mask = layout.mask_token_key();
    let p = variant(
        dir.path(),
        mask,
        Some(GgufValue::U64((1 << 32) + 1)),
        |_| {},
    );
    refused(&p, &[mask, "not a token id"]);
    for k in [keys::EOS_ID, keys::EOT_ID] {
        let p = variant(dir.path(), k, Some(GgufValue::U32(1_000_000)), |_| {});
        refused(&p, &[k, "1000000", "not a token id"]);
    }
    let p = variant(
        dir.path(),
        keys::EOS_IDS,
        Some(GgufValue::u32_array([2, 4_000_000])),
        |_| {},
    );
    refused(&p, &[keys::EOS_IDS, "4000000"]);
    // A BOS id put before prompts (2^32 + 1 would wrap to token 1).
    let p = variant_with(
        dir.path(),
        vec![
            (keys::BOS_ID, Some(GgufValue::U64((1 << 32) + 1))),
            (keys::ADD_BOS, Some(GgufValue::Bool(true))),
        ],
        |_| {},
    );
    refused(&p, &[keys::BOS_ID, "not a token id"]);
}

#[test]
fn weights_of_a_type_ggml_cannot_multiply_by_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for ty in [GgmlType::Q8_1, GgmlType::Q8_K, GgmlType::I32, GgmlType::F64] {
        let p = variant(dir.path(), "unused.key", None, |specs| {
            let s = specs
                .iter_mut()
                .find(|s| s.name == "blk.0.ffn_up.weight")
                .unwrap();
            s.ty = ty;
        });
        // Q8_K needs rows of 256; the tiny model's are narrower, which the
        // reader refuses first (also a clear error).
        let e = Model::load(&p, &cpu()).err().unwrap().to_string();
        assert!(
            e.contains("blk.0.ffn_up.weight")
                && (e.contains("cannot multiply by") || e.contains("block size")),
            "{ty:?}: {e}"
        );
    }
}

#[test]
fn errors_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let e = Model::load(dir.path(), &cpu()).err().unwrap().to_string();
    assert!(
        e.contains("is a directory") && e.contains(&dir.path().display().to_string()),
        "{e}"
    );
    // A tokenizer JSON that does not parse is reported as such, with the file.
    let p = variant(
        dir.path(),
        keys::HF_JSON,
        Some(GgufValue::String("{\"model\": ".into())),
        |_| {},
    );
    let model = Model::load(&p, &cpu()).unwrap();
    let e = model.tokenizer().err().unwrap().to_string();
    assert!(
        e.contains(&p.display().to_string())
            && e.contains(keys::HF_JSON)
            && e.contains("not a valid tokenizer JSON"),
        "{e}"
    );
}
