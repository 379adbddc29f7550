//! `orthrus`: run and benchmark Orthrus (and plain Qwen3) GGUF models.

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};
use orthrus_engine::chat::{Message, RenderChat, TemplateProcess};
use orthrus_engine::options::{llama_style_args, ModelArgs};
use orthrus_engine::template_process;
use orthrus_engine::tokenizer::{TextStream, Tokenizer};
use orthrus_engine::{generate, GenerateParams, KvCache, Mode, Model, SamplingParams, Session};

#[derive(Parser)]
#[command(
    name = "orthrus",
    version,
    about = "Run Orthrus models: a Qwen3 model that drafts blocks with its diffusion view and verifies them with its AR view"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt (text to stdout, statistics to stderr).
    Run(RunArgs),
    /// Run the same prompts in ar, orthrus and auto mode and compare speeds.
    Bench(BenchArgs),
}

#[derive(Args)]
struct SamplingArgs {
    /// Temperature; 0 is greedy.
    #[arg(long = "temp", default_value_t = 0.0)]
    temperature: f32,
    #[arg(long = "top-k", default_value_t = 20)]
    top_k: usize,
    #[arg(long = "top-p", default_value_t = 0.8)]
    top_p: f32,
    #[arg(long = "min-p", default_value_t = 0.0)]
    min_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
struct DraftArgs {
    /// Tokens an orthrus step drafts, at most in auto mode (a block of N + 1;
    /// default and largest: the model's block size - 1).
    #[arg(
        long = "draft-max",
        visible_alias = "spec-draft-n-max",
        value_name = "N"
    )]
    draft_max: Option<usize>,
    /// The block size L, as --draft-max L-1 (kept for scripts that used it).
    #[arg(long = "block-size", hide = true, conflicts_with = "draft_max")]
    block_size: Option<usize>,
}

