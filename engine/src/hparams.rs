//! Model hyperparameters, read from GGUF metadata.

use orthrus_kernels::gguf::{GgufFile, GgufValue};
use orthrus_kernels::schema::{keys, limits, Layout, EOG_TEXTS, TYPE_HEAD};

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

/// A float key, refused (with `check`'s reason) unless usable.
fn float(
    file: &GgufFile,
    key: &str,
    path: &str,
    check: fn(f64) -> Option<&'static str>,
) -> Result<f32, EngineError> {
    let v = file
        .get(key)
        .ok_or_else(|| EngineError::Model(format!("{path}: missing key {key}")))?
        .as_f64()
        .ok_or_else(|| EngineError::Model(format!("{path}: key {key} is not a number")))?;
    match check(v) {
        Some(why) => Err(EngineError::Model(format!("{path}: key {key} = {v} {why}"))),
        None => Ok(v as f32),
    }
}

/// A token id key: a u32, as ids are everywhere else (a u64 is not wrapped).
fn token_id(file: &GgufFile, key: &str, path: &str) -> Result<u32, EngineError> {
    let v = num(file, key, path)?;
    u32::try_from(v)
        .map_err(|_| EngineError::Model(format!("{path}: key {key} = {v} is not a token id")))
}

/// The ids that end generation, and whether the file lists them itself
/// (`orthrus.eos_token_ids`, written by this project) rather than leaving
/// them to be derived as llama.cpp does from the tokens whose text is one
/// of [`EOG_TEXTS`]; the EOS/EOT/EOM ids always count. An id that is not
/// a token of an `n_vocab`-row embedding (0: unknown, as in a head file) is
/// refused, naming the key and `path`.
pub(crate) fn eos_ids(
    file: &GgufFile,
    path: &str,
    n_vocab: usize,
) -> Result<(Vec<u32>, bool), EngineError> {
    let id = |key: &str, v: &GgufValue| -> Result<u32, EngineError> {
        v.as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .filter(|&v| n_vocab == 0 || (v as usize) < n_vocab)
            .ok_or_else(|| {
                EngineError::Model(format!(
                    "{path}: key {key} holds {v}, which is not a token id{}",
                    match n_vocab {
                        0 => String::new(),
                        n => format!(" of this {n}-token vocabulary"),
                    }
                ))
            })
    };
    let listed = file.get(keys::EOS_IDS);
    let mut ids: Vec<u32> = Vec::new();
    if let Some(list) = listed {
        let items = list.as_array().ok_or_else(|| {
            EngineError::Model(format!("{path}: key {} is not an array", keys::EOS_IDS))
        })?;
        for v in items.iter() {
            ids.push(id(keys::EOS_IDS, v)?);
        }
    }
    let mut add = |id: u32| {
        if !ids.contains(&id) {
            ids.push(id);
        }
    };
    // EOS, end of turn and end of message end generation whatever the list
    // says, as in llama.cpp.
    for key in [keys::EOS_ID, keys::EOT_ID, keys::EOM_ID] {
        if let Some(v) = file.get(key) {
            add(id(key, v)?);
        }
    }
    if listed.is_none() {
        let tokens = file.get(keys::TOKENS).and_then(|v| v.as_array());
        for (id, t) in tokens.iter().flat_map(|t| t.iter()).enumerate() {
            if t.as_str().is_some_and(|t| EOG_TEXTS.contains(&t)) {
                add(id as u32);
            }
        }
    }
    Ok((ids, listed.is_some()))
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
        let bounded_key = |key: &str, max: u64| -> Result<usize, EngineError> {
            match num(file, key, path)? {
                0 => Err(EngineError::Model(format!("{path}: key {key} is 0"))),
                n if n > max => Err(EngineError::Model(format!(
                    "{path}: key {key} = {n} is beyond {max}"
                ))),
                n => Ok(n as usize),
            }
        };
        let positive_key = |key: &str| bounded_key(key, limits::MAX_DIM);
        let positive = |suffix: &str| positive_key(&layout.key(suffix));
        let n_embd = positive(keys::EMBEDDING_LENGTH)?;
        let n_head = positive(keys::HEAD_COUNT)?;
        let n_head_kv = positive(keys::HEAD_COUNT_KV)?;
        let head_dim = match file.get(&layout.key(keys::KEY_LENGTH)) {
            Some(_) => positive(keys::KEY_LENGTH)?,
            None => n_embd / n_head,
        };
        if let Some(v) = file.get(&layout.key(keys::VALUE_LENGTH)) {
            if v.as_u64() != Some(head_dim as u64) {
                return Err(EngineError::Model(format!(
                    "{path}: key {} = {v} differs from the key size {head_dim}; this engine needs them equal",
                    layout.key(keys::VALUE_LENGTH)
                )));
            }
        }
        if n_head % n_head_kv != 0 || head_dim == 0 || head_dim % 2 != 0 {
            return Err(EngineError::Model(format!(
                "{path}: {n_head} heads cannot share {n_head_kv} KV heads, or head size {head_dim} is 0 or odd"
            )));
        }
        let (block_key, mask_key) = (layout.block_size_key(), layout.mask_token_key());
        let orthrus = match (file.get(&block_key), file.get(mask_key)) {
            (Some(_), Some(_)) => {
                let block_size = bounded_key(&block_key, limits::MAX_BLOCK_SIZE)?;
                if (block_size as u64) < limits::MIN_BLOCK_SIZE {
                    return Err(EngineError::Model(format!(
                        "{path}: key {block_key} is {block_size}; a block holds the last token and at least one mask"
                    )));
                }
                Some(OrthrusParams {
                    block_size,
                    mask_token: token_id(file, mask_key, path)?,
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
            n_layer: bounded_key(&layout.key(keys::BLOCK_COUNT), limits::MAX_LAYERS)?,
            n_head,
            n_head_kv,
            head_dim,
            n_ff: positive(keys::FEED_FORWARD_LENGTH)?,
            rms_eps: float(
                file,
                &layout.key(keys::RMS_EPS),
                path,
                limits::check_rms_eps,
            )?,
            rope_base: float(
                file,
                &layout.key(keys::ROPE_FREQ_BASE),
                path,
                limits::check_rope_theta,
            )?,
            context_length: bounded_key(&layout.key(keys::CONTEXT_LENGTH), limits::MAX_CONTEXT)?,
            orthrus,
            eos_ids: eos_ids(file, path, n_vocab)?.0,
        })
    }
}
