//! Any template source and message text given to the chat template renderer
//! (engine/src/template.rs, built here as it is: it needs no ggml) must give
//! `Ok` or `Err` within its bounds: never a panic, a hang past its fuel or
//! output beyond its limit (libFuzzer's -rss_limit_mb, -malloc_limit_mb and
//! -timeout catch runaway memory and time).
//!
//! Input: the template source, a 0 byte, then the message content.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../../engine/src/template.rs"]
#[allow(dead_code)]
mod template;

use template::{ChatTemplate, Message};

/// Tighter than the engine's bounds, so each run is short.
const FUEL: u64 = 200_000;
const MAX_OUTPUT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    // libfuzzer-sys's panic hook aborts even on a panic that is caught;
    // ChatTemplate::render catches minijinja's own panics by design, so
    // this hook only prints the first few, on one line each (a backtrace
    // per caught panic slows the run). A panic that escapes render still
    // aborts (libfuzzer-sys checks each run) and is reported.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        static SHOWN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        std::panic::set_hook(Box::new(|info| {
            if SHOWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 3 {
                eprintln!("chat_template: {info}");
            }
        }));
    });
    let (source, content) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let (Ok(source), Ok(content)) = (std::str::from_utf8(source), std::str::from_utf8(content))
    else {
        return;
    };
    if may_store_a_namespace_in_one(source) {
        return;
    }
    let Ok(t) = ChatTemplate::new(source) else {
        return;
    };
    let t = t.with_limits(FUEL, MAX_OUTPUT);
    let messages = [
        Message::new("system", content),
        Message::new("user", content),
        Message::new("assistant", content),
    ];
    for (n, gen) in [(0, false), (2, true), (3, false)] {
        if let Ok(text) = t.render(&messages[..n], gen, n == 2) {
            assert!(text.len() <= MAX_OUTPUT);
        }
    }
});

/// Whether a `{% set NAME.ATTR = EXPR %}` has a bare name in EXPR (one not
/// followed by `.`, `[` or `(`), through which a namespace could come to
/// hold itself: printing such a value recurses until the stack overflows,
/// and minijinja has no bound there. The engine renders in a child process
/// (`template_process.rs`), which dies alone, with a clear error
/// (tests/python/test_server_hardening.py, "cycle"); in process it is an
/// abort, so such templates are left out here. (A namespace reached only
/// through an attribute, `{% set d = {'k': ns} %}{% set ns.s = d.k %}`, is
/// not caught.)
fn may_store_a_namespace_in_one(source: &str) -> bool {
    let keywords = [
        "true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is", "if",
        "else",
    ];
    source.split("{%").skip(1).any(|stmt| {
        let stmt = stmt
            .split("%}")
            .next()
            .unwrap_or("")
            .trim_start_matches(['-', '+'])
            .trim();
        let Some(rest) = stmt.strip_prefix("set") else {
            return false;
        };
        let Some((target, expr)) = rest.split_once('=') else {
            return false;
        };
        if !target.contains('.') {
            return false;
        }
        let b = expr.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if c == b'\'' || c == b'"' {
                // Skip a string literal.
                i += 1;
                while i < b.len() && b[i] != c {
                    i += 1;
                }
                i += 1;
                continue;
            }
            if c.is_ascii_alphabetic() || c == b'_' {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let after_dot = start > 0 && b[start - 1] == b'.';
                let next = expr[i..].trim_start().bytes().next();
                let bare = !matches!(next, Some(b'.' | b'[' | b'('));
                if bare && !after_dot && !keywords.contains(&&expr[start..i]) {
                    return true;
                }
                continue;
            }
            i += 1;
        }
        false
    })
}
