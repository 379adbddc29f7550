//! Counters for `GET /metrics`, in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use orthrus_engine::Mode;

use crate::worker::Outcome;

#[derive(Default)]
pub struct Metrics {
    queued: AtomicI64,
    processing: AtomicI64,
    /// Responses by status code.
    responses: Mutex<BTreeMap<u16, u64>>,
    totals: Mutex<Totals>,
}

#[derive(Default)]
struct Totals {
    generations: u64,
    cancelled: u64,
    prompt_tokens: u64,
    generated_tokens: u64,
    prompt_seconds: f64,
    generation_seconds: f64,
    /// Tokens and steps of Orthrus- and auto-mode generations (for the mean
    /// accepted length).
    orthrus_tokens: u64,
    orthrus_steps: u64,
    /// Speculative decoding, under vLLM's names: steps that drafted, tokens
    /// drafted and accepted, and accepted tokens by draft position.
    spec_drafts: u64,
    spec_draft_tokens: u64,
    spec_accepted_tokens: u64,
    spec_accepted_per_pos: Vec<u64>,
}

impl Metrics {
    pub fn enqueued(&self) {
        self.queued.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dequeued(&self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn processing(&self, on: bool) {
        self.processing
            .fetch_add(if on { 1 } else { -1 }, Ordering::Relaxed);
    }

    pub fn response(&self, status: u16) {
        *self
            .responses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(status)
            .or_default() += 1;
    }

    /// A generation stopped because its client went away.
    pub fn cancelled(&self) {
        self.totals().cancelled += 1;
    }

    pub fn generated(&self, o: &Outcome) {
        let mut t = self.totals();
        let s = &o.stats;
        t.generations += 1;
        t.prompt_tokens += s.prompt_tokens as u64;
        t.generated_tokens += s.generated_tokens as u64;
        t.prompt_seconds += s.prompt_seconds;
        t.generation_seconds += s.generation_seconds;
        if o.mode != Mode::Ar {
            t.orthrus_tokens += (s.mean_accepted * s.steps as f64).round() as u64;
            t.orthrus_steps += s.steps as u64;
        }
        t.spec_drafts += s.draft_steps as u64;
        t.spec_draft_tokens += s.draft_tokens as u64;
        t.spec_accepted_tokens += s.accepted_tokens as u64;
        let n = s.accepted_tokens_per_pos.len();
        if t.spec_accepted_per_pos.len() < n {
            t.spec_accepted_per_pos.resize(n, 0);
        }
        for (sum, &a) in t
            .spec_accepted_per_pos
            .iter_mut()
            .zip(&s.accepted_tokens_per_pos)
        {
            *sum += a as u64;
        }
    }

    fn totals(&self) -> std::sync::MutexGuard<'_, Totals> {
        self.totals.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Labelled, so written apart from `metric`'s lines and added after them.
        let mut per_pos = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
            let _ = writeln!(out, "# HELP orthrus_{name} {help}");
            let _ = writeln!(out, "# TYPE orthrus_{name} {kind}");
            let _ = writeln!(out, "orthrus_{name} {value}");
        };
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        {
            let t = self.totals();
            metric(
                "generations_total",
                "counter",
                "Generations finished.",
                t.generations as f64,
            );
            metric(
                "generations_cancelled_total",
                "counter",
                "Generations stopped because the client went away.",
                t.cancelled as f64,
            );
            metric(
                "prompt_tokens_total",
                "counter",
                "Prompt tokens processed.",
                t.prompt_tokens as f64,
            );
            metric(
                "generated_tokens_total",
                "counter",
                "Tokens generated.",
                t.generated_tokens as f64,
            );
            metric(
                "prompt_seconds_total",
                "counter",
                "Time spent on prompts.",
                t.prompt_seconds,
            );
            metric(
                "generation_seconds_total",
                "counter",
                "Time spent generating.",
                t.generation_seconds,
            );
            metric(
                "prompt_tokens_per_second",
                "gauge",
                "Prompt throughput over all requests.",
                ratio(t.prompt_tokens as f64, t.prompt_seconds),
            );
            metric(
                "generated_tokens_per_second",
                "gauge",
                "Generation throughput over all requests.",
                ratio(t.generated_tokens as f64, t.generation_seconds),
            );
            metric(
                "orthrus_steps_total",
                "counter",
                "Decoding steps of orthrus- and auto-mode generations.",
                t.orthrus_steps as f64,
            );
            metric(
                "mean_accepted_tokens",
                "gauge",
                "Tokens committed per step of orthrus- and auto-mode generations (accepted drafts + 1).",
                ratio(t.orthrus_tokens as f64, t.orthrus_steps as f64),
            );
            metric(
                "spec_decode_num_drafts_total",
                "counter",
                "Decoding steps that drafted tokens.",
                t.spec_drafts as f64,
            );
            metric(
                "spec_decode_num_draft_tokens_total",
                "counter",
                "Tokens drafted.",
                t.spec_draft_tokens as f64,
            );
            metric(
                "spec_decode_num_accepted_tokens_total",
                "counter",
                "Drafted tokens accepted.",
                t.spec_accepted_tokens as f64,
            );
            let name = "orthrus_spec_decode_num_accepted_tokens_per_pos_total";
            let _ = writeln!(
                per_pos,
                "# HELP {name} Drafted tokens accepted, by draft position (0: the first draft of a step)."
            );
            let _ = writeln!(per_pos, "# TYPE {name} counter");
            for (i, n) in t.spec_accepted_per_pos.iter().enumerate() {
                let _ = writeln!(per_pos, "{name}{{position=\"{i}\"}} {n}");
            }
        }
        metric(
            "requests_queued",
            "gauge",
            "Requests waiting for the model.",
            self.queued.load(Ordering::Relaxed) as f64,
        );
        metric(
            "requests_processing",
            "gauge",
            "Requests being generated.",
            self.processing.load(Ordering::Relaxed) as f64,
        );
        out.push_str(&per_pos);
        let _ = writeln!(
            out,
            "# HELP orthrus_http_responses_total HTTP responses by status code."
        );
        let _ = writeln!(out, "# TYPE orthrus_http_responses_total counter");
        for (code, n) in self
            .responses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(out, "orthrus_http_responses_total{{code=\"{code}\"}} {n}");
        }
        out
    }
}
