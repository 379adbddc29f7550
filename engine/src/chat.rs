//! The chat template stored in the GGUF, rendered with minijinja the way
//! transformers' `apply_chat_template` renders it.
//!
//! A template is a program from the model file, so it runs bounded: at most
//! [`RENDER_FUEL`] template instructions and [`MAX_RENDERED_BYTES`] of output.
//! Message content is text: special-token strings in it (`<|im_start|>`) are
//! tokenized as plain text by [`encode_chat`] unless the caller asks for the
//! raw behaviour, so a user cannot open a turn of another role.

use minijinja::{context, Environment};
use serde::{Deserialize, Serialize};

use crate::tokenizer::Tokenizer;
use crate::EngineError;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Template instructions one rendering may run. Qwen3's template takes a
/// few hundred per message, so a conversation that fits any context fits
/// this; a template that loops for ever stops within about a second.
pub const RENDER_FUEL: u64 = 20_000_000;

/// The longest rendered prompt, in bytes (well beyond any context's tokens).
pub const MAX_RENDERED_BYTES: usize = 32 << 20;

pub struct ChatTemplate {
    env: Environment<'static>,
    max_output: usize,
}

impl ChatTemplate {
    pub fn new(source: &str) -> Result<ChatTemplate, EngineError> {
        let mut env = Environment::new();
        env.set_fuel(Some(RENDER_FUEL));
        // transformers renders with trim_blocks and lstrip_blocks.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| EngineError::Template(e.to_string()))?;
        Ok(ChatTemplate {
            env,
            max_output: MAX_RENDERED_BYTES,
        })
    }

    /// The same template with other bounds (fuel: template instructions;
    /// output: bytes), for callers and tests that need tighter ones.
    pub fn with_limits(mut self, fuel: u64, max_output: usize) -> ChatTemplate {
        self.env.set_fuel(Some(fuel));
        self.max_output = max_output;
        self
    }

    /// The prompt text for `messages`, ending with the assistant's turn
    /// opener when `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        enable_thinking: bool,
    ) -> Result<String, EngineError> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| EngineError::Template(e.to_string()))?;
        let mut out = Bounded {
            text: Vec::new(),
            max: self.max_output,
        };
        let rendered = tmpl.render_captured_to(
            context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                enable_thinking => enable_thinking,
            },
            &mut out,
        );
        match rendered {
            Ok(_) => String::from_utf8(out.text)
                .map_err(|_| EngineError::Template("the output is not UTF-8".into())),
            Err(_) if out.text.len() >= out.max => Err(EngineError::Template(format!(
                "the rendered prompt is over {} bytes",
                out.max
            ))),
            Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => Err(EngineError::Template(
                "the template ran too long (over its instruction budget)".into(),
            )),
            Err(e) => Err(EngineError::Template(format!("{e:#}"))),
        }
    }
}

/// A writer that refuses to grow beyond `max` bytes, which stops the render.
struct Bounded {
    text: Vec<u8>,
    max: usize,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > self.max {
            self.text.resize(self.max, 0);
            return Err(std::io::Error::other("output limit"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Private-use characters that bracket a placeholder in rendered text.
const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

/// The token ids of the chat prompt for `messages`. With `text_tok` (the
/// model's tokenizer from [`Tokenizer::text_only`]), special-token strings
/// inside message content are tokenized as text; the template's own special
/// tokens stay special. Without it, the prompt is rendered and tokenized
/// whole, as the template's text and the content alike.
pub fn encode_chat(
    template: &ChatTemplate,
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
