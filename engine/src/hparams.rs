//! Model hyperparameters, read from GGUF metadata.

use orthrus_kernels::gguf::GgufFile;
use orthrus_kernels::schema::{keys, Layout, EOG_TEXTS, TYPE_HEAD};

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

/// The ids that end generation, and whether the file lists them itself
/// (`orthrus.eos_token_ids`, written by this project) rather than leaving
/// them to be derived as llama.cpp does from the tokens whose text is one
/// of [`EOG_TEXTS`]; the EOS/EOT/EOM ids always count.
pub(crate) fn eos_ids(file: &GgufFile) -> (Vec<u32>, bool) {
    let listed = file.get(keys::EOS_IDS).and_then(|v| v.as_array());
    let mut ids: Vec<u32> = listed
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_u64())
        .map(|v| v as u32)
        .collect();
    let mut add = |id: u32| {
        if !ids.contains(&id) {
            ids.push(id);
        }
    };
    // EOS, end of turn and end of message end generation whatever the list
    // says, as in llama.cpp.
    for key in [keys::EOS_ID, keys::EOT_ID, keys::EOM_ID] {
        if let Some(id) = file.get(key).and_then(|v| v.as_u64()) {
            add(id as u32);
        }
    }
    if listed.is_none() {
        let tokens = file.get(keys::TOKENS).and_then(|v| v.as_array());
        for (id, t) in tokens.into_iter().flatten().enumerate() {
            if t.as_str().is_some_and(|t| EOG_TEXTS.contains(&t)) {
                add(id as u32);
            }
        }
    }
    (ids, listed.is_some())
}

impl Hparams {
    /// Reads the hyperparameters of `file` (named `path` in errors), where
    /// its `general.architecture` says they are: `qwen3` (plain Qwen3, or
    /// Orthrus in our earlier layout) or `orthrus` (the community layout).
    pub fn read(file: &GgufFile, path: &str) -> Result<Hparams, EngineError> {
        let arch = file
            .get(keys::ARCHITECTURE)
            .and_then(|v| v.as_str())
            .unwrap_or("(none)");
        let layout = Layout::of(arch).ok_or_else(|| {
            EngineError::Model(format!(
                "{path}: architecture {arch:?} is neither Orthrus nor Qwen3 (expected {:?} or {:?})",
                Layout::ORTHRUS.arch(),
                Layout::QWEN3.arch()
            ))
        })?;
        let positive_key = |key: &str| -> Result<usize, EngineError> {
            match num(file, key, path)? {
                0 => Err(EngineError::Model(format!("{path}: key {key} is 0"))),
                n if n > 1 << 24 => Err(EngineError::Model(format!(
                    "{path}: key {key} = {n} is absurd"
                ))),
                n => Ok(n as usize),
            }
        };
        let positive = |suffix: &str| positive_key(&layout.key(suffix));
        let n_embd = positive(keys::EMBEDDING_LENGTH)?;
        let n_head = positive(keys::HEAD_COUNT)?;
        let n_head_kv = positive(keys::HEAD_COUNT_KV)?;
        let head_dim = match file.get(&layout.key(keys::KEY_LENGTH)) {
            Some(_) => positive(keys::KEY_LENGTH)?,
            None => n_embd / n_head,
        };
        if n_head % n_head_kv != 0 || head_dim % 2 != 0 {
            return Err(EngineError::Model(format!(
                "{path}: {n_head} heads cannot share {n_head_kv} KV heads, or head size {head_dim} is odd"
            )));
        }
        let (block_key, mask_key) = (layout.block_size_key(), layout.mask_token_key());
        let orthrus = match (file.get(&block_key), file.get(mask_key)) {
            (Some(_), Some(_)) => {
                let block_size = positive_key(&block_key)?;
                if block_size < 2 {
                    return Err(EngineError::Model(format!(
                        "{path}: key {block_key} is {block_size}; a block holds the last token and at least one mask"
                    )));
                }
                Some(OrthrusParams {
                    block_size,
                    mask_token: num(file, mask_key, path)? as u32,
                })
            }
            (None, None) if layout == Layout::ORTHRUS => {
                return Err(EngineError::Model(format!(
                    "{path}: architecture \"orthrus\" without {block_key} and {mask_key}"
                )))
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(EngineError::Model(format!(
                    "{path}: {block_key} and {mask_key} must come together"
                )))
            }
            (None, None) => None,
        };
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
            rms_eps: float(file, &layout.key(keys::RMS_EPS), path)?,
            rope_base: float(file, &layout.key(keys::ROPE_FREQ_BASE), path)?,
            context_length: positive(keys::CONTEXT_LENGTH)?,
            orthrus,
            eos_ids: eos_ids(file).0,
        })
    }
}
