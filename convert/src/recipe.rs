//! Which ggml type each tensor gets for a requested file type: llama.cpp's
//! `llama-quantize` recipe for Qwen3, so a `Q4_K_M` file here matches one
//! made there, extended to the diffusion view.

use std::fmt;
use std::str::FromStr;

use orthrus_kernels::schema::Kind;
use orthrus_kernels::GgmlType;

/// The `--type` of a converted file, named as llama.cpp names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_K_M,
    Q5_K_M,
    Q6_K,
}

impl FileType {
    pub const ALL: [FileType; 8] = [
        FileType::F32,
        FileType::F16,
        FileType::BF16,
        FileType::Q8_0,
        FileType::Q4_0,
        FileType::Q4_K_M,
        FileType::Q5_K_M,
        FileType::Q6_K,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FileType::F32 => "f32",
            FileType::F16 => "f16",
            FileType::BF16 => "bf16",
            FileType::Q8_0 => "q8_0",
            FileType::Q4_0 => "q4_0",
            FileType::Q4_K_M => "q4_k_m",
            FileType::Q5_K_M => "q5_k_m",
            FileType::Q6_K => "q6_k",
        }
    }

    /// llama.cpp's `general.file_type` (`enum llama_ftype`).
    pub fn llama_ftype(self) -> u32 {
        match self {
            FileType::F32 => 0,
            FileType::F16 => 1,
            FileType::Q4_0 => 2,
            FileType::Q8_0 => 7,
            FileType::Q4_K_M => 15,
            FileType::Q5_K_M => 17,
            FileType::Q6_K => 18,
            FileType::BF16 => 32,
        }
    }

    /// The type of matrices that no rule singles out.
    pub fn default_type(self) -> GgmlType {
        match self {
            FileType::F32 => GgmlType::F32,
            FileType::F16 => GgmlType::F16,
            FileType::BF16 => GgmlType::BF16,
            FileType::Q8_0 => GgmlType::Q8_0,
            FileType::Q4_0 => GgmlType::Q4_0,
            FileType::Q4_K_M => GgmlType::Q4_K,
            FileType::Q5_K_M => GgmlType::Q5_K,
            FileType::Q6_K => GgmlType::Q6_K,
        }
    }

    pub fn is_quantized(self) -> bool {
        self.default_type().is_quantized()
    }
}

impl FromStr for FileType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        FileType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<_> = FileType::ALL.iter().map(|t| t.name()).collect();
                format!("unknown type {s:?}; expected one of {}", names.join(", "))
            })
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a tensor sits, as the recipe needs to know it.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    pub kind: Kind,
    pub layer: u32,
    pub n_layers: u32,
    /// The token embedding doubles as the output matrix.
    pub tied: bool,
    /// Row length (ggml `ne[0]`).
    pub row_len: u64,
}

