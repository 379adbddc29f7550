//! The tokenizer as llama.cpp stores it in GGUF (`tokenizer.ggml.*`), built
//! from `tokenizer.json` and `tokenizer_config.json`.

use std::path::Path;

use serde_json::Value;

use super::read_json;
use crate::error::{ConvertError, Result};

/// llama.cpp's token types (`enum llama_token_type`).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
}

#[derive(Debug)]
pub struct TokenizerInfo {
    /// One entry per embedding row; ids the tokenizer does not use are `[PAD{id}]`.
    pub tokens: Vec<String>,
    pub token_types: Vec<i32>,
    /// BPE merges in llama.cpp's `"left right"` form.
    pub merges: Vec<String>,
    /// `tokenizer.json` byte for byte, for engines that run the HF tokenizer.
    pub json_text: String,
    pub chat_template: Option<String>,
    pub add_bos_token: bool,
}

/// Added tokens that are not flagged special but act as control tokens,
/// as llama.cpp's converter judges them (`<|fim_prefix|>` and the like).
fn looks_special(token: &str) -> bool {
    (token.starts_with("<|") && token.ends_with("|>"))
        || (token.starts_with("<｜") && token.ends_with("｜>"))
        || (token.starts_with("<unused") && token.ends_with('>'))
        || matches!(token, "<pad>" | "<mask>")
}

impl TokenizerInfo {
    /// Reads the tokenizer of `dir` for an embedding of `vocab_size` rows.
    pub fn load(dir: &Path, vocab_size: u64) -> Result<TokenizerInfo> {
        let path = dir.join("tokenizer.json");
        let json_text = crate::files::read_text(&path, crate::files::MAX_TOKENIZER_FILE)?;
        let json: Value = serde_json::from_str(&json_text)
            .map_err(|e| ConvertError::bad_file(&path, format!("invalid JSON: {e}")))?;
        let bad = |msg: String| ConvertError::bad_file(&path, msg);
        let model = json
            .get("model")
            .ok_or_else(|| bad("missing `model`".into()))?;
        if model.get("type").and_then(Value::as_str) != Some("BPE") {
            return Err(bad(
                "only BPE tokenizers (like Qwen3's) are supported".into()
            ));
        }
        let n = usize::try_from(vocab_size)
            .map_err(|_| bad(format!("vocab_size {vocab_size} is too large")))?;
        let mut tokens: Vec<Option<String>> = vec![None; n];
        let mut types = vec![token_type::UNUSED; n];
        let mut place = |id: u64, text: &str, ty: i32| -> Result<()> {
            let slot = tokens.get_mut(id as usize).filter(|_| id < vocab_size).ok_or_else(|| {
                bad(format!("token {text:?} has id {id}, outside the embedding (vocab_size {vocab_size})"))
            })?;
            *slot = Some(text.to_string());
            types[id as usize] = ty;
            Ok(())
        };
        let vocab = model
            .get("vocab")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("missing `model.vocab`".into()))?;
        for (text, id) in vocab {
            let id = id
                .as_u64()
                .ok_or_else(|| bad(format!("vocab id of {text:?} is not an integer")))?;
            place(id, text, token_type::NORMAL)?;
        }
        for added in json
            .get("added_tokens")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let id = added.get("id").and_then(Value::as_u64);
            let text = added.get("content").and_then(Value::as_str);
            let (Some(id), Some(text)) = (id, text) else {
                return Err(bad(format!("added token without id or content: {added}")));
            };
            let special = added
                .get("special")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let ty = if special || looks_special(text) {
                token_type::CONTROL
            } else {
                token_type::USER_DEFINED
            };
            place(id, text, ty)?;
        }
        let tokens = tokens
            .into_iter()
            .enumerate()
            .map(|(id, t)| t.unwrap_or_else(|| format!("[PAD{id}]")))
            .collect();
        let merges = read_merges(model).map_err(bad)?;

        let config_path = dir.join("tokenizer_config.json");
        let (chat_template, add_bos_token) = if config_path.exists() {
            let cfg = read_json(&config_path)?;
            (
                chat_template(&cfg).map_err(|m| ConvertError::bad_file(&config_path, m))?,
                cfg.get("add_bos_token")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            )
        } else {
            (None, false)
        };
        Ok(TokenizerInfo {
            tokens,
            token_types: types,
            merges,
            json_text,
            chat_template,
            add_bos_token,
        })
    }
}

/// Merges come as `"a b"` strings in older files and `["a", "b"]` pairs in newer ones.
fn read_merges(model: &Value) -> Result<Vec<String>, String> {
    let Some(list) = model.get("merges").and_then(Value::as_array) else {
        return Err("missing `model.merges`".into());
    };
    list.iter()
        .map(|m| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(pair) => match (
                pair.first().and_then(Value::as_str),
                pair.get(1).and_then(Value::as_str),
                pair.len(),
            ) {
                (Some(a), Some(b), 2) if !a.contains(' ') && !b.contains(' ') => {
                    Ok(format!("{a} {b}"))
                }
                _ => Err(format!("merge {m} is not a pair of space-free strings")),
            },
            other => Err(format!("merge {other} is neither a string nor a pair")),
        })
        .collect()
}

/// `chat_template` is a string, or a list of named templates of which we take "default".
fn chat_template(cfg: &Value) -> Result<Option<String>, String> {
    match cfg.get("chat_template") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(named)) => Ok(named
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template").and_then(Value::as_str))
            .map(str::to_string)),
        Some(other) => Err(format!("chat_template must be a string, found {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_lookalikes() {
        assert!(looks_special("<|fim_prefix|>"));
        assert!(!looks_special("<think>"));
        assert!(!looks_special("<|x"));
    }

    #[test]
    fn both_merge_forms() {
        let m = serde_json::json!({"merges": ["a b", ["c", "d"]]});
        assert_eq!(read_merges(&m).unwrap(), vec!["a b", "c d"]);
        let bad = serde_json::json!({"merges": [["a b", "c"]]});
        assert!(read_merges(&bad).is_err());
    }
}
