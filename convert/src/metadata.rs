//! GGUF metadata of a converted file, in llama.cpp's keys: an Orthrus
//! model or head in the community `orthrus` layout (the llama.cpp Orthrus
//! fork's), a plain Qwen3 model or `--split` base as `qwen3`.

use orthrus_kernels::gguf::GgufValue;
use orthrus_kernels::schema::{self, keys, Layout};

use crate::hf::config::ModelConfig;
use crate::hf::tokenizer::TokenizerInfo;
use crate::recipe::FileType;

/// Which of the files `orthrus-convert` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileRole {
    /// Everything in one file: both views, or the AR view of a plain Qwen3.
    Whole,
    /// `--split`: the plain Qwen3 part, loadable by llama.cpp.
    Base,
    /// `--split`: the diffusion view alone, paired with a base at load time.
    Head,
}

pub fn build(
    cfg: &ModelConfig,
    tok: &TokenizerInfo,
    ft: FileType,
    name: &str,
    role: FileRole,
) -> Vec<(String, GgufValue)> {
    let mut kv: Vec<(String, GgufValue)> = Vec::new();
    let mut put = |k: &str, v: GgufValue| kv.push((k.to_string(), v));
    let u32v = |n: u64| GgufValue::U32(n as u32);

    // Whatever carries the diffusion view is an `orthrus` file; the base of
    // a split is plain Qwen3, which upstream llama.cpp loads.
    let diffusion = cfg.orthrus.is_some() && role != FileRole::Base;
    let layout = if diffusion {
        Layout::ORTHRUS
    } else {
        Layout::QWEN3
    };
    put(keys::ARCHITECTURE, GgufValue::String(layout.arch().into()));
    let ty = if role == FileRole::Head {
        schema::TYPE_HEAD
    } else {
        schema::TYPE_MODEL
    };
    put(keys::TYPE, GgufValue::String(ty.into()));
    put(keys::NAME, GgufValue::String(name.into()));
    put(keys::FILE_TYPE, GgufValue::U32(ft.llama_ftype()));
    if ft.is_quantized() {
        put(keys::QUANTIZATION_VERSION, GgufValue::U32(2));
    }

    let hp = |suffix: &str| layout.key(suffix);
    put(&hp(keys::CONTEXT_LENGTH), u32v(cfg.context_length));
    put(&hp(keys::EMBEDDING_LENGTH), u32v(cfg.hidden_size));
    put(&hp(keys::FEED_FORWARD_LENGTH), u32v(cfg.intermediate_size));
    put(&hp(keys::BLOCK_COUNT), u32v(cfg.num_layers));
    put(&hp(keys::HEAD_COUNT), u32v(cfg.num_heads));
    put(&hp(keys::HEAD_COUNT_KV), u32v(cfg.num_kv_heads));
    put(&hp(keys::KEY_LENGTH), u32v(cfg.head_dim));
    put(&hp(keys::VALUE_LENGTH), u32v(cfg.head_dim));
    put(&hp(keys::ROPE_FREQ_BASE), GgufValue::F32(cfg.rope_theta));
    put(&hp(keys::RMS_EPS), GgufValue::F32(cfg.rms_norm_eps));

    if role != FileRole::Head {
        put(keys::TOKENIZER_MODEL, GgufValue::String("gpt2".into()));
        put(keys::TOKENIZER_PRE, GgufValue::String("qwen2".into()));
        put(
            keys::TOKENS,
            GgufValue::string_array(tok.tokens.iter().cloned()),
        );
        put(
            keys::TOKEN_TYPE,
            GgufValue::i32_array(tok.token_types.iter().copied()),
        );
        put(
            keys::MERGES,
            GgufValue::string_array(tok.merges.iter().cloned()),
        );
        if let Some(id) = cfg.bos_token_id {
            put(keys::BOS_ID, GgufValue::U32(id));
        }
        if let Some(&id) = cfg.eos_token_ids.first() {
            put(keys::EOS_ID, GgufValue::U32(id));
        }
        if let Some(id) = cfg.pad_token_id {
            put(keys::PAD_ID, GgufValue::U32(id));
        }
        put(keys::ADD_BOS, GgufValue::Bool(tok.add_bos_token));
        if let Some(t) = &tok.chat_template {
            put(keys::CHAT_TEMPLATE, GgufValue::String(t.clone()));
        }
        put(keys::HF_JSON, GgufValue::String(tok.json_text.clone()));
    }

    if let (Some(o), true) = (&cfg.orthrus, diffusion) {
        put(&layout.block_size_key(), GgufValue::U32(o.block_size));
        put(layout.mask_token_key(), GgufValue::U32(o.mask_token_id));
        // Ours, beside llama.cpp's keys: generation_config.json's end ids,
        // where llama.cpp would guess them from token texts.
        put(
            keys::EOS_IDS,
            GgufValue::u32_array(cfg.eos_token_ids.iter().copied()),
        );
    }
    kv
}
