//! The chat template stored in the GGUF, rendered with minijinja the way
//! transformers' `apply_chat_template` renders it.
//!
//! A template is a program from the model file, so it runs bounded
//! ([`crate::template`]), and the binaries run it in a child process
//! ([`crate::template_process`]). Message content is text: special-token
//! strings in it (`<|im_start|>`) are tokenized as plain text by
//! [`encode_chat`] unless the caller asks for the raw behaviour, so a user
//! cannot open a turn of another role.

pub use crate::template::{ChatTemplate, Message, RenderChat, MAX_RENDERED_BYTES, RENDER_FUEL};
pub use crate::template_process::TemplateProcess;
use crate::tokenizer::Tokenizer;
use crate::EngineError;

/// Private-use characters that bracket a placeholder in rendered text.
const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

/// The token ids of the chat prompt for `messages`. With `text_tok` (the
/// model's tokenizer from [`Tokenizer::text_only`]), special-token strings
/// inside message content are tokenized as text; the template's own special
/// tokens stay special. Without it, the prompt is rendered and tokenized
/// whole, as the template's text and the content alike.
pub fn encode_chat(
    template: &dyn RenderChat,
    tok: &Tokenizer,
    text_tok: Option<&Tokenizer>,
    messages: &[Message],
    add_generation_prompt: bool,
    enable_thinking: bool,
) -> Result<Vec<u32>, EngineError> {
    let mut guarded: Vec<String> = Vec::new();
    let messages = match text_tok {
        Some(_) => {
            let mut specials = tok.special_tokens();
            // The placeholder brackets themselves, so content that has them
            // comes back as it was.
            specials.extend([OPEN.to_string(), CLOSE.to_string()]);
            messages
                .iter()
                .map(|m| Message {
                    role: m.role.clone(),
                    content: guard_specials(&m.content, &specials, &mut guarded),
                })
                .collect()
        }
        None => messages.to_vec(),
    };
    let text = template.render(&messages, add_generation_prompt, enable_thinking)?;
    let (Some(text_tok), false) = (text_tok, guarded.is_empty()) else {
        return tok.encode_long(&text);
    };
    let mut ids = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len_utf8()..];
        let placeholder = after.find(CLOSE).and_then(|end| {
            let i: usize = after[..end].parse().ok()?;
            Some((guarded.get(i)?, end))
        });
        match placeholder {
            Some((original, end)) => {
                ids.extend(tok.encode_long(&rest[..start])?);
                ids.extend(text_tok.encode(original)?);
                rest = &after[end + CLOSE.len_utf8()..];
            }
            // A bracket the template cut apart: text, as it is.
            None => {
                ids.extend(tok.encode_long(&rest[..start + OPEN.len_utf8()])?);
                rest = after;
            }
        }
    }
    ids.extend(tok.encode_long(rest)?);
    Ok(ids)
}

/// `content` with each occurrence of a string of `specials` (longest
/// first) replaced by a numbered placeholder; the strings go to `guarded`.
fn guard_specials(content: &str, specials: &[String], guarded: &mut Vec<String>) -> String {
    let mut out = String::with_capacity(content.len());
    let firsts: Vec<char> = specials.iter().filter_map(|s| s.chars().next()).collect();
    let mut rest = content;
    'scan: while !rest.is_empty() {
        for (i, c) in rest.char_indices() {
            if !firsts.contains(&c) {
                continue;
            }
            let here = &rest[i..];
            if let Some(s) = specials.iter().find(|s| here.starts_with(s.as_str())) {
                out.push_str(&rest[..i]);
                out.push(OPEN);
                out.push_str(&guarded.len().to_string());
                out.push(CLOSE);
                guarded.push(s.clone());
                rest = &here[s.len()..];
                continue 'scan;
            }
        }
        out.push_str(rest);
        break;
    }
    out
}