/// llama.cpp's layers that get more bits in the `_M` mixes: the first and
/// last eighth, and every third layer in between.
fn use_more_bits(layer: u32, n_layers: u32) -> bool {
    let (i, n) = (layer as i64, n_layers as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The type of one tensor. `head_type` overrides the diffusion view's
/// matrices; by default each follows its AR twin in the same layer.
pub fn tensor_type(ft: FileType, slot: Slot, head_type: Option<GgmlType>) -> GgmlType {
    if slot.kind.is_norm() {
        return GgmlType::F32;
    }
    if let Some(twin) = slot.kind.ar_twin() {
        return match head_type {
            Some(t) => fallback(t, slot.row_len),
            None => tensor_type(ft, Slot { kind: twin, ..slot }, None),
        };
    }
    let base = ft.default_type();
    if !base.is_quantized() {
        return base;
    }
    let chosen = match slot.kind {
        Kind::Output => output_type(base, slot.row_len),
        Kind::TokenEmbd if slot.tied => output_type(base, slot.row_len),
        Kind::AttnV
            if matches!(ft, FileType::Q4_K_M | FileType::Q5_K_M)
                && use_more_bits(slot.layer, slot.n_layers) =>
        {
            GgmlType::Q6_K
        }
        Kind::FfnDown
            if matches!(ft, FileType::Q4_K_M | FileType::Q5_K_M)
                && use_more_bits(slot.layer, slot.n_layers) =>
        {
            GgmlType::Q6_K
        }
        _ => base,
    };
    fallback(chosen, slot.row_len)
}

/// The output matrix (and a tied embedding) gets Q6_K unless the file is
/// Q8_0, or Q8_0 when its rows do not fit the 256-wide K blocks.
fn output_type(base: GgmlType, row_len: u64) -> GgmlType {
    if !row_len.is_multiple_of(base.block_size()) {
        GgmlType::Q8_0
    } else if base != GgmlType::Q8_0 {
        GgmlType::Q6_K
    } else {
        base
    }
}

/// llama.cpp's fallbacks for rows that are not a whole number of blocks:
/// a 32-wide type of similar quality, else F16.
fn fallback(ty: GgmlType, row_len: u64) -> GgmlType {
    if row_len.is_multiple_of(ty.block_size()) {
        return ty;
    }
    let smaller = match ty {
        GgmlType::Q2_K | GgmlType::Q3_K => GgmlType::Q4_0,
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        GgmlType::IQ4_XS => GgmlType::IQ4_NL,
        other => other,
    };
    if row_len.is_multiple_of(smaller.block_size()) {
        smaller
    } else {
        GgmlType::F16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(kind: Kind, layer: u32) -> Slot {
        Slot {
            kind,
            layer,
            n_layers: 28,
            tied: true,
            row_len: 2048,
        }
    }

    /// The Q4_K_M mix of a 28-layer Qwen3 as llama-quantize makes it.
    #[test]
    fn q4_k_m_matches_llama_quantize() {
        let ft = FileType::Q4_K_M;
        let more: Vec<u32> = (0..28).filter(|&i| use_more_bits(i, 28)).collect();
        assert_eq!(
            more,
            vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27]
        );
        for i in 0..28 {
            let want = if more.contains(&i) {
                GgmlType::Q6_K
            } else {
                GgmlType::Q4_K
            };
            assert_eq!(tensor_type(ft, slot(Kind::AttnV, i), None), want);
            assert_eq!(
                tensor_type(
                    ft,
                    Slot {
                        row_len: 6144,
                        ..slot(Kind::FfnDown, i)
                    },
                    None
                ),
                want
            );
            assert_eq!(tensor_type(ft, slot(Kind::AttnQ, i), None), GgmlType::Q4_K);
            assert_eq!(tensor_type(ft, slot(Kind::FfnUp, i), None), GgmlType::Q4_K);
            assert_eq!(
                tensor_type(ft, slot(Kind::AttnVDiff, i), None),
                want,
                "diffusion follows its twin"
            );
        }
        assert_eq!(
            tensor_type(ft, slot(Kind::TokenEmbd, 0), None),
            GgmlType::Q6_K,
            "tied embedding"
        );
        let untied = Slot {
            tied: false,
            ..slot(Kind::TokenEmbd, 0)
        };
        assert_eq!(tensor_type(ft, untied, None), GgmlType::Q4_K);
        assert_eq!(tensor_type(ft, slot(Kind::Output, 0), None), GgmlType::Q6_K);
        assert_eq!(
            tensor_type(ft, slot(Kind::AttnNorm, 0), None),
            GgmlType::F32
        );
        assert_eq!(
            tensor_type(ft, slot(Kind::AttnQNormDiff, 0), None),
            GgmlType::F32
        );
    }

    #[test]
    fn other_mixes() {
        assert_eq!(
            tensor_type(FileType::Q8_0, slot(Kind::Output, 0), None),
            GgmlType::Q8_0
        );
        assert_eq!(
            tensor_type(FileType::Q4_0, slot(Kind::Output, 0), None),
            GgmlType::Q6_K
        );
        assert_eq!(
            tensor_type(FileType::Q4_0, slot(Kind::AttnV, 0), None),
            GgmlType::Q4_0
        );
        assert_eq!(
            tensor_type(FileType::Q5_K_M, slot(Kind::FfnDown, 0), None),
            GgmlType::Q6_K
        );
        assert_eq!(
            tensor_type(FileType::Q5_K_M, slot(Kind::FfnDown, 3), None),
            GgmlType::Q5_K
        );
        assert_eq!(
            tensor_type(FileType::BF16, slot(Kind::Output, 0), None),
            GgmlType::BF16
        );
        assert_eq!(
            tensor_type(FileType::F16, slot(Kind::AttnNorm, 0), None),
            GgmlType::F32
        );
    }

    #[test]
    fn head_type_overrides_diffusion_only() {
        let s = slot(Kind::AttnQDiff, 4);
        assert_eq!(
            tensor_type(FileType::Q4_K_M, s, Some(GgmlType::Q8_0)),
            GgmlType::Q8_0
        );
        assert_eq!(
            tensor_type(FileType::Q4_K_M, slot(Kind::AttnQ, 4), Some(GgmlType::Q8_0)),
            GgmlType::Q4_K
        );
    }

    #[test]
    fn narrow_rows_fall_back() {
        let narrow = |kind, row_len| Slot {
            row_len,
            ..slot(kind, 3)
        };
        assert_eq!(
            tensor_type(FileType::Q4_K_M, narrow(Kind::AttnQ, 64), None),
            GgmlType::Q5_0
        );
        assert_eq!(
            tensor_type(FileType::Q4_K_M, narrow(Kind::AttnV, 64), None),
            GgmlType::Q5_0
        );
        assert_eq!(
            tensor_type(
                FileType::Q4_K_M,
                Slot {
                    row_len: 64,
                    ..slot(Kind::AttnV, 0)
                },
                None
            ),
            GgmlType::Q8_0
        );
        assert_eq!(
            tensor_type(FileType::Q4_K_M, narrow(Kind::Output, 64), None),
            GgmlType::Q8_0
        );
        assert_eq!(
            tensor_type(FileType::Q4_K_M, narrow(Kind::AttnQ, 16), None),
            GgmlType::F16
        );
        assert_eq!(
            tensor_type(FileType::Q8_0, narrow(Kind::AttnQ, 16), None),
            GgmlType::F16
        );
        assert_eq!(
            tensor_type(FileType::Q5_K_M, narrow(Kind::AttnQ, 96), None),
            GgmlType::Q5_1
        );
    }
}
