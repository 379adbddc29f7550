//! The chat template stored in the GGUF, rendered with minijinja the way
//! transformers' `apply_chat_template` renders it.
//!
//! A template is a program from the model file, so it runs bounded: at most
//! [`RENDER_FUEL`] template instructions and [`MAX_RENDERED_BYTES`] of output.
//!
//! This file needs only minijinja and serde (no ggml, nothing else of the
//! crate), so the template fuzz target (kernels/fuzz) builds it as it is.

use minijinja::value::{Kwargs, Rest, StringInput, Value};
use minijinja::{context, Environment, Error, ErrorKind, State};
use serde::{Deserialize, Serialize};

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
    pub fn new(source: &str) -> Result<ChatTemplate, TemplateError> {
        let mut env = Environment::new();
        env.set_fuel(Some(RENDER_FUEL));
        // transformers renders with trim_blocks and lstrip_blocks.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(|state, value, method, args| {
            if let (Some(s), "format") = (value.as_str(), method) {
                check_format(s)?;
            }
            minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
        });
        // Filters minijinja would let size one allocation from a number in
        // the template (an abort when the allocator refuses it), checked
        // first and then run as they are.
        env.add_filter("indent", indent);
        env.add_filter("tojson", tojson);
        env.add_filter("format", format);
        env.add_filter("list", list);
        env.add_filter("join", join);
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
            .map_err(|e| TemplateError(e.to_string()))?;
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
    ) -> Result<String, TemplateError> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| TemplateError(e.to_string()))?;
        let mut out = Bounded {
            text: Vec::new(),
            max: self.max_output,
        };
        // minijinja can panic on some templates (2.24: reverse-slicing an
        // empty list, `[][::-1]`); that is this template's error, not the
        // caller's crash. Nothing outlives the render but `out`, which is
        // only read for its length or text after.
        let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tmpl.render_captured_to(
                context! {
                    messages => messages,
                    add_generation_prompt => add_generation_prompt,
                    enable_thinking => enable_thinking,
                },
                &mut out,
            )
        }))
        .map_err(|_| {
            TemplateError("the template engine failed (minijinja panicked) on this template".into())
        })?;
        match rendered {
            Ok(_) => String::from_utf8(out.text)
                .map_err(|_| TemplateError("the output is not UTF-8".into())),
            Err(_) if out.text.len() >= out.max => Err(TemplateError(format!(
                "the rendered prompt is over {} bytes",
                out.max
            ))),
            Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => Err(TemplateError(
                "the template ran too long (over its instruction budget)".into(),
            )),
            // One line: where in the template, not its listing.
            Err(e) => Err(TemplateError(e.to_string())),
        }
    }
}

/// The largest width, indent, number in a format string or item count the
/// guarded filters take: beyond it their result alone would pass the
/// output bound.
const MAX_FILTER_SIZE: usize = MAX_RENDERED_BYTES;

fn too_large(what: &str, n: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("{what} {n} is over the output bound of {MAX_FILTER_SIZE} bytes"),
    )
}

/// Refuses a format string holding a number (a width or precision) over
/// [`MAX_FILTER_SIZE`]: `'%99999999999s'|format(x)` and
/// `'{:>99999999999}'.format(x)` allocate it whole.
fn check_format(s: &str) -> Result<(), Error> {
    for run in s.split(|c: char| !c.is_ascii_digit()) {
        if run.len() > 8 || run.parse::<usize>().is_ok_and(|n| n > MAX_FILTER_SIZE) {
            return Err(too_large("a number in a format string,", run));
        }
    }
    Ok(())
}

fn indent(
    value: StringInput<'_>,
    width: Option<usize>,
    first: Option<bool>,
    blank: Option<bool>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let w = match width {
        Some(w) => w,
        None => kwargs.peek::<Option<usize>>("width")?.unwrap_or(4),
    };
    if w > MAX_FILTER_SIZE {
        return Err(too_large("indent width", w));
    }
    minijinja::filters::indent(value, width, first, blank, kwargs)
}

fn tojson(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let i = match &indent {
        Some(i) => Some(i.clone()),
        None => kwargs.peek::<Option<Value>>("indent")?,
    };
    if let Some(n) = i
        .and_then(|i| i.as_usize())
        .filter(|&n| n > MAX_FILTER_SIZE)
    {
        return Err(too_large("tojson indent", n));
    }
    minijinja::filters::tojson(value, indent, kwargs)
}

fn format(state: &State, format_str: &Value, args: Rest<Value>) -> Result<Value, Error> {
    if let Some(s) = format_str.as_str() {
        check_format(s)?;
    }
    minijinja::filters::format(state, format_str, args)
}

/// A sequence's length when it states one over [`MAX_FILTER_SIZE`] items
/// (`[x] * 10**12` states 10^12 and holds nothing until listed).
fn check_len(value: &Value) -> Result<(), Error> {
    match value.len() {
        Some(n) if n > MAX_FILTER_SIZE => Err(too_large("a sequence of", n)),
        _ => Ok(()),
    }
}

fn list(state: &State, value: Value) -> Result<Value, Error> {
    check_len(&value)?;
    minijinja::filters::list(state, value)
}

fn join(state: &State, value: &Value, joiner: Option<StringInput<'_>>) -> Result<Value, Error> {
    check_len(value)?;
    minijinja::filters::join(state, value, joiner)
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

/// Renders a conversation into prompt text: a [`ChatTemplate`] in this
/// process, or one in a child process (`template_process`).
pub trait RenderChat {
    fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        enable_thinking: bool,
    ) -> Result<String, TemplateError>;
}

impl RenderChat for ChatTemplate {
    fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        enable_thinking: bool,
    ) -> Result<String, TemplateError> {
        ChatTemplate::render(self, messages, add_generation_prompt, enable_thinking)
    }
}

/// Why a template cannot be compiled or rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "chat template: {}", self.0)
    }
}

impl std::error::Error for TemplateError {}
