//! The GGUF vocabulary of Qwen3 and Orthrus files: metadata keys, the two
//! layouts of an Orthrus file, and tensor names. Base names and keys are
//! llama.cpp's, so a base file loads there; the diffusion view adds `_diff`
//! tensors (docs/gguf-layout.md describes both layouts).

/// Metadata keys. Hyperparameters live under the architecture's name
/// (`qwen3.block_count`, `orthrus.block_count`): see [`Layout::key`].
pub mod keys {
    pub const ARCHITECTURE: &str = "general.architecture";
    pub const TYPE: &str = "general.type";
    pub const NAME: &str = "general.name";
    pub const FILE_TYPE: &str = "general.file_type";
    pub const QUANTIZATION_VERSION: &str = "general.quantization_version";
    pub const ALIGNMENT: &str = "general.alignment";

    /// Hyperparameter suffixes, after `<architecture>.`.
    pub const CONTEXT_LENGTH: &str = "context_length";
    pub const EMBEDDING_LENGTH: &str = "embedding_length";
    pub const FEED_FORWARD_LENGTH: &str = "feed_forward_length";
    pub const BLOCK_COUNT: &str = "block_count";
    pub const HEAD_COUNT: &str = "attention.head_count";
    pub const HEAD_COUNT_KV: &str = "attention.head_count_kv";
    pub const KEY_LENGTH: &str = "attention.key_length";
    pub const VALUE_LENGTH: &str = "attention.value_length";
    pub const RMS_EPS: &str = "attention.layer_norm_rms_epsilon";
    pub const ROPE_FREQ_BASE: &str = "rope.freq_base";
    /// The community layout's block size (`orthrus.diffusion.block_size`).
    pub const DIFFUSION_BLOCK_SIZE: &str = "diffusion.block_size";

    pub const TOKENIZER_MODEL: &str = "tokenizer.ggml.model";
    pub const TOKENIZER_PRE: &str = "tokenizer.ggml.pre";
    pub const TOKENS: &str = "tokenizer.ggml.tokens";
    pub const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    pub const MERGES: &str = "tokenizer.ggml.merges";
    pub const BOS_ID: &str = "tokenizer.ggml.bos_token_id";
    pub const EOS_ID: &str = "tokenizer.ggml.eos_token_id";
    /// End of turn and end of message: llama.cpp's converter writes them for
    /// chat models; generation ends on them as on EOS.
    pub const EOT_ID: &str = "tokenizer.ggml.eot_token_id";
    pub const EOM_ID: &str = "tokenizer.ggml.eom_token_id";
    pub const PAD_ID: &str = "tokenizer.ggml.padding_token_id";
    /// The community layout's mask token.
    pub const MASK_ID: &str = "tokenizer.ggml.mask_token_id";
    pub const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
    pub const CHAT_TEMPLATE: &str = "tokenizer.chat_template";
    pub const HF_JSON: &str = "tokenizer.huggingface.json";

    /// Our earlier layout (`general.architecture = qwen3`): the diffusion
    /// view's settings as `orthrus.*` keys beside the `qwen3.*` ones.
    pub const LEGACY_BLOCK_SIZE: &str = "orthrus.block_size";
    pub const LEGACY_MASK_TOKEN_ID: &str = "orthrus.mask_token_id";
    /// Every id that ends generation (generation_config.json's list), in
    /// files this project writes; llama.cpp ignores it.
    pub const EOS_IDS: &str = "orthrus.eos_token_ids";
}

/// Bounds on hyperparameters, shared by the converter (refusing to write a
/// file) and the engine (refusing to load one), so nothing is allocated by,
/// or narrowed from, an absurd value.
pub mod limits {
    use crate::GgmlType;

    /// Widths, head counts, head size and vocabulary (far beyond any model;
    /// every value fits the u32 a GGUF key holds).
    pub const MAX_DIM: u64 = 1 << 24;
    /// Layers (the largest models have a few hundred).
    pub const MAX_LAYERS: u64 = 4096;
    /// The longest trained context a file may state (16 M tokens).
    pub const MAX_CONTEXT: u64 = 1 << 24;
    /// Orthrus block sizes the engine runs: a block holds the last token
    /// and at least one mask; per-step statistics are sized by it.
    pub const MIN_BLOCK_SIZE: u64 = 2;
    pub const MAX_BLOCK_SIZE: u64 = 256;

    /// Whether `ty` can be a weight matrix the engine multiplies by: the
    /// intermediate (`q8_1`, `q8_K`) and integer/f64 types have no kernels
    /// for that in ggml, which would abort on the first pass.
    pub const fn is_weight_type(ty: GgmlType) -> bool {
        !matches!(
            ty,
            GgmlType::Q8_1
                | GgmlType::Q8_K
                | GgmlType::I8
                | GgmlType::I16
                | GgmlType::I32
                | GgmlType::I64
                | GgmlType::F64
        )
    }

