//! The model's thread. ggml sessions are neither `Send` nor shareable, so one
//! thread loads the model and runs every generation, one at a time, taking
//! jobs from a bounded queue. Results go back over a channel per job; when
//! its receiver is gone (the client disconnected) the generation stops at the
//! next committed token.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use orthrus_engine::hparams::Hparams;
use orthrus_engine::options::ModelArgs;
use orthrus_engine::tokenizer::{TextStream, Tokenizer};
use orthrus_engine::{generate, Finish, GenerateParams, KvCache, Mode, Session, Stats};
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// What the HTTP side needs to know about the loaded model.
#[derive(Clone)]
pub struct ModelInfo {
    pub hparams: Hparams,
    pub n_ctx: usize,
    /// The model's tokenizer, shared with the model thread.
    pub tokenizer: Arc<Tokenizer>,
    pub chat_template: Option<String>,
    pub is_orthrus: bool,
    pub devices: Vec<String>,
    /// The KV cache type (`f16`, ...) and whether decoding is exact (`--exact`).
    pub cache_type: &'static str,
    pub exact: bool,
    /// Whether exact decoding's weight matmuls are our batch-invariant ones
    /// (`Session::exact_matmul`).
    pub exact_matmul: bool,
}

/// One generation to run.
pub struct Job {
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    pub stops: Vec<String>,
    /// Send text pieces as they become final (else only the outcome).
    pub stream: bool,
    pub events: mpsc::UnboundedSender<Event>,
}

pub enum Event {
    /// Text that can be shown now.
    Text(String),
    Done(Box<Outcome>),
    Failed(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinishReason {
    Eos,
    Length,
    /// A stop string was met; it is not part of the text.
    Word(String),
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub text: String,
    pub tokens: Vec<u32>,
    pub finish: FinishReason,
    pub stats: Stats,
    pub mode: Mode,
}

/// Says when the model thread has ended, its model and buffers freed: it
/// ends once every sender of jobs is dropped (and the job it runs, if any,
/// is done or cancelled).
pub struct Stopped(std::sync::mpsc::Receiver<()>);

impl Stopped {
    /// Whether the model thread ended within `timeout`.
    pub fn wait(&self, timeout: std::time::Duration) -> bool {
        matches!(
            self.0.recv_timeout(timeout),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        )
    }
}

/// Loads the model on its own thread and starts serving jobs; returns once
/// the model is loaded (or failed to load).
pub fn start(
    args: ModelArgs,
    queue: usize,
    metrics: Arc<Metrics>,
) -> anyhow::Result<(ModelInfo, mpsc::Sender<Job>, Stopped)> {
    let (jobs, rx) = mpsc::channel::<Job>(queue.max(1));
    let (ready, ready_rx) = std::sync::mpsc::sync_channel(1);
    let (alive, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("model".into())
        .spawn(move || serve(args, rx, ready, metrics, alive))?;
    let info = ready_rx
        .recv()
        .map_err(|_| anyhow::anyhow!("the model thread ended while loading"))?
        .map_err(anyhow::Error::msg)?;
    Ok((info, jobs, Stopped(stopped)))
}

fn serve(
    args: ModelArgs,
    jobs: mpsc::Receiver<Job>,
    ready: std::sync::mpsc::SyncSender<Result<ModelInfo, String>>,
    metrics: Arc<Metrics>,
    alive: std::sync::mpsc::Sender<()>,
) {
    // Errors can only come from loading, before `ready` says the model is up.
    if let Err(e) = load_and_serve(args, jobs, &ready, metrics) {
        let _ = ready.send(Err(e.to_string()));
    }
    // Dropped after the session, cache and model (load_and_serve's locals).
    drop(alive);
}

fn load_and_serve(
    args: ModelArgs,
    mut jobs: mpsc::Receiver<Job>,
    ready: &std::sync::mpsc::SyncSender<Result<ModelInfo, String>>,
    metrics: Arc<Metrics>,
) -> Result<(), orthrus_engine::EngineError> {
    let loaded = args.load()?;
    let model = &loaded.model;
    let tok = Arc::new(model.tokenizer()?);
    let cache = KvCache::new(model, loaded.n_ctx, loaded.cache_type)?;
    let mut session = Session::new(model, &cache, loaded.threads, loaded.batch)?;
    session.set_exact(loaded.exact)?;
    if model.is_orthrus() {
        // Auto mode's step costs, measured now rather than in the first
        // request: greedy steps' and, as most requests sample, with a GPU
        // those of steps sampled as by default.
        session.step_costs_for(&crate::api::DEFAULT_SAMPLING)?;
    }
    let info = ModelInfo {
        hparams: model.hparams.clone(),
        n_ctx: loaded.n_ctx,
        tokenizer: tok.clone(),
        chat_template: model.chat_template.clone(),
        is_orthrus: model.is_orthrus(),
        devices: model.devices.iter().map(|d| d.name()).collect(),
        cache_type: loaded.cache_type.name(),
        exact: loaded.exact,
        exact_matmul: session.exact_matmul(),
    };
    if ready.send(Ok(info)).is_err() {
        return Ok(());
    }
    while let Some(job) = jobs.blocking_recv() {
        metrics.dequeued();
        if job.events.is_closed() {
            metrics.cancelled();
            continue;
        }
        metrics.processing(true);
        // A panic in one generation (a bug) fails that request, not the server.
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| run(&mut session, &tok, &job)));
        let event = match run {
            Ok(Ok(Some(outcome))) => {
                metrics.generated(&outcome);
                Event::Done(Box::new(outcome))
            }
            Ok(Ok(None)) => {
                metrics.cancelled();
                Event::Failed("cancelled".into())
            }
            Ok(Err(e)) => Event::Failed(e.to_string()),
            Err(_) => Event::Failed("the generation failed (internal error)".into()),
        };
        metrics.processing(false);
        let _ = job.events.send(event);
    }
    Ok(())
}

/// Runs `job`; `None` when the client went away before the end.
fn run(
    session: &mut Session<'_>,
    tok: &Tokenizer,
    job: &Job,
) -> Result<Option<Outcome>, orthrus_engine::EngineError> {
    let eos = session.model.hparams.eos_ids.clone();
    let mut text = TextStream::new(tok, job.stops.clone(), eos);
    let mut gone = false;
    let mut on_token = |id: u32| -> bool {
        match text.push(id) {
            Ok(piece) if job.stream && !piece.is_empty() => {
                gone |= job.events.send(Event::Text(piece.to_string())).is_err();
            }
            _ => {}
        }
        gone |= job.events.is_closed();
        !gone && !text.stopped()
    };
    let g = generate(session, &job.prompt, &job.params, &mut on_token)?;
    if gone {
        return Ok(None);
    }
    let rest = text.finish().to_string();
    if job.stream && !rest.is_empty() {
        let _ = job.events.send(Event::Text(rest));
    }
    let finish = match (g.finish, text.stop_word()) {
        (_, Some(w)) => FinishReason::Word(w.to_string()),
        (Finish::Eos, None) => FinishReason::Eos,
        _ => FinishReason::Length,
    };
    Ok(Some(Outcome {
        text: text.text().to_string(),
        tokens: g.tokens,
        finish,
        stats: g.stats,
        mode: job.params.mode,
    }))
}
