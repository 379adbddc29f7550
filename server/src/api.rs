//! Request bodies (OpenAI's and llama-server's fields), their checks, and
//! response bodies, streamed or whole.

use bytes::Bytes;
use hyper::StatusCode;
use orthrus_engine::chat::Message;
use orthrus_engine::{GenerateParams, Mode, SamplingParams, Stats};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::worker::{FinishReason, ModelInfo, Outcome};

/// Stop strings a request may give at most.
pub const MAX_STOPS: usize = 16;

/// A request's sampling where it names none: llama-server's defaults.
pub const DEFAULT_SAMPLING: SamplingParams = SamplingParams {
    temperature: 0.8,
    top_k: 40,
    top_p: 0.95,
    min_p: 0.05,
    seed: 0,
};

/// Generation fields every generating endpoint takes.
#[derive(Deserialize, Default, Debug)]
pub struct GenFields {
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    /// llama-server's name; -1 means until the context is full.
    pub n_predict: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    /// Negative or absent: a random seed.
    pub seed: Option<i64>,
    pub stop: Option<Stop>,
    /// `auto` (the default), `orthrus` or `ar`.
    pub mode: Option<String>,
    /// Tokens an orthrus step drafts (at most, in auto mode); llama-server
    /// calls it `speculative.n_max`.
    pub draft_max: Option<i64>,
    #[serde(rename = "speculative.n_max")]
    pub speculative_n_max: Option<i64>,
    pub ignore_eos: Option<bool>,
    pub n: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Debug)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

#[derive(Deserialize, Debug)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Option<Vec<ChatMessage>>,
    pub chat_template_kwargs: Option<TemplateKwargs>,
    #[serde(flatten)]
    pub gen: GenFields,
}

#[derive(Deserialize, Debug)]
pub struct ChatMessage {
    pub role: String,
    pub content: Option<Content>,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize, Debug)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Deserialize, Debug)]
pub struct TemplateKwargs {
    pub enable_thinking: Option<bool>,
}

/// `POST /v1/completions` and `POST /completion`.
#[derive(Deserialize, Debug)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: Option<Prompt>,
    #[serde(flatten)]
    pub gen: GenFields,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
    Texts(Vec<String>),
}

#[derive(Deserialize, Debug)]
pub struct TokenizeRequest {
    pub content: String,
    #[serde(default)]
    pub with_pieces: bool,
}

#[derive(Deserialize, Debug)]
pub struct DetokenizeRequest {
    pub tokens: Vec<u32>,
}

/// A checked generation request.
pub struct Settings {
    pub params: GenerateParams,
    pub stops: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
}

impl ChatRequest {
    /// The conversation, checked: at least one message, known roles, text content.
    pub fn messages(&self) -> Result<Vec<Message>, ApiError> {
        let msgs = self
            .messages
            .as_ref()
            .ok_or_else(|| ApiError::invalid("missing_messages", "messages is required"))?;
        if msgs.is_empty() {
            return Err(ApiError::invalid(
                "empty_messages",
                "messages must not be empty",
            ));
        }
        msgs.iter()
            .enumerate()
            .map(|(i, m)| {
                let role = match m.role.as_str() {
                    "system" | "developer" => "system",
                    "user" => "user",
                    "assistant" => "assistant",
                    other => {
                        return Err(ApiError::invalid(
                            "invalid_role",
                            format!("messages[{i}].role {other:?}: use system, user or assistant"),
                        ))
                    }
                };
                let content = match &m.content {
                    None => String::new(),
                    Some(Content::Text(t)) => t.clone(),
                    Some(Content::Parts(parts)) => {
                        let mut text = String::new();
                        for p in parts {
                            match (&*p.kind, &p.text) {
                                ("text", Some(t)) => text.push_str(t),
                                (kind, _) => {
                                    return Err(ApiError::invalid(
                                        "unsupported_content",
                                        format!("messages[{i}]: content of type {kind:?} is not supported (text only)"),
                                    ))
                                }
                            }
                        }
                        text
                    }
                };
                Ok(Message::new(role, &content))
            })
            .collect()
    }
}