    /// `None` when `eps` is a usable RMS-norm epsilon (finite, positive,
    /// below 1), else why not.
    pub fn check_rms_eps(eps: f64) -> Option<&'static str> {
        (!(eps.is_finite() && eps as f32 > 0.0 && eps < 1.0))
            .then_some("must be a finite number between 0 and 1 (exclusive)")
    }

    /// `None` when `theta` is a usable RoPE base (finite, above 1), else why not.
    pub fn check_rope_theta(theta: f64) -> Option<&'static str> {
        (!(theta.is_finite() && theta > 1.0 && theta <= f32::MAX as f64))
            .then_some("must be a finite number above 1")
    }
}

/// `general.architecture` of a plain Qwen3 file (a `--split` base), and of
/// Orthrus files in our earlier layout.
pub const ARCH_QWEN3: &str = "qwen3";
/// `general.architecture` of Orthrus files in the community layout (the
/// llama.cpp Orthrus fork's), which `orthrus-convert` writes.
pub const ARCH_ORTHRUS: &str = "orthrus";
/// `general.type` of a whole model or a `--split` base file.
pub const TYPE_MODEL: &str = "model";
/// `general.type` of a `--split` head file (diffusion view only).
pub const TYPE_HEAD: &str = "orthrus-head";

/// Where a file of one architecture keeps each setting: the one table both
/// the converter (writing) and the engine (reading) go through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    arch: &'static str,
}

impl Layout {
    /// Plain Qwen3, or Orthrus in our earlier layout.
    pub const QWEN3: Layout = Layout { arch: ARCH_QWEN3 };
    /// Orthrus in the community layout.
    pub const ORTHRUS: Layout = Layout { arch: ARCH_ORTHRUS };

    /// The layout of a file whose `general.architecture` is `arch`.
    pub fn of(arch: &str) -> Option<Layout> {
        [Layout::QWEN3, Layout::ORTHRUS]
            .into_iter()
            .find(|l| l.arch == arch)
    }

    pub const fn arch(self) -> &'static str {
        self.arch
    }

    /// A hyperparameter key: `suffix` (one of the [`keys`] suffixes) under the architecture.
    pub fn key(self, suffix: &str) -> String {
        format!("{}.{suffix}", self.arch)
    }

    /// The diffusion view's block size.
    pub fn block_size_key(self) -> String {
        match self.arch {
            ARCH_ORTHRUS => self.key(keys::DIFFUSION_BLOCK_SIZE),
            _ => keys::LEGACY_BLOCK_SIZE.to_string(),
        }
    }

    /// The diffusion view's mask token.
    pub fn mask_token_key(self) -> &'static str {
        match self.arch {
            ARCH_ORTHRUS => keys::MASK_ID,
            _ => keys::LEGACY_MASK_TOKEN_ID,
        }
    }
}

/// Token texts llama.cpp takes as ending generation when a file names no
/// list of its own (its vocabulary's end-of-generation rule, less the FIM
/// tokens: an Orthrus mask token may be one of those).
pub const EOG_TEXTS: [&str; 9] = [
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
];

/// What a tensor is, independent of its layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    TokenEmbd,
    Output,
    OutputNorm,
    AttnNorm,
    AttnQ,
    AttnK,
    AttnV,
    AttnOutput,
    AttnQNorm,
    AttnKNorm,
    FfnNorm,
    FfnGate,
    FfnUp,
    FfnDown,
    AttnQDiff,
    AttnKDiff,
    AttnVDiff,
    AttnOutputDiff,
    AttnQNormDiff,
    AttnKNormDiff,
}

impl Kind {
    /// Per-layer tensors of the AR view, in file order.
    pub const AR_LAYER: [Kind; 11] = [
        Kind::AttnNorm,
        Kind::AttnQ,
        Kind::AttnK,
        Kind::AttnV,
        Kind::AttnOutput,
        Kind::AttnQNorm,
        Kind::AttnKNorm,
        Kind::FfnNorm,
        Kind::FfnGate,
        Kind::FfnUp,
        Kind::FfnDown,
    ];
    /// Per-layer tensors of the diffusion view, in file order.
    pub const DIFF_LAYER: [Kind; 6] = [
        Kind::AttnQDiff,
        Kind::AttnKDiff,
        Kind::AttnVDiff,
        Kind::AttnOutputDiff,
        Kind::AttnQNormDiff,
        Kind::AttnKNormDiff,
    ];

