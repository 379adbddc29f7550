//! Hugging Face tensor names and shapes for each GGUF tensor.

use orthrus_kernels::schema::{Kind, TensorId};

use crate::hf::config::ModelConfig;

/// The checkpoint's name for a tensor.
pub fn hf_name(id: TensorId) -> String {
    let suffix = match id.kind {
        Kind::TokenEmbd => return "model.embed_tokens.weight".into(),
        Kind::Output => return "lm_head.weight".into(),
        Kind::OutputNorm => return "model.norm.weight".into(),
        Kind::AttnNorm => "input_layernorm",
        Kind::AttnQ => "self_attn.q_proj",
        Kind::AttnK => "self_attn.k_proj",
        Kind::AttnV => "self_attn.v_proj",
        Kind::AttnOutput => "self_attn.o_proj",
        Kind::AttnQNorm => "self_attn.q_norm",
        Kind::AttnKNorm => "self_attn.k_norm",
        Kind::FfnNorm => "post_attention_layernorm",
        Kind::FfnGate => "mlp.gate_proj",
        Kind::FfnUp => "mlp.up_proj",
        Kind::FfnDown => "mlp.down_proj",
        Kind::AttnQDiff => "self_attn.q_proj_diff",
        Kind::AttnKDiff => "self_attn.k_proj_diff",
        Kind::AttnVDiff => "self_attn.v_proj_diff",
        Kind::AttnOutputDiff => "self_attn.o_proj_diff",
        Kind::AttnQNormDiff => "self_attn.q_norm_diff",
        Kind::AttnKNormDiff => "self_attn.k_norm_diff",
    };
    format!("model.layers.{}.{suffix}.weight", id.layer.unwrap_or(0))
}

/// The shape the checkpoint must store, row-major `[out, in]`.
pub fn hf_shape(kind: Kind, cfg: &ModelConfig) -> Vec<u64> {
    let (h, hd) = (cfg.hidden_size, cfg.head_dim);
    let q = cfg.num_heads * hd;
    let kv = cfg.num_kv_heads * hd;
    let kind = kind.ar_twin().unwrap_or(kind);
    match kind {
        Kind::TokenEmbd | Kind::Output => vec![cfg.vocab_size, h],
        Kind::OutputNorm | Kind::AttnNorm | Kind::FfnNorm => vec![h],
        Kind::AttnQNorm | Kind::AttnKNorm => vec![hd],
        Kind::AttnQ => vec![q, h],
        Kind::AttnK | Kind::AttnV => vec![kv, h],
        Kind::AttnOutput => vec![h, q],
        Kind::FfnGate | Kind::FfnUp => vec![cfg.intermediate_size, h],
        Kind::FfnDown => vec![h, cfg.intermediate_size],
        _ => unreachable!("diffusion kinds map to their AR twin above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_names() {
        assert_eq!(
            hf_name(TensorId::layer(2, Kind::AttnOutputDiff)),
            "model.layers.2.self_attn.o_proj_diff.weight"
        );
        assert_eq!(
            hf_name(TensorId::layer(0, Kind::FfnNorm)),
            "model.layers.0.post_attention_layernorm.weight"
        );
        assert_eq!(hf_name(TensorId::global(Kind::Output)), "lm_head.weight");
    }
}