fn seed(s: Option<i64>) -> u64 {
    match s {
        Some(s) if s >= 0 => s as u64,
        _ => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

impl GenFields {
    /// Checks every field against the model and a prompt of `prompt_len` tokens.
    pub fn check(&self, prompt_len: usize, info: &ModelInfo) -> Result<Settings, ApiError> {
        let n_ctx = info.n_ctx;
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid(
                "unsupported_n",
                "only n = 1 is supported",
            ));
        }
        if prompt_len == 0 {
            return Err(ApiError::invalid("empty_prompt", "the prompt is empty"));
        }
        if prompt_len >= n_ctx {
            return Err(ApiError::invalid(
                "context_length_exceeded",
                format!("the prompt is {prompt_len} tokens but the context holds {n_ctx} (start the server with a larger -c)"),
            ));
        }
        let requested = self
            .max_completion_tokens
            .or(self.max_tokens)
            .or(self.n_predict.filter(|&v| v != -1));
        let max_tokens = match requested {
            None => n_ctx - prompt_len,
            Some(v) if v < 1 => {
                return Err(ApiError::invalid(
                    "invalid_max_tokens",
                    format!("max_tokens must be at least 1 (got {v})"),
                ))
            }
            Some(v) if v as u64 > n_ctx as u64 => {
                return Err(ApiError::invalid(
                    "invalid_max_tokens",
                    format!("max_tokens {v} is beyond the context size {n_ctx}"),
                ))
            }
            Some(v) => v as usize,
        };
        let d = DEFAULT_SAMPLING;
        let temperature = self.temperature.unwrap_or(d.temperature as f64);
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(ApiError::invalid(
                "invalid_temperature",
                "temperature must be >= 0",
            ));
        }
        let top_p = self.top_p.unwrap_or(d.top_p as f64);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::invalid(
                "invalid_top_p",
                "top_p must be in (0, 1]",
            ));
        }
        let top_k = self.top_k.unwrap_or(d.top_k as i64);
        if top_k < 0 {
            return Err(ApiError::invalid(
                "invalid_top_k",
                "top_k must be >= 0 (0 disables it)",
            ));
        }
        let min_p = self.min_p.unwrap_or(d.min_p as f64);
        if !(0.0..=1.0).contains(&min_p) {
            return Err(ApiError::invalid(
                "invalid_min_p",
                "min_p must be in [0, 1]",
            ));
        }
        let stops = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stops.len() > MAX_STOPS {
            return Err(ApiError::invalid(
                "invalid_stop",
                format!("at most {MAX_STOPS} stop strings"),
            ));
        }
        let mode = match self.mode.as_deref() {
            None if info.is_orthrus => Mode::Auto,
            None => Mode::Ar,
            Some(m) => m
                .parse::<Mode>()
                .map_err(|e| ApiError::invalid("invalid_mode", e))?,
        };
        let most = info
            .hparams
            .orthrus
            .map_or(0, |o| o.block_size.saturating_sub(1));
        let draft_max = match self.draft_max.or(self.speculative_n_max) {
            None => None,
            Some(n) if (0..=most as i64).contains(&n) => Some(n as usize),
            Some(n) => {
                return Err(ApiError::invalid(
                    "invalid_draft_max",
                    format!("draft_max (speculative.n_max) {n} is out of range: 0 to {most}, this model's block size - 1"),
                ))
            }
        };
        if mode == Mode::Orthrus && !info.is_orthrus {
            return Err(ApiError::invalid(
                "invalid_mode",
                "this model has no diffusion view (start the server with --head); use mode ar",
            ));
        }
        Ok(Settings {
            params: GenerateParams {
                mode,
                max_tokens,
                ignore_eos: self.ignore_eos.unwrap_or(false),
                sampling: SamplingParams {
                    temperature: temperature as f32,
                    top_k: top_k as usize,
                    top_p: top_p as f32,
                    min_p: min_p as f32,
                    seed: seed(self.seed),
                },
                draft_max,
            },
            stops,
            stream: self.stream.unwrap_or(false),
            include_usage: self
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`
    Chat,
    /// `POST /v1/completions`
    Completions,
    /// `POST /completion` (llama-server's own)
    Native,
}

/// Builds the answer to one generation request, whole or as SSE chunks.
pub struct Reply {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub include_usage: bool,
}

fn sse(v: &Value) -> String {
    format!("data: {v}\n\n")
}

fn finish_reason(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        FinishReason::Eos | FinishReason::Word(_) => "stop",
    }
}

/// OpenAI's `usage`; drafted tokens as `completion_tokens_details`' accepted
/// and rejected prediction tokens, and `speculative`, an extension: the
/// decoding mode, steps, drafts and acceptance by draft position.
fn usage(o: &Outcome) -> Value {
    let s = &o.stats;
    let (p, c) = (s.prompt_tokens, o.tokens.len());
    json!({
        "prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
        "completion_tokens_details": {
            "accepted_prediction_tokens": s.accepted_tokens,
            "rejected_prediction_tokens": s.draft_tokens - s.accepted_tokens,
        },
        "speculative": {
            "mode": o.mode.name(),
            "steps": s.steps,
            "draft_steps": s.draft_steps,
            "draft_tokens": s.draft_tokens,
            "accepted_tokens": s.accepted_tokens,
            "draft_tokens_per_pos": s.draft_tokens_per_pos,
            "accepted_tokens_per_pos": s.accepted_tokens_per_pos,
            "acceptance_per_pos": acceptance_per_pos(s),
        },
    })
}

/// Per draft position, the share of its drafted tokens that were accepted,
/// up to the last position drafted.
fn acceptance_per_pos(s: &Stats) -> Vec<f64> {
    s.accepted_tokens_per_pos
        .iter()
        .zip(&s.draft_tokens_per_pos)
        .take_while(|(_, &d)| d > 0)
        .map(|(&a, &d)| a as f64 / d as f64)
        .collect()
}

/// llama-server's `timings` (with its `draft_n`, `draft_n_accepted`), plus
/// Orthrus' steps, accepted tokens per step and acceptance by draft position.
pub fn timings(o: &Outcome) -> Value {
    let s = &o.stats;
    let per = |n: usize, secs: f64| if n > 0 { 1000.0 * secs / n as f64 } else { 0.0 };
    let rate = |n: usize, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    json!({
        "prompt_n": s.prompt_tokens,
        "prompt_ms": 1000.0 * s.prompt_seconds,
        "prompt_per_token_ms": per(s.prompt_tokens, s.prompt_seconds),
        "prompt_per_second": rate(s.prompt_tokens, s.prompt_seconds),
        "predicted_n": s.generated_tokens,
        "predicted_ms": 1000.0 * s.generation_seconds,
        "predicted_per_token_ms": per(s.generated_tokens, s.generation_seconds),
        "predicted_per_second": rate(s.generated_tokens, s.generation_seconds),
        "mode": o.mode.name(),
        "steps": s.steps,
        "accepted_per_step": s.mean_accepted,
        "accepted_histogram": s.histogram,
        "draft_steps": s.draft_steps,
        "draft_n": s.draft_tokens,
        "draft_n_accepted": s.accepted_tokens,
        "draft_n_per_pos": s.draft_tokens_per_pos,
        "draft_n_accepted_per_pos": s.accepted_tokens_per_pos,
        "draft_acceptance_per_pos": acceptance_per_pos(s),
    })
}

impl Reply {
    fn chunk(&self, choice: Value) -> Value {
        let object = match self.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            _ => "text_completion",
        };
        json!({ "id": self.id, "object": object, "created": self.created, "model": self.model, "choices": [choice] })
    }

    /// What a stream opens with, if anything.
    pub fn stream_start(&self) -> Option<Bytes> {
        (self.endpoint == Endpoint::Chat).then(|| {
            let c = json!({ "index": 0, "delta": { "role": "assistant", "content": "" }, "finish_reason": null });
            sse(&self.chunk(c)).into()
        })
    }

    pub fn stream_text(&self, text: &str) -> Bytes {
        let v = match self.endpoint {
            Endpoint::Chat => self
                .chunk(json!({ "index": 0, "delta": { "content": text }, "finish_reason": null })),
            Endpoint::Completions => self.chunk(
                json!({ "index": 0, "text": text, "logprobs": null, "finish_reason": null }),
            ),
            Endpoint::Native => json!({ "content": text, "stop": false }),
        };
        sse(&v).into()
    }

    pub fn stream_end(&self, o: &Outcome) -> Bytes {
        let reason = finish_reason(&o.finish);
        let mut out = match self.endpoint {
            Endpoint::Chat => {
                sse(&self.chunk(json!({ "index": 0, "delta": {}, "finish_reason": reason })))
            }
            Endpoint::Completions => sse(&self.chunk(
                json!({ "index": 0, "text": "", "logprobs": null, "finish_reason": reason }),
            )),
            Endpoint::Native => {
                let mut v = self.native(o);
                v["content"] = json!("");
                return sse(&v).into();
            }
        };
        if self.include_usage {
            let mut v = self.chunk(Value::Null);
            v["choices"] = json!([]);
            v["usage"] = usage(o);
            out.push_str(&sse(&v));
        }
        out.push_str("data: [DONE]\n\n");
        out.into()
    }

    /// A stream's last event when the generation failed.
    pub fn stream_error(&self, e: &ApiError) -> Bytes {
        sse(&e.body()).into()
    }

    /// The whole answer of a request that is not streamed.
    pub fn full(&self, o: &Outcome) -> Value {
        let reason = finish_reason(&o.finish);
        match self.endpoint {
            Endpoint::Chat => json!({
                "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{ "index": 0, "message": { "role": "assistant", "content": o.text }, "logprobs": null, "finish_reason": reason }],
                "usage": usage(o), "timings": timings(o),
            }),
            Endpoint::Completions => json!({
                "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [{ "index": 0, "text": o.text, "logprobs": null, "finish_reason": reason }],
                "usage": usage(o), "timings": timings(o),
            }),
            Endpoint::Native => self.native(o),
        }
    }

    fn native(&self, o: &Outcome) -> Value {
        let (stop_type, word) = match &o.finish {
            FinishReason::Eos => ("eos", ""),
            FinishReason::Length => ("limit", ""),
            FinishReason::Word(w) => ("word", w.as_str()),
        };
        json!({
            "content": o.text, "tokens": o.tokens, "id_slot": 0, "stop": true, "model": self.model,
            "tokens_predicted": o.tokens.len(), "tokens_evaluated": o.stats.prompt_tokens,
            "stop_type": stop_type, "stopping_word": word, "truncated": false,
            "timings": timings(o),
        })
    }
}

/// The error for a generation that failed in the engine.
pub fn engine_failure(message: String) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "generation_failed",
        message,
    )
}