impl DraftArgs {
    fn draft_max(&self) -> Result<Option<usize>> {
        match (self.draft_max, self.block_size) {
            (_, Some(0)) => bail!("--block-size must be at least 1"),
            (_, Some(l)) => Ok(Some(l - 1)),
            (n, None) => Ok(n),
        }
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt text.
    #[arg(short, long, conflicts_with = "prompt_ids")]
    prompt: Option<String>,
    /// Prompt as comma-separated token ids.
    #[arg(long = "prompt-ids", value_delimiter = ',')]
    prompt_ids: Option<Vec<u32>>,
    /// Wrap the prompt as a user message with the model's chat template.
    #[arg(long)]
    chat: bool,
    /// System message (with --chat).
    #[arg(long)]
    system: Option<String>,
    /// Let the model think (Qwen3's enable_thinking; with --chat).
    #[arg(long)]
    think: bool,
    /// Tokens to generate at most.
    #[arg(
        short = 'n',
        short_alias = 'N',
        long = "n-predict",
        default_value_t = 128
    )]
    n_predict: usize,
    /// auto: each step drafts as many tokens as pay best on this device
    /// (0: an AR step); orthrus: every step drafts --draft-max; ar: no drafts.
    #[arg(long, default_value = "auto")]
    mode: Mode,
    #[command(flatten)]
    draft: DraftArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[arg(long = "ignore-eos")]
    ignore_eos: bool,
    /// Stop when this text appears (repeatable).
    #[arg(long = "stop")]
    stop: Vec<String>,
    /// Print one JSON object (tokens, text, steps, stats) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Tokens to generate per prompt.
    #[arg(
        short = 'n',
        short_alias = 'N',
        long = "n-predict",
        default_value_t = 128
    )]
    n_predict: usize,
    /// Prompts (default: a few built-in ones).
    #[arg(short, long)]
    prompt: Vec<String>,
    /// A JSON file holding an array of prompt strings (added to -p).
    #[arg(long = "prompts-file")]
    prompts_file: Option<std::path::PathBuf>,
    /// Random prompts of this many token ids instead (for random-weight models).
    #[arg(long = "random-prompt-len")]
    random_prompt_len: Option<usize>,
    /// How many random prompts (with --random-prompt-len).
    #[arg(long = "random-prompts", default_value_t = 3)]
    random_prompts: usize,
    /// Runs of the whole prompt set in every mode (llama-bench's -r): on a
    /// machine whose speed drifts, the ratios of several agree better than
    /// one's.
    #[arg(short = 'r', long = "repetitions", default_value_t = 1)]
    repetitions: usize,
    #[command(flatten)]
    draft: DraftArgs,
    /// Sampling of every mode (greedy by default).
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Also check that greedy orthrus and auto output equals greedy ar output
    /// on every prompt; a divergence is reported with the AR top-2 logit gap
    /// there.
    #[arg(long)]
    check: bool,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    /// Write every step of the orthrus and auto generations to this file
    /// (JSON: per mode, per repetition and prompt, [position, drafts, rows,
    /// accepted, microseconds, built a graph]; under "tokens", per mode,
    /// each of those generations' tokens).
    #[arg(long = "steps-out")]
    steps_out: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == template_process::WORKER_ARG)
    {
        return template_process::serve();
    }
    let cli = Cli::parse_from(llama_style_args());
    let result = match cli.command {
        Command::Run(a) => run(a),
        Command::Bench(a) => bench(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orthrus: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn tokenizer(model: &Model) -> Result<Tokenizer> {
    model
        .tokenizer()
        .map_err(|e| anyhow::anyhow!("{e} (or pass --prompt-ids instead of text)"))
}

fn sampling(s: &SamplingArgs) -> Result<SamplingParams> {
    if !(s.temperature >= 0.0 && s.top_p > 0.0 && s.top_p <= 1.0 && (0.0..=1.0).contains(&s.min_p))
    {
        bail!("sampling settings out of range: --temp >= 0, 0 < --top-p <= 1, 0 <= --min-p <= 1");
    }
    Ok(SamplingParams {
        temperature: s.temperature,
        top_k: s.top_k,
        top_p: s.top_p,
        min_p: s.min_p,
        seed: s.seed,
    })
}

fn run(a: RunArgs) -> Result<()> {
    let l = a.model.load()?;
    // The text of the output is decoded whenever the file has a tokenizer.
    let tok = tokenizer(&l.model);
    let prompt: Vec<u32> = match (&a.prompt, &a.prompt_ids) {
        (_, Some(ids)) => ids.clone(),
        (Some(text), None) => {
            let tok = tok.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
            if a.chat {
                let tmpl = l
                    .model
                    .chat_template
                    .as_deref()
                    .context("the model has no chat template")?;
                let mut msgs = Vec::new();
                if let Some(s) = &a.system {
                    msgs.push(Message::new("system", s));
                }
                msgs.push(Message::new("user", text));
                // The rendered template is the whole prompt, no BOS added,
                // as transformers' apply_chat_template tokenizes it.
                let exe = std::env::current_exe()?;
                let tmpl = TemplateProcess::new(tmpl, exe, Default::default())?;
                tok.encode(&tmpl.render(&msgs, true, a.think)?)?
            } else {
                tok.encode_prompt(text)?
            }
        }
        (None, None) => bail!("give a prompt with -p TEXT or --prompt-ids 1,2,3"),
    };
    let cache = KvCache::new(&l.model, l.n_ctx, l.cache_type)?;
    let mut session = Session::new(&l.model, &cache, l.threads, l.batch)?;
    session.set_exact(l.exact)?;
    let params = GenerateParams {
        mode: a.mode,
        max_tokens: a.n_predict,
        ignore_eos: a.ignore_eos,
        sampling: sampling(&a.sampling)?,
        draft_max: a.draft.draft_max()?,
    };
    let eos = l.model.hparams.eos_ids.clone();
    let mut stream = tok
        .as_ref()
        .ok()
        .map(|t| TextStream::new(t, a.stop.clone(), eos));
    let mut stdout = std::io::stdout().lock();
    let json = a.json;
    let mut on_token = |id: u32| -> bool {
        let Some(s) = stream.as_mut() else {
            return true;
        };
        let piece = s.push(id).unwrap_or_default();
        if !json {
            let _ = stdout.write_all(piece.as_bytes());
            let _ = stdout.flush();
        }
        !s.stopped()
    };
    let g = generate(&mut session, &prompt, &params, &mut on_token)?;
    let text = match stream.as_mut() {
        Some(s) => {
            if !json {
                let _ = stdout.write_all(s.finish().as_bytes());
            }
            s.text().to_string()
        }
        None => String::new(),
    };
    drop(stdout);
    if json {
        let out = serde_json::json!({
            "tokens": g.tokens,
            "text": text,
            "steps": g.steps,
            "finish": g.finish,
            "stats": g.stats,
        });
        println!("{out}");
    } else {
        println!();
    }
    let s = &g.stats;
    eprintln!(
        "prompt: {} tokens, {:.1} tok/s | generated: {} tokens, {:.1} tok/s | {} steps, mean accepted {:.2} | finish: {:?}",
        s.prompt_tokens, s.prompt_tokens_per_second, s.generated_tokens, s.generation_tokens_per_second, s.steps, s.mean_accepted, g.finish
    );
    if a.mode != Mode::Ar && l.model.is_orthrus() {
        let hist: Vec<String> = s
            .histogram
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(k, c)| format!("{}:{c}", k + 1))
            .collect();
        eprintln!("tokens per step histogram: {}", hist.join(" "));
        let per_pos: Vec<String> = s
            .accepted_tokens_per_pos
            .iter()
            .zip(&s.draft_tokens_per_pos)
            .take_while(|(_, &d)| d > 0)
            .map(|(&a, &d)| format!("{:.2}", a as f64 / d as f64))
            .collect();
        eprintln!(
            "drafts: {} steps of {} drafted {} tokens, {} accepted; acceptance by position: {}",
            s.draft_steps,
            s.steps,
            s.draft_tokens,
            s.accepted_tokens,
            per_pos.join(" ")
        );
    }
    Ok(())
}

const BENCH_PROMPTS: [&str; 3] = [
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "The three laws of thermodynamics are",
    "import os\nimport sys\n\ndef main():\n",
];

/// Random prompts a bench runs at most (each is run in every mode).
const MAX_RANDOM_PROMPTS: usize = 1000;
const MAX_REPETITIONS: usize = 1000;

/// One mode's generations in a bench run, summed over the prompts.
#[derive(Clone, Default)]
struct ModeTotals {
    prompt_tokens: usize,
    prompt_seconds: f64,
    generated: usize,
    generation_seconds: f64,
    steps: usize,
    committed: usize,
    draft_steps: usize,
    drafted: usize,
    accepted: usize,
    ar_step_seconds: f64,
    build_steps: usize,
    build_seconds: f64,
    /// The tokens of each prompt's generation.
    tokens: Vec<Vec<u32>>,
    /// Each prompt's steps, as `--steps-out` writes them.
    step_log: Vec<serde_json::Value>,
}

impl ModeTotals {
    fn add(&mut self, g: orthrus_engine::Generation) {
        let s = &g.stats;
        self.prompt_tokens += s.prompt_tokens;
        self.prompt_seconds += s.prompt_seconds;
        self.generated += s.generated_tokens;
        self.generation_seconds += s.generation_seconds;
        self.steps += s.steps;
        self.committed += (s.mean_accepted * s.steps as f64).round() as usize;
        self.draft_steps += s.draft_steps;
        self.drafted += s.draft_tokens;
        self.accepted += s.accepted_tokens;
        self.ar_step_seconds += s.ar_step_seconds;
        self.build_steps += s.build_steps;
        self.build_seconds += s.build_seconds;
        self.tokens.push(g.tokens);
        let steps: Vec<serde_json::Value> = g
            .steps
            .iter()
            .map(|s| {
                serde_json::json!([
                    s.position,
                    s.drafts.len(),
                    s.rows,
                    s.accepted,
                    s.micros,
                    s.built
                ])
            })
            .collect();
        self.step_log.push(steps.into());
    }

    fn json(&self, mode: Mode) -> serde_json::Value {
        let steps = self.steps.max(1) as f64;
        let ar_steps = self.steps - self.draft_steps;
        serde_json::json!({
            "mode": mode.name(),
            "prompt_tokens_per_second": self.prompt_tokens as f64 / self.prompt_seconds,
            "generation_tokens_per_second": self.generated as f64 / self.generation_seconds,
            "mean_accepted": self.committed as f64 / steps,
            "step_ms": 1000.0 * self.generation_seconds / steps,
            "draft_steps": self.draft_steps,
            "ar_steps": ar_steps,
            // What one of those AR steps took: auto's against ar's.
            "ar_step_ms": 1000.0 * self.ar_step_seconds / ar_steps.max(1) as f64,
            // And a drafting step, with the steps that built graphs apart.
            "draft_step_ms": 1000.0 * (self.generation_seconds - self.ar_step_seconds)
                / self.draft_steps.max(1) as f64,
            "build_steps": self.build_steps,
            "build_ms": 1000.0 * self.build_seconds,
            "mean_drafts": self.drafted as f64 / steps,
            "acceptance": if self.drafted > 0 { self.accepted as f64 / self.drafted as f64 } else { 0.0 },
        })
    }
}

/// auto's generation speed over the faster of ar's and orthrus's, from
/// each mode's tokens a second (None where a mode did not run).
fn auto_vs_best(rate: impl Fn(Mode) -> Option<f64>) -> Option<f64> {
    Some(rate(Mode::Auto)? / rate(Mode::Ar)?.max(rate(Mode::Orthrus)?))
}

fn bench(a: BenchArgs) -> Result<()> {
    if !(1..=MAX_REPETITIONS).contains(&a.repetitions) {
        bail!(
            "--repetitions {}: from 1 to {MAX_REPETITIONS}",
            a.repetitions
        );
    }
    if a.random_prompts > MAX_RANDOM_PROMPTS {
        bail!(
            "--random-prompts {}: at most {MAX_RANDOM_PROMPTS}",
            a.random_prompts
        );
    }
    let sampling = sampling(&a.sampling)?;
    if a.check && !sampling.is_greedy() {
        bail!("--check compares greedy outputs; it takes no --temp");
    }
    let l = a.model.load()?;
    if let Some(n) = a.random_prompt_len.filter(|&n| n >= l.n_ctx) {
        bail!(
            "--random-prompt-len {n} does not fit the context of {} tokens (raise -c or shorten it)",
            l.n_ctx
        );
    }
    let prompts: Vec<Vec<u32>> = if let Some(n) = a.random_prompt_len {
        let mut rng = orthrus_engine::sampling::Rng::new(7);
        let vocab = l.model.hparams.n_vocab as u64;
        (0..a.random_prompts.max(1))
            .map(|_| {
                (0..n.max(1))
                    .map(|_| (rng.next_u64() % vocab.min(150_000)) as u32)
                    .collect()
            })
            .collect()
    } else {
        let tok = tokenizer(&l.model)?;
        let mut texts = a.prompt.clone();
        if let Some(f) = &a.prompts_file {
            let json = std::fs::read_to_string(f).with_context(|| format!("{}", f.display()))?;
            let list: Vec<String> = serde_json::from_str(&json)
                .with_context(|| format!("{}: expected a JSON array of strings", f.display()))?;
            texts.extend(list);
        }
        if texts.is_empty() {
            texts = BENCH_PROMPTS.iter().map(|s| s.to_string()).collect();
        }
        texts
            .iter()
            .map(|t| tok.encode(t))
            .collect::<Result<_, _>>()?
    };
    let cache = KvCache::new(&l.model, l.n_ctx, l.cache_type)?;
    let mut session = Session::new(&l.model, &cache, l.threads, l.batch)?;
    session.set_exact(l.exact)?;
    let modes: Vec<Mode> = if l.model.is_orthrus() {
        vec![Mode::Ar, Mode::Orthrus, Mode::Auto]
    } else {
        vec![Mode::Ar]
    };
    let draft_max = a.draft.draft_max()?;
    // Auto's step costs first, as the server measures them at load: on a GPU
    // they set the KV windows of every mode's graphs, so that the warm-up
    // builds the graphs the runs use.
    if l.model.is_orthrus() {
        session.step_costs_for(&sampling)?;
    }
    // Warm-up: builds the graphs and wakes the device.
    for &mode in &modes {
        let p = GenerateParams {
            mode,
            max_tokens: 8,
            ignore_eos: true,
            draft_max,
            sampling,
        };
        generate(&mut session, &prompts[0], &p, &mut |_| true)?;
    }
    // Auto's acceptance estimates start afresh, from the prior, as a
    // server's first request does: those of the warm-up's 8 tokens (on the
    // shifting prompts, prose whose drafts were rejected) kept the first
    // measured generations to AR steps.
    session.set_history(Default::default());
    // Each prompt runs in every mode, in an order that changes from run to
    // run so that a device that drifts (clocks, heat) does not favour one
    // mode: the modes in turn starting one later each time, and every
    // second round of turns backwards, so that each mode runs as often
    // after each other one as before it. (Turns alone ran auto after
    // orthrus two times in three, ar after auto: on this 2-core machine
    // auto's AR steps were then 3.5-4% slower than ar's, the same steps.)
    let mut totals = vec![ModeTotals::default(); modes.len()];
    // Each repetition's tokens and seconds of generation by mode.
    let mut per_repetition = Vec::with_capacity(a.repetitions);
    for r in 0..a.repetitions {
        let mut rep = vec![(0usize, 0f64); modes.len()];
        for (i, p) in prompts.iter().enumerate() {
            let turn = r * prompts.len() + i;
            let backwards = (turn / modes.len()) % 2 == 1;
            for k in 0..modes.len() {
                let k = if backwards { modes.len() - 1 - k } else { k };
                let m = (turn + k) % modes.len();
                let params = GenerateParams {
                    mode: modes[m],
                    max_tokens: a.n_predict,
                    ignore_eos: true,
                    draft_max,
                    sampling,
                };
                let g = generate(&mut session, p, &params, &mut |_| true)?;
                rep[m].0 += g.stats.generated_tokens;
                rep[m].1 += g.stats.generation_seconds;
                totals[m].add(g);
            }
        }
        per_repetition.push(rep);
    }
    let results: Vec<serde_json::Value> = modes
        .iter()
        .zip(&totals)
        .map(|(mode, t)| t.json(*mode))
        .collect();
    // Each repetition's auto / the faster of ar and orthrus.
    let rep_rate = |t: &[(usize, f64)], m: Mode| {
        let i = modes.iter().position(|&x| x == m)?;
        Some(t[i].0 as f64 / t[i].1)
    };
    let auto_vs_best_each: Vec<f64> = per_repetition
        .iter()
        .filter_map(|t| auto_vs_best(|m| rep_rate(t, m)))
        .collect();
    if let Some(path) = &a.steps_out {
        let mut steps: serde_json::Map<String, serde_json::Value> = modes
            .iter()
            .zip(&totals)
            .filter(|(m, _)| **m != Mode::Ar)
            .map(|(m, t)| (m.name().to_string(), t.step_log.clone().into()))
            .collect();
        // Each mode's generations, so that an acceptance oracle can be
        // computed for the very text a device wrote (near-ties part it from
        // another device's).
        let tokens: serde_json::Map<String, serde_json::Value> = modes
            .iter()
            .zip(&totals)
            .map(|(m, t)| (m.name().to_string(), serde_json::json!(t.tokens)))
            .collect();
        steps.insert("tokens".into(), tokens.into());
        std::fs::write(path, serde_json::Value::Object(steps).to_string())
            .with_context(|| format!("{}", path.display()))?;
    }
    // The first repetition's outputs, each prompt once.
    let outputs: Vec<Vec<Vec<u32>>> = totals
        .into_iter()
        .map(|t| t.tokens.into_iter().take(prompts.len()).collect())
        .collect();
    let mut check = serde_json::Value::Null;
    if a.check && outputs.len() > 1 {
        let mut divergences = Vec::new();
        let pairs = outputs[1..]
            .iter()
            .zip(&modes[1..])
            .flat_map(|(out, mode)| {
                outputs[0]
                    .iter()
                    .zip(out)
                    .enumerate()
                    .map(move |(i, p)| (i, *mode, p))
            });
        for (i, mode, (ar, or)) in pairs {
            let Some(at) = ar.iter().zip(or).position(|(x, y)| x != y) else {
                continue;
            };
            // The AR logits where the two outputs part: a legitimate flip sits
            // at a near-tie. Also how far a one-token pass (what `ar` mode
            // runs) and a batched pass (what verify runs) disagree there,
            // against the spread of the logits.
            let mut prefix = prompts[i].clone();
            prefix.extend(&ar[..at]);
            let m = prefix.len();
            session.prefill(&prefix[..m - 1], 0, false)?;
            let single = session
                .forward(orthrus_engine::View::Ar, &prefix[m - 1..], m - 1, 1, true)?
                .logits;
            let b = 16.min(m);
            session.prefill(&prefix[..m - b], 0, false).ok();
            let batched = session
                .forward(orthrus_engine::View::Ar, &prefix[m - b..], m - b, 1, true)?
                .logits;
            let mut top = single.clone();
            top.sort_by(|x, y| y.total_cmp(x));
            let mean = single.iter().sum::<f32>() / single.len() as f32;
            let std = (single.iter().map(|v| (v - mean).powi(2)).sum::<f32>()
                / single.len() as f32)
                .sqrt();
            let diff = single
                .iter()
                .zip(&batched)
                .map(|(x, y)| (x - y).powi(2))
                .sum::<f32>()
                .sqrt();
            let norm = single.iter().map(|x| x * x).sum::<f32>().sqrt();
            let max_abs = single
                .iter()
                .zip(&batched)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            divergences.push(serde_json::json!({
                "mode": mode.name(), "prompt": i, "index": at, "ar": ar[at], "orthrus": or[at], "top2_gap": top[0] - top[1],
                "logit_std": std, "batched_vs_single_rel": diff / norm, "batched_vs_single_max_abs": max_abs,
            }));
        }
        let compared = prompts.len() * (outputs.len() - 1);
        check = serde_json::json!({ "prompts": prompts.len(), "tokens_each": a.n_predict, "compared": compared, "identical": compared - divergences.len(), "divergences": divergences });
    }
    // Auto mode's step costs after the runs (at the first prompt's end),
    // what a step costs more when it must build its graphs, and the KV
    // window its graphs span.
    let costs: serde_json::Map<String, serde_json::Value> = if l.model.is_orthrus() {
        let pos = prompts[0].len();
        let c = session.step_costs_for(&sampling)?;
        let ms = |s: f64| serde_json::json!((s * 1e6).round() / 1e3);
        c.table(pos)
            .into_iter()
            .flat_map(|(r, s)| {
                [
                    (format!("rows_{r}"), ms(s)),
                    (format!("fresh_{r}"), ms(c.fresh(r))),
                    (format!("window_{r}"), serde_json::json!(c.window(r))),
                ]
            })
            .collect()
    } else {
        serde_json::Map::new()
    };
    let passes = pass_times(&mut session, &prompts[0])?;
    let rate = |m: Mode| {
        results
            .iter()
            .find(|r| r["mode"] == m.name())
            .and_then(|r| r["generation_tokens_per_second"].as_f64())
    };
    let ar = rate(Mode::Ar).unwrap_or(1.0);
    let speedup = rate(Mode::Orthrus).map_or(1.0, |o| o / ar);
    let auto_vs_best = auto_vs_best(rate).unwrap_or(1.0);
    let devices: Vec<String> = l.model.devices.iter().map(|d| d.name()).collect();
    let sampling_json = if sampling.is_greedy() {
        serde_json::Value::Null
    } else {
        serde_json::json!({ "temperature": sampling.temperature, "top_k": sampling.top_k, "top_p": sampling.top_p, "min_p": sampling.min_p, "seed": sampling.seed })
    };
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "model": a.model.model, "devices": devices, "cache_type": l.cache_type.name(), "exact": l.exact, "exact_matmul": session.exact_matmul(), "sampling": sampling_json, "results": results, "speedup": speedup, "auto_vs_best": auto_vs_best, "repetitions": a.repetitions, "auto_vs_best_each": auto_vs_best_each, "auto_step_ms": costs, "pass_ms": passes, "check": check })
        );
    } else {
        println!(
            "model {} on {} ({} threads, {} cache{}), {} prompts x {} tokens{}, {}",
            a.model.model.display(),
            devices.join("+"),
            l.threads,
            l.cache_type.name(),
            match (l.exact, session.exact_matmul()) {
                (true, true) => ", exact, batch-invariant matmuls",
                (true, false) => ", exact",
                _ => "",
            },
            prompts.len(),
            a.n_predict,
            match a.repetitions {
                1 => String::new(),
                r => format!(" x {r} repetitions"),
            },
            if sampling.is_greedy() {
                "greedy".to_string()
            } else {
                format!(
                    "temperature {}, top-k {}, top-p {}, min-p {}, seed {}",
                    sampling.temperature,
                    sampling.top_k,
                    sampling.top_p,
                    sampling.min_p,
                    sampling.seed
                )
            }
        );
        println!(
            "{:<8} {:>12} {:>12} {:>14} {:>10} {:>11} {:>11} {:>10}",
            "mode",
            "prompt t/s",
            "gen t/s",
            "mean accepted",
            "step ms",
            "AR step ms",
            "drafts/step",
            "accepted"
        );
        for r in &results {
            println!(
                "{:<8} {:>12.1} {:>12.1} {:>14.2} {:>10.2} {:>11.2} {:>11.2} {:>9.0}%",
                r["mode"].as_str().unwrap_or(""),
                r["prompt_tokens_per_second"].as_f64().unwrap_or(0.0),
                r["generation_tokens_per_second"].as_f64().unwrap_or(0.0),
                r["mean_accepted"].as_f64().unwrap_or(0.0),
                r["step_ms"].as_f64().unwrap_or(0.0),
                r["ar_step_ms"].as_f64().unwrap_or(0.0),
                r["mean_drafts"].as_f64().unwrap_or(0.0),
                100.0 * r["acceptance"].as_f64().unwrap_or(0.0)
            );
        }
        if l.model.is_orthrus() {
            println!("speedup orthrus / ar: {speedup:.2}x; auto / the faster of them: {auto_vs_best:.2}x");
            if a.repetitions > 1 {
                let each: Vec<String> = auto_vs_best_each
                    .iter()
                    .map(|x| format!("{x:.3}"))
                    .collect();
                println!("auto / the faster, each repetition: {}", each.join(", "));
            }
        }
        if !costs.is_empty() {
            println!(
                "auto's step costs, ms by graph rows: {}",
                serde_json::Value::Object(costs)
            );
        }
        println!("ms per forward pass (greedy, argmax only): {passes}");
        if !check.is_null() {
            println!("greedy check: {check}");
        }
    }
    Ok(())
}

