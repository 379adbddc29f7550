//! Reading a Hugging Face checkpoint directory: `config.json`,
//! `generation_config.json`, safetensors weights and the tokenizer files.

pub mod config;
pub mod safetensors;
pub mod tokenizer;

use std::path::Path;

use crate::error::{ConvertError, Result};

/// Reads and parses a JSON file, naming the file in every error.
pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = crate::files::read_text(path, crate::files::MAX_SIDE_FILE)?;
    serde_json::from_str(&text)
        .map_err(|e| ConvertError::bad_file(path, format!("invalid JSON: {e}")))
}
