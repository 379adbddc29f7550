//! `config.json` and `generation_config.json` of a Qwen3 or Orthrus checkpoint.

use std::path::Path;

use serde_json::Value;

use orthrus_kernels::schema::limits;

use super::read_json;
use crate::error::{ConvertError, Result};

/// The Orthrus additions to a Qwen3 config.
#[derive(Clone, Debug, PartialEq)]
pub struct OrthrusParams {
    pub block_size: u32,
    pub mask_token_id: u32,
}

/// The hyperparameters the converter and engine need, checked for sense.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub vocab_size: u64,
    pub hidden_size: u64,
    pub intermediate_size: u64,
    pub num_layers: u64,
    pub num_heads: u64,
    pub num_kv_heads: u64,
    pub head_dim: u64,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub context_length: u64,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
    /// Every id that ends generation; from generation_config.json when it
    /// lists them, else config.json. May be empty.
    pub eos_token_ids: Vec<u32>,
    /// `Some` for Orthrus checkpoints, `None` for plain Qwen3.
    pub orthrus: Option<OrthrusParams>,
}

struct Keys<'a> {
    path: &'a Path,
    json: &'a Value,
}

impl Keys<'_> {
    fn err(&self, msg: String) -> ConvertError {
        ConvertError::bad_file(self.path, msg)
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    fn u64(&self, key: &str) -> Result<u64> {
        let v = self
            .get(key)
            .ok_or_else(|| self.err(format!("missing key `{key}`")))?;
        v.as_u64()
            .ok_or_else(|| self.err(format!("`{key}` must be a non-negative integer, found {v}")))
    }

    fn positive(&self, key: &str) -> Result<u64> {
        self.bounded(key, limits::MAX_DIM)
    }

    /// A positive integer at most `max` (so it fits the u32 of its GGUF key).
    fn bounded(&self, key: &str, max: u64) -> Result<u64> {
        match self.u64(key)? {
            0 => Err(self.err(format!("`{key}` must be positive, found 0"))),
            n if n > max => Err(self.err(format!("`{key}` is {n}, beyond {max}"))),
            n => Ok(n),
        }
    }

    /// A float key that `check` accepts.
    fn checked_f64(
        &self,
        key: &str,
        v: f64,
        check: fn(f64) -> Option<&'static str>,
    ) -> Result<f64> {
        match check(v) {
            Some(why) => Err(self.err(format!("`{key}` is {v}; it {why}"))),
            None => Ok(v),
        }
    }

    fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        self.get(key)
            .map(|v| {
                as_u32(v).ok_or_else(|| self.err(format!("`{key}` must be a token id, found {v}")))
            })
            .transpose()
    }

    fn f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| self.err(format!("`{key}` must be a number, found {v}")))
            })
            .transpose()
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(format!("`{key}` must be true or false, found {v}"))),
        }
    }
}

