//! Text <-> token ids through Hugging Face `tokenizers`, built either from
//! the tokenizer JSON our converter stores (`tokenizer.huggingface.json`) or,
//! in files llama.cpp's converter writes, from the `tokenizer.ggml.*` arrays.

use orthrus_kernels::gguf::{GgufFile, GgufValue};
use orthrus_kernels::schema::keys;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::EngineError;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The BOS id when the file sets `tokenizer.ggml.add_bos_token`.
    bos_prefix: Option<u32>,
}

/// llama.cpp's `tokenizer.ggml.token_type` values that matter here.
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;
const TYPE_UNUSED: i32 = 5;

/// The split regex of each `tokenizer.ggml.pre` we know, as the model's
/// Hugging Face `tokenizer.json` writes it (llama.cpp's names). Qwen2's
/// normalizer is NFC, and it keeps all merges.
fn pre_tokenizer_regex(pre: &str) -> Option<&'static str> {
    match pre {
        "qwen2" => Some(
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ),
        _ => None,
    }
}

/// A byte-level BPE tokenizer as llama.cpp's converter stores it in a GGUF:
/// `tokenizer.ggml.{model,pre,tokens,token_type,merges}`.
#[derive(Clone, Debug, PartialEq)]
pub struct GgmlVocab {
    /// `tokenizer.ggml.model`; only `gpt2` (byte-level BPE) is built.
    pub model: String,
    /// `tokenizer.ggml.pre`, the pre-tokenizer's name.
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub token_types: Vec<i32>,
    /// "left right" pairs, highest priority first.
    pub merges: Vec<String>,
}

fn tok_err(msg: String) -> EngineError {
    EngineError::Tokenizer(msg)
}

fn strings(v: &GgufValue, key: &str) -> Result<Vec<String>, EngineError> {
    v.as_array()
        .and_then(|items| {
            items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect()
        })
        .ok_or_else(|| tok_err(format!("{key} is not an array of strings")))
}

impl GgmlVocab {
    /// The `tokenizer.ggml.*` arrays of `file`; `None` when it has no token list.
    pub fn read(file: &GgufFile) -> Result<Option<GgmlVocab>, EngineError> {
        let Some(tokens) = file.get(keys::TOKENS) else {
            return Ok(None);
        };
        let tokens = strings(tokens, keys::TOKENS)?;
        let text = |key: &str| -> Result<Option<String>, EngineError> {
            file.get(key)
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| tok_err(format!("{key} is not a string")))
                })
                .transpose()
        };
        let model = text(keys::TOKENIZER_MODEL)?
            .ok_or_else(|| tok_err(format!("{} is missing", keys::TOKENIZER_MODEL)))?;
        let token_types = match file.get(keys::TOKEN_TYPE) {
            Some(v) => v
                .as_array()
                .and_then(|items| {
                    items
                        .iter()
                        .map(|i| i.as_i64().and_then(|t| i32::try_from(t).ok()))
                        .collect()
                })
                .ok_or_else(|| {
                    tok_err(format!("{} is not an array of integers", keys::TOKEN_TYPE))
                })?,
            None => return Err(tok_err(format!("{} is missing", keys::TOKEN_TYPE))),
        };
        let merges = match file.get(keys::MERGES) {
            Some(v) => strings(v, keys::MERGES)?,
            None => Vec::new(),
        };
        Ok(Some(GgmlVocab {
            model,
            pre: text(keys::TOKENIZER_PRE)?,
            tokens,
            token_types,
            merges,
        }))
    }
}

impl Tokenizer {
    pub fn from_json(json: &str) -> Result<Tokenizer, EngineError> {
        let inner = tokenizers::Tokenizer::from_bytes(json.as_bytes())
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        Ok(Tokenizer {
            inner,
            bos_prefix: None,
        })
    }

