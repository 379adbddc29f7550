//! Converted tensors hold the checkpoint's values: exactly for f32/f16/bf16,
//! within each type's error for quantized files.

mod common;

use common::*;
use half::{bf16, f16};
use orthrus_convert::hf::safetensors::Checkpoint;
use orthrus_convert::names::hf_name;
use orthrus_convert::recipe::{tensor_type, Slot};
use orthrus_convert::FileType;
use orthrus_kernels::gguf::GgufFile;
use orthrus_kernels::quant::dequantize;
use orthrus_kernels::schema::{model_tensors, Kind, TensorId};
use orthrus_kernels::GgmlType;

/// Every tensor of the checkpoint as f32, by GGUF name.
fn source_tensors(dir: &std::path::Path, layers: u32, tied: bool) -> Vec<(TensorId, Vec<f32>)> {
    let ck = Checkpoint::open(dir).unwrap();
    model_tensors(layers, tied, true)
        .into_iter()
        .map(|id| {
            let name = hf_name(id);
            let e = ck.get(&name).unwrap();
            let (mut raw, mut vals) = (Vec::new(), Vec::new());
            ck.read_rows_f32(&name, 0, e.n_rows(), &mut raw, &mut vals)
                .unwrap();
            (id, vals)
        })
        .collect()
}

fn exact_case(fixture_name: &str, layers: u32, tied: bool, ft: FileType, expect: fn(f32) -> f32) {
    let dir = fixture(fixture_name);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.gguf");
    run(&options(&dir, &out, ft));
    let file = GgufFile::open(&out).unwrap();
    for (id, want) in source_tensors(&dir, layers, tied) {
        let t = file
            .tensor(&id.gguf_name())
            .unwrap_or_else(|| panic!("{} missing", id.gguf_name()));
        let want_ty = if id.kind.is_norm() {
            GgmlType::F32
        } else {
            ft.default_type()
        };
        assert_eq!(t.ty, want_ty, "{}", t.name);
        let got = dequantize(t.ty, file.tensor_data(t), want.len()).unwrap();
        let want: Vec<f32> = if id.kind.is_norm() {
            want
        } else {
            want.into_iter().map(expect).collect()
        };
        assert!(
            got == want,
            "{} ({ft}) does not hold the source values exactly",
            t.name
        );
    }
}

#[test]
fn f32_f16_bf16_hold_source_values_exactly() {
    let to_f16 = |x: f32| f16::from_f32(x).to_f32();
    let to_bf16 = |x: f32| bf16::from_f32(x).to_f32();
    exact_case("tiny-tied-bf16", 2, true, FileType::F32, |x| x);
    exact_case("tiny-tied-bf16", 2, true, FileType::BF16, |x| x);
    exact_case("tiny-tied-bf16", 2, true, FileType::F16, to_f16);
    exact_case("tiny-untied-f16-sharded", 3, false, FileType::F16, |x| x);
    exact_case("tiny-untied-f16-sharded", 3, false, FileType::F32, |x| x);
    exact_case("tiny-untied-f16-sharded", 3, false, FileType::BF16, to_bf16);
}

/// Relative RMS error a type may add to Gaussian-like weights.
fn bound(ty: GgmlType) -> f64 {
    match ty {
        GgmlType::F32 => 0.0,
        GgmlType::F16 | GgmlType::BF16 => 4e-3,
        GgmlType::Q8_0 => 6e-3,
        GgmlType::Q6_K => 2e-2,
        GgmlType::Q5_K => 4.2e-2,
        GgmlType::Q5_0 | GgmlType::Q5_1 => 5e-2,
        _ => 1e-1,
    }
}

/// A model wide enough (rows of 256) for the K-quant types themselves, not
/// only their fallbacks.
#[test]
fn quantized_files_dequantize_within_bounds_and_follow_the_recipe() {
    let tmp = tempfile::tempdir().unwrap();
    let ck_dir = tmp.path().join("wide");
    make_checkpoint(
        &ck_dir,
        &[
            "--hidden",
            "256",
            "--heads",
            "4",
            "--kv-heads",
            "2",
            "--head-dim",
            "64",
            "--inter",
            "512",
            "--layers",
            "8",
            "--dtype",
            "bf16",
            "--block-size",
            "8",
            "--mask-token-id",
            "151669",
            "--tied",
            "--shards",
            "1",
            "--copy-tokenizer",
        ],
    );
    let sources = source_tensors(&ck_dir, 8, true);
    let mut seen = std::collections::BTreeSet::new();
    for ft in [
        FileType::Q8_0,
        FileType::Q4_0,
        FileType::Q4_K_M,
        FileType::Q5_K_M,
        FileType::Q6_K,
    ] {
        let out = tmp.path().join(format!("{ft}.gguf"));
        run(&options(&ck_dir, &out, ft));
        let file = GgufFile::open(&out).unwrap();
        for (id, want) in &sources {
            let t = file.tensor(&id.gguf_name()).unwrap();
            let slot = Slot {
                kind: id.kind,
                layer: id.layer.unwrap_or(0),
                n_layers: 8,
                tied: true,
                row_len: t.dims[0],
            };
            assert_eq!(t.ty, tensor_type(ft, slot, None), "{ft}: {}", t.name);
            let got = dequantize(t.ty, file.tensor_data(t), want.len()).unwrap();
            let err = rel_rms(want, &got);
            assert!(
                err <= bound(t.ty),
                "{ft}: {} ({}) error {err} > {}",
                t.name,
                t.ty,
                bound(t.ty)
            );
            seen.insert(t.ty.name());
        }
    }
    for ty in ["q8_0", "q4_0", "q4_K", "q5_K", "q6_K", "f32"] {
        assert!(
            seen.contains(ty),
            "no tensor of {ty} was produced: {seen:?}"
        );
    }
}

/// The Q4_K_M mix of an 8-layer model, written out, as llama-quantize makes it.
#[test]
fn q4_k_m_layer_mix() {
    let ft = FileType::Q4_K_M;
    let ty = |kind, layer| {
        tensor_type(
            ft,
            Slot {
                kind,
                layer,
                n_layers: 8,
                tied: true,
                row_len: 256,
            },
            None,
        )
    };
    // use_more_bits(i, 8): i < 1, i >= 7, (i - 1) % 3 == 2 -> layers 0, 3, 6, 7.
    for layer in 0..8 {
        let more = [0, 3, 6, 7].contains(&layer);
        let want = if more { GgmlType::Q6_K } else { GgmlType::Q4_K };
        assert_eq!(ty(Kind::AttnV, layer), want);
        assert_eq!(ty(Kind::FfnDown, layer), want);
        assert_eq!(ty(Kind::FfnGate, layer), GgmlType::Q4_K);
    }
    assert_eq!(ty(Kind::TokenEmbd, 0), GgmlType::Q6_K);
}