fn as_u32(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// Token ids given as one id or a list of ids.
fn id_list(v: &Value) -> Option<Vec<u32>> {
    match v {
        Value::Array(items) => items.iter().map(as_u32).collect(),
        other => as_u32(other).map(|id| vec![id]),
    }
}

impl ModelConfig {
    /// Reads `config.json` and, when present, `generation_config.json` from `dir`.
    pub fn load(dir: &Path) -> Result<ModelConfig> {
        let path = dir.join("config.json");
        let json = read_json(&path)?;
        let gen_path = dir.join("generation_config.json");
        let gen = if gen_path.exists() {
            Some(read_json(&gen_path)?)
        } else {
            None
        };
        ModelConfig::from_json(&path, &json, gen.as_ref().map(|g| (gen_path.as_path(), g)))
    }

    pub fn from_json(
        path: &Path,
        json: &Value,
        gen: Option<(&Path, &Value)>,
    ) -> Result<ModelConfig> {
        let k = Keys { path, json };
        let model_type = k.get("model_type").and_then(Value::as_str).unwrap_or("");
        let is_orthrus = match model_type {
            "orthrus" => true,
            "qwen3" => false,
            other => {
                return Err(k.err(format!(
                    "model_type is {other:?}; this converter supports \"orthrus\" and \"qwen3\""
                )))
            }
        };
        if k.bool_or("attention_bias", false)? {
            return Err(k.err("attention_bias is true; Qwen3 has no attention bias".into()));
        }
        let hidden_size = k.positive("hidden_size")?;
        let num_heads = k.positive("num_attention_heads")?;
        let num_kv_heads = k.positive("num_key_value_heads")?;
        // Qwen3 states head_dim outright (128, not hidden/heads); older configs omit it.
        let head_dim =
            match k.get("head_dim") {
                Some(_) => k.positive("head_dim")?,
                None if hidden_size % num_heads == 0 => hidden_size / num_heads,
                None => return Err(k.err(
                    "missing `head_dim` and hidden_size is not a multiple of num_attention_heads"
                        .into(),
                )),
            };
        if num_heads % num_kv_heads != 0 {
            return Err(k.err(format!(
                "num_attention_heads ({num_heads}) must be a multiple of num_key_value_heads ({num_kv_heads})"
            )));
        }
        if head_dim % 2 != 0 {
            return Err(k.err(format!("head_dim must be even for RoPE, found {head_dim}")));
        }
        let rope_theta = match json
            .get("rope_parameters")
            .and_then(|r| r.get("rope_theta"))
        {
            Some(v) => v.as_f64().ok_or_else(|| {
                k.err(format!(
                    "`rope_parameters.rope_theta` must be a number, found {v}"
                ))
            })?,
            None => k.f64("rope_theta")?.ok_or_else(|| {
                k.err("missing rope theta (`rope_parameters.rope_theta` or `rope_theta`)".into())
            })?,
        };
        let rope_theta = k.checked_f64("rope_theta", rope_theta, limits::check_rope_theta)?;
        let vocab_size = k.positive("vocab_size")?;
        let orthrus = if is_orthrus {
            let block_size = k.u64("block_size")?;
            if !(limits::MIN_BLOCK_SIZE..=limits::MAX_BLOCK_SIZE).contains(&block_size) {
                return Err(k.err(format!(
                    "block_size must be between {} and {}, found {block_size}",
                    limits::MIN_BLOCK_SIZE,
                    limits::MAX_BLOCK_SIZE
                )));
            }
            let mask_token_id = k.u64("mask_token_id")?;
            if mask_token_id >= vocab_size {
                return Err(k.err(format!(
                    "mask_token_id {mask_token_id} is outside the embedding (vocab_size {vocab_size})"
                )));
            }
            Some(OrthrusParams {
                block_size: block_size as u32,
                mask_token_id: mask_token_id as u32,
            })
        } else {
            None
        };

        let config_eos = match k.get("eos_token_id") {
            None => Vec::new(),
            Some(v) => id_list(v).ok_or_else(|| {
                k.err(format!(
                    "`eos_token_id` must be a token id or a list of ids, found {v}"
                ))
            })?,
        };
        let eos_token_ids = match gen.and_then(|(p, g)| {
            g.get("eos_token_id")
                .filter(|v| !v.is_null())
                .map(|v| (p, v))
        }) {
            Some((p, v)) => id_list(v).ok_or_else(|| {
                ConvertError::bad_file(
                    p,
                    format!("`eos_token_id` must be a token id or a list of ids, found {v}"),
                )
            })?,
            None => config_eos,
        };
        let cfg = ModelConfig {
            vocab_size,
            hidden_size,
            intermediate_size: k.positive("intermediate_size")?,
            num_layers: k.bounded("num_hidden_layers", limits::MAX_LAYERS)?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: k.checked_f64(
                "rms_norm_eps",
                k.f64("rms_norm_eps")?.unwrap_or(1e-6),
                limits::check_rms_eps,
            )? as f32,
            rope_theta: rope_theta as f32,
            context_length: k.bounded("max_position_embeddings", limits::MAX_CONTEXT)?,
            tie_word_embeddings: k.bool_or("tie_word_embeddings", false)?,
            bos_token_id: k.opt_u32("bos_token_id")?,
            pad_token_id: k.opt_u32("pad_token_id")?,
            eos_token_ids,
            orthrus,
        };
        for (what, id) in cfg
            .bos_token_id
            .iter()
            .map(|&i| ("bos_token_id", i))
            .chain(cfg.pad_token_id.iter().map(|&i| ("pad_token_id", i)))
            .chain(cfg.eos_token_ids.iter().map(|&i| ("eos_token_id", i)))
        {
            if u64::from(id) >= vocab_size {
                return Err(k.err(format!(
                    "{what} {id} is outside the vocabulary (vocab_size {vocab_size})"
                )));
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "model_type": "orthrus", "vocab_size": 1000, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
            "rms_norm_eps": 1e-6, "rope_parameters": {"rope_theta": 1e6}, "max_position_embeddings": 4096,
            "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2, "block_size": 8, "mask_token_id": 999
        })
    }

    fn parse(v: &Value) -> Result<ModelConfig> {
        ModelConfig::from_json(Path::new("config.json"), v, None)
    }

    #[test]
    fn reads_both_rope_forms_and_explicit_head_dim() {
        let cfg = parse(&base()).unwrap();
        assert_eq!(
            (cfg.head_dim, cfg.rope_theta, cfg.eos_token_ids.clone()),
            (16, 1e6, vec![2])
        );
        let mut old = base();
        old.as_object_mut().unwrap().remove("rope_parameters");
        old["rope_theta"] = json!(5e5);
        assert_eq!(parse(&old).unwrap().rope_theta, 5e5);
    }

    #[test]
    fn generation_config_eos_list_wins() {
        let gen = json!({"eos_token_id": [2, 3]});
        let cfg =
            ModelConfig::from_json(Path::new("c"), &base(), Some((Path::new("g"), &gen))).unwrap();
        assert_eq!(cfg.eos_token_ids, vec![2, 3]);
    }

    #[test]
    fn refuses_bad_configs_with_the_key_named() {
        let cases: [(&str, Value, &str); 18] = [
            ("rms_norm_eps", json!(-1e-6), "`rms_norm_eps` is -0.000001"),
            ("rms_norm_eps", json!(0.0), "`rms_norm_eps` is 0"),
            ("rms_norm_eps", json!(1e-60), "between 0 and 1"),
            ("rms_norm_eps", json!(1e300), "`rms_norm_eps`"),
            (
                "rope_parameters",
                json!({"rope_theta": 0.0}),
                "`rope_theta` is 0",
            ),
            ("rope_parameters", json!({"rope_theta": -5}), "above 1"),
            ("rope_parameters", json!({"rope_theta": 1e300}), "above 1"),
            (
                "max_position_embeddings",
                json!(1u64 << 33),
                "`max_position_embeddings` is 8589934592, beyond",
            ),
            (
                "vocab_size",
                json!(1u64 << 40),
                "`vocab_size` is 1099511627776",
            ),
            (
                "num_hidden_layers",
                json!(1 << 20),
                "`num_hidden_layers` is",
            ),
            ("intermediate_size", json!(1u64 << 32), "beyond"),
            ("block_size", json!(1u64 << 32), "block_size must be"),
            ("model_type", json!("llama"), "model_type"),
            (
                "mask_token_id",
                json!(1000),
                "mask_token_id 1000 is outside",
            ),
            (
                "num_key_value_heads",
                json!(3),
                "multiple of num_key_value_heads",
            ),
            ("hidden_size", json!("big"), "`hidden_size` must be"),
            ("block_size", json!(1), "block_size must be"),
            ("eos_token_id", json!(5000), "eos_token_id 5000"),
        ];
        for (key, value, expect) in cases {
            let mut cfg = base();
            cfg[key] = value;
            let err = parse(&cfg).unwrap_err().to_string();
            assert!(err.contains(expect), "{key}: {err}");
        }
        let mut missing = base();
        missing.as_object_mut().unwrap().remove("vocab_size");
        assert!(parse(&missing)
            .unwrap_err()
            .to_string()
            .contains("missing key `vocab_size`"));
    }

    #[test]
    fn plain_qwen3_has_no_orthrus_params() {
        let mut cfg = base();
        cfg["model_type"] = json!("qwen3");
        assert_eq!(parse(&cfg).unwrap().orthrus, None);
    }
}
