//! Model hyperparameters, read from GGUF metadata.

use orthrus_kernels::gguf::GgufFile;
use orthrus_kernels::schema::{keys, ARCH, TYPE_HEAD};

use crate::EngineError;

/// What the graph builder needs to know about a Qwen3 / Orthrus model.
#[derive(Clone, Debug, PartialEq)]
pub struct Hparams {
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    pub context_length: usize,
    /// The diffusion view's settings; `None` for a plain Qwen3 file.
    pub orthrus: Option<OrthrusParams>,
    /// Token ids that end generation (several when generation_config lists several).
    pub eos_ids: Vec<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrthrusParams {
    pub block_size: usize,
    pub mask_token: u32,
}

fn num(file: &GgufFile, key: &str, path: &str) -> Result<u64, EngineError> {
    file.get(key)
        .ok_or_else(|| EngineError::Model(format!("{path}: missing key {key}")))?
        .as_u64()
        .ok_or_else(|| EngineError::Model(format!("{path}: key {key} is not an unsigned integer")))
}

fn float(file: &GgufFile, key: &str, path: &str) -> Result<f32, EngineError> {
    file.get(key)
        .ok_or_else(|| EngineError::Model(format!("{path}: missing key {key}")))?
        .as_f64()
        .map(|v| v as f32)
        .ok_or_else(|| EngineError::Model(format!("{path}: key {key} is not a number")))
}

impl Hparams {
    /// Reads the hyperparameters of `file` (named `path` in errors). Refuses
    /// files that are not Qwen3-architecture models or Orthrus heads.
    pub fn read(file: &GgufFile, path: &str) -> Result<Hparams, EngineError> {
        let arch = file
            .get(keys::ARCHITECTURE)
            .and_then(|v| v.as_str())
            .unwrap_or("(none)");
        if arch != ARCH {
            return Err(EngineError::Model(format!(
                "{path}: architecture {arch:?} is neither Orthrus nor Qwen3 (expected {ARCH:?})"
            )));
        }
        let positive = |key: &str| -> Result<usize, EngineError> {
            match num(file, key, path)? {
                0 => Err(EngineError::Model(format!("{path}: key {key} is 0"))),
                n if n > 1 << 24 => Err(EngineError::Model(format!(
                    "{path}: key {key} = {n} is absurd"
                ))),
                n => Ok(n as usize),
            }
        };
        let n_embd = positive(keys::EMBEDDING_LENGTH)?;
        let n_head = positive(keys::HEAD_COUNT)?;
        let n_head_kv = positive(keys::HEAD_COUNT_KV)?;
        let head_dim = match file.get(keys::KEY_LENGTH) {
            Some(_) => positive(keys::KEY_LENGTH)?,
            None => n_embd / n_head,
        };
        if n_head % n_head_kv != 0 || head_dim % 2 != 0 {
            return Err(EngineError::Model(format!(
                "{path}: {n_head} heads cannot share {n_head_kv} KV heads, or head size {head_dim} is odd"
            )));
        }
        let orthrus = match (file.get(keys::BLOCK_SIZE), file.get(keys::MASK_TOKEN_ID)) {
            (Some(_), Some(_)) => Some(OrthrusParams {
                block_size: positive(keys::BLOCK_SIZE)?,
                mask_token: num(file, keys::MASK_TOKEN_ID, path)? as u32,
            }),
            _ => None,
        };
        let mut eos_ids: Vec<u32> = match file.get(keys::EOS_IDS).and_then(|v| v.as_array()) {
            Some(items) => items
                .iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as u32)
                .collect(),
            None => Vec::new(),
        };
        for key in [keys::EOS_ID, keys::EOT_ID, keys::EOM_ID] {
            if let Some(id) = file.get(key).and_then(|v| v.as_u64()) {
                if !eos_ids.contains(&(id as u32)) {
                    eos_ids.push(id as u32);
                }
            }
        }
        let n_vocab = if file.get(keys::TYPE).and_then(|v| v.as_str()) == Some(TYPE_HEAD) {
            0
        } else {
            let embd = file.tensor("token_embd.weight").ok_or_else(|| {
                EngineError::Model(format!("{path}: missing tensor token_embd.weight"))
            })?;
            embd.dims.get(1).copied().unwrap_or(0) as usize
        };
        Ok(Hparams {
            n_vocab,
            n_embd,
            n_layer: positive(keys::BLOCK_COUNT)?,
            n_head,
            n_head_kv,
            head_dim,
            n_ff: positive(keys::FEED_FORWARD_LENGTH)?,
            rms_eps: float(file, keys::RMS_EPS, path)?,
            rope_base: float(file, keys::ROPE_FREQ_BASE, path)?,
            context_length: positive(keys::CONTEXT_LENGTH)?,
            orthrus,
            eos_ids,
        })
    }
}