    /// llama.cpp's name stem (`attn_q`, `token_embd`, ...).
    pub const fn stem(self) -> &'static str {
        match self {
            Kind::TokenEmbd => "token_embd",
            Kind::Output => "output",
            Kind::OutputNorm => "output_norm",
            Kind::AttnNorm => "attn_norm",
            Kind::AttnQ => "attn_q",
            Kind::AttnK => "attn_k",
            Kind::AttnV => "attn_v",
            Kind::AttnOutput => "attn_output",
            Kind::AttnQNorm => "attn_q_norm",
            Kind::AttnKNorm => "attn_k_norm",
            Kind::FfnNorm => "ffn_norm",
            Kind::FfnGate => "ffn_gate",
            Kind::FfnUp => "ffn_up",
            Kind::FfnDown => "ffn_down",
            Kind::AttnQDiff => "attn_q_diff",
            Kind::AttnKDiff => "attn_k_diff",
            Kind::AttnVDiff => "attn_v_diff",
            Kind::AttnOutputDiff => "attn_output_diff",
            Kind::AttnQNormDiff => "attn_q_norm_diff",
            Kind::AttnKNormDiff => "attn_k_norm_diff",
        }
    }

    pub const fn is_diffusion(self) -> bool {
        self.ar_twin().is_some()
    }

    /// The AR-view tensor a diffusion tensor stands in for.
    pub const fn ar_twin(self) -> Option<Kind> {
        match self {
            Kind::AttnQDiff => Some(Kind::AttnQ),
            Kind::AttnKDiff => Some(Kind::AttnK),
            Kind::AttnVDiff => Some(Kind::AttnV),
            Kind::AttnOutputDiff => Some(Kind::AttnOutput),
            Kind::AttnQNormDiff => Some(Kind::AttnQNorm),
            Kind::AttnKNormDiff => Some(Kind::AttnKNorm),
            _ => None,
        }
    }

    /// Norm weights are vectors, kept in f32 whatever the file type.
    pub const fn is_norm(self) -> bool {
        matches!(
            self,
            Kind::OutputNorm
                | Kind::AttnNorm
                | Kind::AttnQNorm
                | Kind::AttnKNorm
                | Kind::FfnNorm
                | Kind::AttnQNormDiff
                | Kind::AttnKNormDiff
        )
    }

    pub const fn is_per_layer(self) -> bool {
        !matches!(self, Kind::TokenEmbd | Kind::Output | Kind::OutputNorm)
    }
}

/// One tensor of a model: its kind and, for per-layer tensors, its layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorId {
    pub kind: Kind,
    pub layer: Option<u32>,
}

impl TensorId {
    pub const fn global(kind: Kind) -> TensorId {
        TensorId { kind, layer: None }
    }

    pub const fn layer(layer: u32, kind: Kind) -> TensorId {
        TensorId {
            kind,
            layer: Some(layer),
        }
    }

    /// The GGUF tensor name, e.g. `blk.3.attn_q_diff.weight`.
    pub fn gguf_name(self) -> String {
        match self.layer {
            Some(i) => format!("blk.{i}.{}.weight", self.kind.stem()),
            None => format!("{}.weight", self.kind.stem()),
        }
    }
}

/// Every tensor of a Qwen3 model with `n_layers` layers, in file order; the
/// diffusion view's tensors follow each layer's AR tensors when `diffusion`.
pub fn model_tensors(n_layers: u32, tied_embeddings: bool, diffusion: bool) -> Vec<TensorId> {
    let mut ids = vec![TensorId::global(Kind::TokenEmbd)];
    for layer in 0..n_layers {
        ids.extend(Kind::AR_LAYER.iter().map(|&k| TensorId::layer(layer, k)));
        if diffusion {
            ids.extend(Kind::DIFF_LAYER.iter().map(|&k| TensorId::layer(layer, k)));
        }
    }
    ids.push(TensorId::global(Kind::OutputNorm));
    if !tied_embeddings {
        ids.push(TensorId::global(Kind::Output));
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_llama_cpp() {
        assert_eq!(
            TensorId::global(Kind::TokenEmbd).gguf_name(),
            "token_embd.weight"
        );
        assert_eq!(
            TensorId::layer(3, Kind::AttnOutput).gguf_name(),
            "blk.3.attn_output.weight"
        );
        assert_eq!(
            TensorId::layer(0, Kind::AttnKNormDiff).gguf_name(),
            "blk.0.attn_k_norm_diff.weight"
        );
        assert_eq!(model_tensors(2, true, true).len(), 1 + 2 * 17 + 1);
        assert_eq!(model_tensors(2, false, false).len(), 1 + 2 * 11 + 2);
        for k in Kind::DIFF_LAYER {
            assert_eq!(k.stem(), format!("{}_diff", k.ar_twin().unwrap().stem()));
        }
    }

    #[test]
    fn layouts_name_their_keys() {
        let (ours, community) = (Layout::QWEN3, Layout::ORTHRUS);
        assert_eq!(Layout::of("qwen3"), Some(ours));
        assert_eq!(Layout::of("orthrus"), Some(community));
        assert_eq!(Layout::of("llama"), None);
        assert_eq!(ours.key(keys::BLOCK_COUNT), "qwen3.block_count");
        assert_eq!(
            community.key(keys::HEAD_COUNT_KV),
            "orthrus.attention.head_count_kv"
        );
        assert_eq!(ours.block_size_key(), "orthrus.block_size");
        assert_eq!(community.block_size_key(), "orthrus.diffusion.block_size");
        assert_eq!(ours.mask_token_key(), "orthrus.mask_token_id");
        assert_eq!(community.mask_token_key(), "tokenizer.ggml.mask_token_id");
    }
}