/// Where a step's time goes: milliseconds per greedy decoding pass (argmax
/// rows only, as decoding runs them) of the AR view and of the diffusion
/// view over each of auto mode's graph sizes (`bucket_rows`: 1, 2, 4, ...,
/// the block), each averaged over repeated passes at the same position after
/// `prompt`; and the step of N drafts for each of them (`step_N`: both
/// passes of N + 1 rows, timed as one graph where greedy steps run as one,
/// else the sum of the two).
fn pass_times(session: &mut Session<'_>, prompt: &[u32]) -> Result<serde_json::Value> {
    use orthrus_engine::View;
    const REPS: usize = 30;
    let model = session.model;
    let block = model.hparams.orthrus.map_or(1, |o| o.block_size);
    let pos0 = prompt.len();
    if pos0 + block > session.n_ctx() {
        return Ok(serde_json::Value::Null);
    }
    session.prefill(prompt, 0, false)?;
    let rows = orthrus_engine::draft_policy::bucket_rows(block);
    let mut shapes: Vec<(View, usize)> = rows.iter().map(|&t| (View::Ar, t)).collect();
    if model.is_orthrus() {
        shapes.extend(
            rows.iter()
                .filter(|&&t| t > 1)
                .map(|&t| (View::Diffusion, t)),
        );
    }
    // Milliseconds of one run, averaged over REPS after two untimed ones:
    // the first builds and allocates the graph, and on CUDA the second
    // captures it.
    let mean_ms = |run: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        run()?;
        run()?;
        let t0 = Instant::now();
        for _ in 0..REPS {
            run()?;
        }
        Ok(1000.0 * t0.elapsed().as_secs_f64() / REPS as f64)
    };
    let mut out = serde_json::Map::new();
    let mut ms_of = std::collections::HashMap::new();
    for (view, t) in shapes {
        let tokens: Vec<u32> = prompt.iter().cycle().take(t).copied().collect();
        let ms = mean_ms(&mut || {
            session.forward(view, &tokens, pos0, t, false)?;
            Ok(())
        })?;
        ms_of.insert((view, t), ms);
        let name = match view {
            View::Ar => format!("ar_{t}"),
            View::Diffusion => format!("diffusion_{t}"),
        };
        out.insert(name, serde_json::json!((ms * 1000.0).round() / 1000.0));
    }
    for &t in rows.iter().filter(|&&t| t > 1) {
        let ms = if session.fuses_steps(false) {
            // One graph, as greedy decoding runs a step.
            let mut block = vec![model.hparams.orthrus.map_or(0, |o| o.mask_token); t];
            block[0] = prompt[0];
            Some(mean_ms(&mut || {
                session.step(&block, pos0, t)?;
                Ok(())
            })?)
        } else {
            match (ms_of.get(&(View::Ar, t)), ms_of.get(&(View::Diffusion, t))) {
                (Some(a), Some(d)) => Some(a + d),
                _ => None,
            }
        };
        if let Some(ms) = ms {
            out.insert(
                format!("step_{}", t - 1),
                serde_json::json!((ms * 1000.0).round() / 1000.0),
            );
        }
    }
    Ok(serde_json::Value::Object(out))
}
