//! Text <-> token ids, with the Hugging Face tokenizer stored in the GGUF
//! (`tokenizer.huggingface.json`), so encoding matches `tokenizers` exactly.

use crate::EngineError;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    pub fn from_json(json: &str) -> Result<Tokenizer, EngineError> {
        let inner = tokenizers::Tokenizer::from_bytes(json.as_bytes())
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        Ok(Tokenizer { inner })
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
        Tokenizer { inner }
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