    /// The tokenizer `tokenizers` would load from the model's own
    /// `tokenizer.json`, rebuilt from llama.cpp's arrays: byte-level BPE over
    /// every token but the unused ones, the pre-tokenizer `pre` names, and
    /// control (special) and user-defined tokens matched whole in the text.
    pub fn from_ggml(v: &GgmlVocab) -> Result<Tokenizer, EngineError> {
        if v.model != "gpt2" {
            return Err(tok_err(format!(
                "{} = {:?} is not supported (only \"gpt2\", byte-level BPE)",
                keys::TOKENIZER_MODEL,
                v.model
            )));
        }
        let pre = v.pre.as_deref().unwrap_or("default");
        let regex = pre_tokenizer_regex(pre).ok_or_else(|| {
            tok_err(format!(
                "{} = {pre:?} is not a pre-tokenizer this build knows (known: \"qwen2\")",
                keys::TOKENIZER_PRE
            ))
        })?;
        if v.token_types.len() != v.tokens.len() {
            return Err(tok_err(format!(
                "{} has {} entries for {} tokens",
                keys::TOKEN_TYPE,
                v.token_types.len(),
                v.tokens.len()
            )));
        }
        if u32::try_from(v.tokens.len()).is_err() {
            return Err(tok_err(format!(
                "{} has {} tokens",
                keys::TOKENS,
                v.tokens.len()
            )));
        }
        let mut vocab = tokenizers::models::bpe::Vocab::default();
        let mut added = Vec::new();
        for (id, (tok, &ty)) in v.tokens.iter().zip(&v.token_types).enumerate() {
            if ty == TYPE_UNUSED {
                continue;
            }
            // A repeated string keeps its first id, as a vocabulary map must.
            vocab.entry(tok.clone()).or_insert(id as u32);
            if ty == TYPE_CONTROL || ty == TYPE_USER_DEFINED {
                let t = AddedToken::from(tok.clone(), ty == TYPE_CONTROL).normalized(false);
                added.push((id as u32, t));
            }
        }
        let merges = v
            .merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| tok_err(format!("merge {m:?} is not two tokens")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| tok_err(format!("the BPE from {}: {e}", keys::TOKENS)))?;
        let split = Split::new(
            SplitPattern::Regex(regex.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| tok_err(e.to_string()))?;
        let byte_level = ByteLevel::new(false, false, false);
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner
            .with_normalizer(Some(NFC))
            .with_pre_tokenizer(Some(Sequence::new(vec![split.into(), byte_level.into()])))
            .with_decoder(Some(byte_level));
        for (id, t) in added {
            let content = t.content.clone();
            if t.special {
                inner.add_special_tokens(&[t]);
            } else {
                inner.add_tokens(&[t]);
            }
            if inner.token_to_id(&content) != Some(id) {
                return Err(tok_err(format!(
                    "token {content:?} (id {id}) appears twice in {}",
                    keys::TOKENS
                )));
            }
        }
        Ok(Tokenizer {
            inner,
            bos_prefix: None,
        })
    }

    /// The same tokenizer, putting `bos` before a prompt ([`Self::encode_prompt`]):
    /// the BOS id of a file whose `tokenizer.ggml.add_bos_token` is true.
    pub fn with_bos_prefix(self, bos: Option<u32>) -> Tokenizer {
        Tokenizer {
            bos_prefix: bos,
            ..self
        }
    }

    /// The ids of a prompt: [`Self::encode_long`], after BOS when the file asks
    /// for it and the text does not already start with it.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        let ids = self.encode_long(text)?;
        Ok(match self.bos_prefix {
            Some(bos) if ids.first() != Some(&bos) => std::iter::once(bos).chain(ids).collect(),
            _ => ids,
        })
    }

    /// Token ids of `text`; special tokens written in the text (`<|im_start|>`) are recognised.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String, EngineError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))
    }
}

/// Turns a stream of token ids into text pieces, holding back bytes that do
/// not yet form whole UTF-8 characters. Each push decodes only the last few
/// ids (from the previous piece's start), so a long generation stays linear.
pub struct StreamDecoder<'t> {
    tok: &'t Tokenizer,
    ids: Vec<u32>,
    /// Start of the ids decoded for context (their text is already out).
    prefix: usize,
    /// Ids before this are out as text.
    read: usize,
}

impl<'t> StreamDecoder<'t> {
    pub fn new(tok: &'t Tokenizer) -> StreamDecoder<'t> {
        StreamDecoder {
            tok,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }

    /// The new text after `id`, possibly empty.
    pub fn push(&mut self, id: u32) -> Result<String, EngineError> {
        self.ids.push(id);
        // Decoding from an earlier id keeps what a decoder does at a word
        // start (a leading space) out of the piece.
        let before = self.tok.decode(&self.ids[self.prefix..self.read])?;
        let now = self.tok.decode(&self.ids[self.prefix..])?;
        if now.len() <= before.len() || now.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let piece = match now.get(before.len()..) {
            Some(p) if now.starts_with(&before) => p.to_string(),
            _ => return Ok(String::new()),
        };
        self.prefix = self.read;
        self.read = self.ids.len();
        Ok(piece)
    }
}

/// Where the first stop string starts in `text` at or after byte `from` (a
/// char boundary), if any, and how much of `text` can be shown: all of it
/// but a tail that is the start of a stop string. Both are at most `text.len()`.
pub fn stop_scan(text: &str, from: usize, stops: &[String]) -> (Option<usize>, usize) {
    let hit = stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text[from..].find(s.as_str()).map(|i| from + i))
        .min();
    if let Some(h) = hit {
        return (Some(h), h);
    }
    let held = stops
        .iter()
        .flat_map(|s| s.char_indices().skip(1).map(move |(i, _)| &s[..i]))
        .filter(|prefix| text.ends_with(prefix))
        .map(str::len)
        .max()
        .unwrap_or(0);
    (None, text.len() - held)
}

/// Generated tokens as text for a reader: end-of-sequence tokens left out,
/// output cut before the first stop string, and text that may still become
/// a stop string held back until it is known not to.
pub struct TextStream<'t> {
    decoder: StreamDecoder<'t>,
    stops: Vec<String>,
    hidden: Vec<u32>,
    text: String,
    shown: usize,
    /// The stop string met, once one is.
    stop_word: Option<String>,
}

impl<'t> TextStream<'t> {
    /// `hidden`: ids whose text is never shown (the model's EOS ids).
    pub fn new(tok: &'t Tokenizer, stops: Vec<String>, hidden: Vec<u32>) -> TextStream<'t> {
        TextStream {
            decoder: StreamDecoder::new(tok),
            stops,
            hidden,
            text: String::new(),
            shown: 0,
            stop_word: None,
        }
    }

    /// Adds token `id`; returns the text that can be shown now.
    pub fn push(&mut self, id: u32) -> Result<&str, EngineError> {
        if self.stop_word.is_some() || self.hidden.contains(&id) {
            return Ok("");
        }
        let piece = self.decoder.push(id)?;
        self.text.push_str(&piece);
        // No stop string can start in text already shown, so only the rest is searched.
        let (hit, safe) = stop_scan(&self.text, self.shown, &self.stops);
        if let Some(end) = hit {
            let word = self
                .stops
                .iter()
                .find(|s| !s.is_empty() && self.text[end..].starts_with(s.as_str()));
            self.stop_word = word.cloned();
            self.text.truncate(end);
        }
        let from = std::mem::replace(&mut self.shown, safe);
        Ok(&self.text[from..safe])
    }

    /// Whether a stop string was met (generation should end).
    pub fn stopped(&self) -> bool {
        self.stop_word.is_some()
    }

    /// The stop string that ended the text, if one did.
    pub fn stop_word(&self) -> Option<&str> {
        self.stop_word.as_deref()
    }

    /// The text held back at the end of generation; after this, `text()` is all shown.
    pub fn finish(&mut self) -> &str {
        let from = std::mem::replace(&mut self.shown, self.text.len());
        &self.text[from..]
    }

    /// All the text so far (including any held back).
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// Special tokens and plain text (chat message content is text).
impl Tokenizer {
    /// The strings of the special tokens (`<|im_start|>`, `<|endoftext|>`),
    /// longest first, so that a scan takes the longest match.
    pub fn special_tokens(&self) -> Vec<String> {
        let mut s: Vec<String> = self
            .inner
            .get_added_tokens_decoder()
            .into_values()
            .filter(|t| t.special && !t.content.is_empty())
            .map(|t| t.content)
            .collect();
        s.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        s.dedup();
        s
    }

    /// A copy that tokenizes special-token strings in its input as plain
    /// text (other added tokens, like `<think>`, are still matched).
    pub fn text_only(&self) -> Tokenizer {
        let mut inner = self.inner.clone();
        inner.set_encode_special_tokens(true);
        Tokenizer {
            inner,
            bos_prefix: self.bos_prefix,
        }
    }
}

/// Long text is tokenized in pieces of about this many bytes.
pub const ENCODE_PIECE: usize = 64 << 10;

/// A piece with no split point longer than this is refused.
pub const MAX_UNSPLIT: usize = 1 << 20;

impl Tokenizer {
    /// Token ids of `text`, as [`encode`](Self::encode) gives them, with
    /// memory bounded by the piece size rather than the text's: `tokenizers`
    /// holds hundreds of bytes per input byte while it works (a 4 MB text
    /// takes over 1 GB). Text is cut only before a space that follows a
    /// letter and precedes one, where Qwen's pre-tokenizer always splits, so
    /// the ids are the same; a stretch of over [`MAX_UNSPLIT`] bytes with no
    /// such point is refused.
    pub fn encode_long(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        let mut ids = Vec::new();
        let mut rest = text;
        while rest.len() > ENCODE_PIECE {
            let Some(cut) = split_point(rest, ENCODE_PIECE) else {
                return Err(EngineError::Tokenizer(format!(
                    "the text has a stretch of over {MAX_UNSPLIT} bytes without a word break"
                )));
            };
            ids.extend(self.encode(&rest[..cut])?);
            rest = &rest[cut..];
        }
        ids.extend(self.encode(rest)?);
        Ok(ids)
    }
}

/// The first byte index at or after `from` (and within [`MAX_UNSPLIT`])
/// that is a space between two letters, if `text` has one.
fn split_point(text: &str, from: usize) -> Option<usize> {
    let mut start = from;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let end = text.len().min(from + MAX_UNSPLIT);
    let mut prev = text[..start].chars().next_back()?;
    let mut chars = text[start..].char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if start + i > end {
            return None;
        }
        if c == ' ' && prev.is_alphabetic() {
            if let Some(&(_, next)) = chars.peek() {
                if next.is_alphabetic() {
                    return Some(start + i);
                }
            }
        }
        prev = c;
    }
    None
}
