//! A model, its cache and a scheduler: runs forward passes of either view.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use orthrus_kernels::ggml::{
    orthrus_cuda, set_cuda_matmul, CudaMatmul, DeviceKind, Input, Output, OwnedGraph, Scheduler,
    ThreadPool, Type,
};
use orthrus_kernels::GgmlType;

use crate::backend_layout::{self, Attention, EXACT_COL_GROUP};
use crate::draft_policy::{bucket_rows, History, StepCosts, DOMINATED_MARGIN};
use crate::graph::{self, io, Logits, Shape, View};
use crate::kv_cache::{KvCache, SLOT_ALIGN};
use crate::model::Model;
use crate::sampling::{Distribution, SamplingParams};
use crate::switches::Switches;
use crate::EngineError;

/// A graph the session keeps for its shape.
struct Kept<'m> {
    graph: OwnedGraph<'m>,
    /// Its last use: of the prompts' graphs, or else of all, the least
    /// recently used goes first (see [`Session::run`]), and ggml-cuda drops
    /// a captured graph idle for long.
    used: Instant,
    /// Graphs made on its scheduler (see [`Session::graphs_made`]) by its
    /// last use.
    made: u64,
    /// Runs since it was built or, on a GPU, went idle: ggml-cuda runs a
    /// graph's kernels one by one the first time and captures them the
    /// second, so a step costs its usual time from the third run on (a
    /// drafting step on the second cost 12 ms where 3.2 were usual: 1.7B on
    /// the H200).
    runs: u32,
    /// The scheduler it runs on: when that one's buffers grow, this graph's
    /// tensors move and its capture is lost (see [`Session::run`]).
    sched: SchedKey,
}

/// What decides whether ggml-cuda still holds a kept graph's capture.
#[derive(Clone, Copy, Debug)]
struct GpuGraphs {
    /// Whether the session's passes run on a GPU (else nothing is captured).
    on: bool,
    /// Whether ggml-cuda is ours, which keeps its most recently used
    /// graphs however long idle (`backend_layout::GPU_GRAPHS_KEPT`).
    ours: bool,
    /// Graphs made on the graph's scheduler so far.
    made: u64,
}

/// Whether ggml-cuda dropped the capture of a graph that was (`idle`) or
/// was not used in the last [`backend_layout::GPU_GRAPH_IDLE_DROP`], with
/// `made_since` graphs made on its scheduler since its last use. ggml-cuda
/// evicts graphs idle for 10 s, except, in ours, those among the most
/// recently used [`backend_layout::GPU_GRAPHS_KEPT`] of the scheduler's
/// backend; used after it were at most the others kept here and those made
/// since.
fn capture_dropped(idle: bool, ours: bool, made_since: u64) -> bool {
    idle && (!ours || made_since + MAX_GRAPHS as u64 > backend_layout::GPU_GRAPHS_KEPT)
}

const _: () = assert!(backend_layout::GPU_GRAPHS_KEPT > MAX_GRAPHS as u64);

impl Kept<'_> {
    /// Its runs as ggml-cuda sees them: none after it sat idle long enough
    /// to be dropped. Our ggml-cuda drops it only when more recent ones than
    /// it keeps were used since: at most the others kept here and those made
    /// since.
    fn runs_now(&self, gpu: GpuGraphs) -> u32 {
        let idle = self.used.elapsed() >= backend_layout::GPU_GRAPH_IDLE_DROP;
        if capture_dropped(idle, gpu.ours, gpu.made.saturating_sub(self.made)) {
            0
        } else {
            self.runs
        }
    }

    /// The share of building it that its next runs still cost: 0 once a
    /// run costs what a step usually does; on a GPU a half for each of the
    /// two runs before capture.
    fn to_build(&self, gpu: GpuGraphs) -> f64 {
        if !gpu.on {
            return 0.0;
        }
        (2 - self.runs_now(gpu).min(2)) as f64 / 2.0
    }

    /// Counts a run starting now; returns whether it is one of those that
    /// still build the graph (on a GPU: run it uncaptured, or capture it).
    fn start_run(&mut self, gpu: GpuGraphs) -> bool {
        let building = self.to_build(gpu) > 0.0;
        self.runs = self.runs_now(gpu).saturating_add(1);
        self.used = Instant::now();
        self.made = gpu.made;
        building
    }
}

/// Attention reads the cache in windows of this many slots, so a graph built
/// for one step is reused by the next steps of the same batch shape.
pub(crate) const KV_WINDOW: usize = 256;
/// With a GPU, masks of this many entries or more are made in the graph
/// from each row's visible slots (see [`Shape::mask_on_device`]): a 16-row
/// pass over 8K slots and more, where writing and copying the mask on the
/// host costs more than the few small kernels that make it. On the CPU
/// alone nothing is copied, and the host's fill is the cheaper.
pub const DEVICE_MASK_MIN: usize = 1 << 17;
/// Graphs kept for reuse before the cache of graphs is dropped.
const MAX_GRAPHS: usize = 32;
/// Which scheduler a pass runs on: decoding passes one per view and rows,
/// whole steps one per rows (the shapes a generation cycles through),
/// prompts all on one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum SchedKey {
    Prompt,
    Decode(View, usize),
    /// Whole steps in one graph (see [`Shape::step`]), by rows.
    Step(usize),
}

/// What one forward pass returns.
#[derive(Clone, Debug, Default)]
pub struct PassOutput {
    /// Argmax of each computed row.
    pub argmax: Vec<u32>,
    /// `n_out * n_vocab` logits when all are asked for, else empty.
    pub logits: Vec<f32>,
    /// Each row's `k` largest logits with their ids, in no order, when
    /// asked for (`Logits::Top`), else empty.
    pub top: Vec<(u32, f32)>,
    /// A whole step's drafts (see [`Session::step`]), else empty.
    pub drafts: Vec<u32>,
}

impl PassOutput {
    /// The sampling distribution of row `row`, from its top logits or all of
    /// them, whichever the pass returned (the same where the top were
    /// `p.top_k` or more).
    pub fn distribution(&self, row: usize, p: &SamplingParams) -> Distribution {
        let rows = self.argmax.len();
        if !self.top.is_empty() {
            let k = self.top.len() / rows;
            return Distribution::from_scores(self.top[row * k..(row + 1) * k].to_vec(), p);
        }
        let n = self.logits.len() / rows;
        Distribution::from_logits(&self.logits[row * n..(row + 1) * n], p)
    }
}

pub struct Session<'m> {
    pub model: &'m Model,
    cache: &'m KvCache,
    /// A scheduler per kind of pass (see [`SchedKey`]), each keeping its last
    /// graph allocated: steps that alternate between views and draft
    /// lengths then replay their graphs (on CUDA, captured ones) instead of
    /// splitting, allocating and capturing again at every switch.
    scheds: HashMap<SchedKey, Scheduler>,
    threads: usize,
    /// Graphs by shape (see [`Kept`]).
    graphs: HashMap<Shape, Kept<'m>>,
    /// Largest batch of one pass (prompts are processed in chunks of this size).
    pub n_batch: usize,
    /// `Shape::col_group` of decoding passes.
    col_group: usize,
    /// Whether AR-view decoding passes run batch-invariant (see [`Self::set_exact`]).
    exact: bool,
    /// Whether, in exact mode, the GPU's weight products are our
    /// batch-invariant matmul's, so that they need no column groups.
    exact_matmul: bool,
    /// Whether a layer sits on a GPU.
    on_gpu: bool,
    /// Whether greedy steps run their two passes as two graphs (see
    /// [`Self::fuses_steps`]).
    steps_apart: bool,
    /// Masks of at least this many entries are made in the graph (see
    /// [`Shape::mask_on_device`]).
    device_mask_min: usize,
    /// Whether every GPU's ggml-cuda is ours (see [`GpuGraphs::ours`]).
    ours_on_gpu: bool,
    /// Graphs made so far on each scheduler: each a new CUDA graph for its
    /// ggml-cuda backend to keep.
    graphs_made: HashMap<SchedKey, u64>,
    /// Graphs built, or on a GPU run uncaptured or captured, so far (a step
    /// that did so is no sample of its cost).
    graphs_built: usize,
    /// What a step costs by its rows, once measured (see [`Self::step_costs`]).
    step_costs: Option<StepCosts>,
    /// The same for sampled steps, by what of the logits they take (see
    /// [`Self::step_costs_for`]).
    sampled_costs: HashMap<Logits, StepCosts>,
    /// Whether sampled steps have costs apart from greedy ones (see
    /// [`Self::set_sampled_costs_apart`]).
    sampled_costs_apart: bool,
    /// What auto mode's last generation left the next.
    history: History,
    switches: Switches,
    /// The CPU workers of every scheduler's CPU backend (one pool: the
    /// passes run one at a time, and idle pools would spin beside it).
    pool: Option<Arc<ThreadPool>>,
}

impl<'m> Session<'m> {
    pub fn new(
        model: &'m Model,
        cache: &'m KvCache,
        threads: usize,
        n_batch: usize,
    ) -> Result<Session<'m>, EngineError> {
        let on_gpu = model
            .layers
            .iter()
            .any(|l| model.devices[l.device].kind() != DeviceKind::Cpu);
        let switches = Switches::get()?;
        if !switches.cuda_kernels {
            set_cuda_matmul(&model.devices, CudaMatmul::Ggml);
        }
        let col_group = backend_layout::decode_col_group(on_gpu, model.hparams.n_embd);
        let mut session = Session {
            model,
            cache,
            scheds: HashMap::new(),
            threads,
            graphs: HashMap::new(),
            n_batch: n_batch.max(1),
            col_group,
            exact: false,
            exact_matmul: false,
            on_gpu,
            steps_apart: switches.steps_apart,
            device_mask_min: if on_gpu { DEVICE_MASK_MIN } else { usize::MAX },
            ours_on_gpu: on_gpu && orthrus_cuda(&model.devices),
            graphs_made: HashMap::new(),
            graphs_built: 0,
            step_costs: None,
            sampled_costs: HashMap::new(),
            sampled_costs_apart: on_gpu,
            history: History::default(),
            switches,
            pool: (threads > 1).then(|| ThreadPool::new(threads)).flatten(),
        };
        // The prompt's scheduler now, so that a device that cannot start
        // fails here rather than at the first pass.
        session.sched(SchedKey::Prompt)?;
        Ok(session)
    }

    /// The scheduler of `key`, made on first use (backends of its own).
    fn sched(&mut self, key: SchedKey) -> Result<&mut Scheduler, EngineError> {
        if !self.scheds.contains_key(&key) {
            let mut backends = self
                .model
                .devices
                .iter()
                .map(|d| d.init())
                .collect::<Result<Vec<_>, _>>()?;
            for b in &mut backends {
                b.set_threads(self.threads);
                if let Some(pool) = &self.pool {
                    b.set_thread_pool(pool);
                }
            }
            let nodes = graph::max_nodes(self.model.hparams.n_layer);
            let mut sched = Scheduler::new(backends, nodes);
            // Sized once, for its pass at the end of the cache: buffers that
            // grew with the context moved the tensors of the graphs already
            // captured, and each then ran uncaptured and was captured again
            // (a probe in auto mode paid 2-4x its cost).
            let end_shape = |rows: usize| {
                let rows = rows.min(self.cache.n_ctx);
                (self.cache.n_ctx - rows, rows)
            };
            let shape = match key {
                SchedKey::Prompt => None,
                SchedKey::Decode(view, rows) => {
                    let (pos0, rows) = end_shape(rows);
                    Some(self.shape(view, pos0, rows, rows, Logits::All, true))
                }
                SchedKey::Step(rows) => {
                    let (pos0, rows) = end_shape(rows);
                    Some(self.step_shape(pos0, rows))
                }
            };
            if let Some(shape) = shape {
                sched.reserve(&graph::build(self.model, self.cache, shape))?;
            }
            self.scheds.insert(key, sched);
        }
        Ok(self.scheds.get_mut(&key).expect("inserted above"))
    }

    pub fn n_ctx(&self) -> usize {
        self.cache.n_ctx
    }

    /// A decoding pass: runs `view` on `tokens` at positions `pos0..`,
    /// writing their K/V into the cache slots of those positions; attention
    /// sees slots `0..pos0` plus the batch (causally for the AR view, all of
    /// it for the diffusion view). Returns the last `n_out` rows.
    ///
    /// In exact mode, CPU ops of AR-view passes run through ggml's reference
    /// kernels, whose rows do not depend on the batch size: a verify pass
    /// then computes each row bit-identically to the one-token pass AR
    /// decoding runs. (The fast kernels sum in batch-dependent orders; after
    /// a quantized matmul rounds its input to 8 bits, a one-ulp difference
    /// can move a logit by tenths.) The diffusion pass, whose drafts the
    /// verify pass checks, keeps the fast kernels.
    pub fn forward(
        &mut self,
        view: View,
        tokens: &[u32],
        pos0: usize,
        n_out: usize,
        logits: impl Into<Logits>,
    ) -> Result<PassOutput, EngineError> {
        self.forward_padded(view, tokens, pos0, n_out, logits, tokens.len())
    }

    /// [`Self::forward`] through the graph of a `rows`-token batch when
    /// `tokens` are fewer (and the cache has room): the rows past `tokens`
    /// are hidden from them by the mask, and their cache slots lie past the
    /// batch, where no later pass reads before writing. So a last, shorter
    /// block of a generation reuses the block's graph instead of building
    /// (and on CUDA capturing) one for a single step; the rows returned are
    /// the same.
    pub fn forward_padded(
        &mut self,
        view: View,
        tokens: &[u32],
        pos0: usize,
        n_out: usize,
        logits: impl Into<Logits>,
        rows: usize,
    ) -> Result<PassOutput, EngineError> {
        self.run(view, false, tokens, pos0, n_out, logits.into(), true, rows)
    }

    /// A greedy decoding step in one graph: the diffusion view over `block`
    /// (`[x, M, ...]`) at `pos0..`, then the AR view over `x` and the
    /// block's drafts, which stay on the device between the two (see
    /// [`Shape::step`]); through the graph of `rows` rows when the block is
    /// shorter, as [`Self::forward_padded`]. Returns the drafts (one a row
    /// but the last) and the verify pass's argmax rows: the two passes'
    /// nodes, whose values on the CPU are `forward_padded`'s bit for bit (on
    /// a GPU the drafts' embeddings are looked up there, which may round
    /// them otherwise). Only where [`Self::fuses_steps`] says so.
    pub fn step(
        &mut self,
        block: &[u32],
        pos0: usize,
        rows: usize,
    ) -> Result<PassOutput, EngineError> {
        assert!(block.len() > 1, "a step drafts at least one token");
        if !self.model.is_orthrus() || self.exact {
            return Err(EngineError::Usage(
                "a step in one graph needs a diffusion view and runs no exact decoding".into(),
            ));
        }
        let n = block.len();
        self.run(
            View::Diffusion,
            true,
            block,
            pos0,
            n,
            Logits::None,
            true,
            rows,
        )
    }

    /// Whether greedy steps (`logits` none) run as one graph
    /// ([`Self::step`]): not in exact mode, whose verify pass takes graphs
    /// of its own, nor where `ORTHRUS_STEP=apart` or
    /// [`Self::set_steps_apart`] says otherwise.
    pub fn fuses_steps(&self, logits: impl Into<Logits>) -> bool {
        logits.into() == Logits::None && !self.exact && !self.steps_apart && self.model.is_orthrus()
    }

    /// Makes masks of at least `entries` entries in the graph (see
    /// [`Shape::mask_on_device`]), smaller ones on the host (the default:
    /// [`DEVICE_MASK_MIN`] with a GPU, none in the graph without); a test
    /// sets 0 or `usize::MAX` to compare them.
    pub fn set_device_mask_min(&mut self, entries: usize) {
        self.device_mask_min = entries;
    }

    /// Runs greedy steps as two graphs (`true`) or one (see
    /// [`Self::fuses_steps`]), to compare them.
    pub fn set_steps_apart(&mut self, apart: bool) {
        self.steps_apart = apart;
        self.forget_step_costs();
    }

    /// Sets `Shape::col_group` of the decoding passes from now on (the
    /// default: [`backend_layout::decode_col_group`]).
    pub fn set_col_group(&mut self, col_group: usize) {
        self.col_group = col_group;
        self.forget_step_costs();
    }

    /// Graphs built so far by this session, counting on a GPU also the
    /// runs before a graph is captured (see [`Kept::runs`]), and runs that
    /// allocated their graph afresh (its scheduler had run another since).
    pub fn graphs_built(&self) -> usize {
        self.graphs_built
    }

    /// What a decoding step costs on this device and model, by the rows of
    /// its passes (`draft_policy::bucket_rows` of the block) and the
    /// position: measured on the first call (each graph built, then timed at
    /// the start of the cache and at up to 2048 positions; this writes
    /// scratch cache slots, so call it before a prefill, not between a
    /// prefill and its decoding), then as last given to
    /// [`Self::set_step_costs`]. Larger steps are measured no further once
    /// one cannot beat AR steps even if every draft is accepted (a step of r
    /// rows costs more than r one-token steps) and costs as much a row as
    /// the one before it; sizes that cost about what a larger one does are
    /// left out.
    pub fn step_costs(&mut self) -> Result<StepCosts, EngineError> {
        if let Some(c) = &self.step_costs {
            return Ok(c.clone());
        }
        let costs = self.measure_step_costs(None)?;
        self.step_costs = Some(costs.clone());
        Ok(costs)
    }

    /// Replaces the step costs (refined by a generation, or given by a test).
    pub fn set_step_costs(&mut self, costs: StepCosts) {
        self.step_costs = Some(costs);
    }

    /// What of a pass's logits sampling with `p` takes (greedy: none).
    pub fn logits_for(&self, p: &SamplingParams) -> Logits {
        let n_vocab = self.model.hparams.n_vocab;
        match p.top_k {
            _ if p.is_greedy() => Logits::None,
            k if (1..=TOP_K_FROM_BACKEND).contains(&k) && n_vocab >= TOP_K_MIN_VOCAB => {
                Logits::Top(k)
            }
            _ => Logits::All,
        }
    }

    /// [`Self::step_costs`] for steps that decode with `sampling`. With a
    /// GPU (see [`Self::set_sampled_costs_apart`]) a sampled step runs its
    /// passes as two graphs, takes logits to the host and turns them into
    /// distributions there, so it is measured that way, on the first call for
    /// each kind of logits it takes (top-k or all), and with the KV windows
    /// of the greedy steps' costs (which decide the graphs' windows).
    pub fn step_costs_for(&mut self, sampling: &SamplingParams) -> Result<StepCosts, EngineError> {
        let greedy = self.step_costs()?;
        let Some(key) = self.sampled_costs_key(sampling) else {
            return Ok(greedy);
        };
        if let Some(c) = self.sampled_costs.get_mut(&key) {
            // The greedy costs may have been replaced since (read here
            // only, so this serves what set_step_costs_for gave too).
            c.copy_windows(&greedy);
            return Ok(c.clone());
        }
        // Measured as the greedy costs were: with graphs of KV_WINDOW.
        let kept = self.step_costs.take();
        let measured = self.measure_step_costs(Some(sampling));
        self.step_costs = kept;
        let mut costs = measured?;
        costs.copy_windows(&greedy);
        self.sampled_costs.insert(key, costs.clone());
        Ok(costs)
    }

    /// [`Self::set_step_costs`] for steps that decode with `sampling`.
    pub fn set_step_costs_for(&mut self, sampling: &SamplingParams, costs: StepCosts) {
        match self.sampled_costs_key(sampling) {
            Some(key) => {
                self.sampled_costs.insert(key, costs);
            }
            None => self.set_step_costs(costs),
        }
    }

    /// Where the costs of steps decoding with `sampling` are kept among
    /// `sampled_costs` (by kind: top-k, whatever k, or all logits); None
    /// where they are the greedy ones.
    fn sampled_costs_key(&self, sampling: &SamplingParams) -> Option<Logits> {
        match self.logits_for(sampling) {
            _ if !self.sampled_costs_apart => None,
            Logits::None => None,
            Logits::Top(_) => Some(Logits::Top(0)),
            Logits::All => Some(Logits::All),
        }
    }

    /// Whether sampled steps have costs of their own ([`Self::step_costs_for`])
    /// or share the greedy ones: by default, with a GPU only. There a
    /// sampled step costs more (H100, 1.7B shapes, top-k 40: 4.2 ms for 16
    /// rows against 3.6, 1.53 for one against 1.43); on a CPU the host's share
    /// is small beside the passes (Qwen3-0.6B shapes: AR steps 16.9 ms
    /// sampled, 17.7 greedy, within the noise), while measuring them
    /// again took a server 7.5 s more to start (10.0 s).
    pub fn set_sampled_costs_apart(&mut self, apart: bool) {
        self.sampled_costs_apart = apart;
        self.forget_step_costs();
    }

    /// Drops every measured step cost (the passes changed).
    fn forget_step_costs(&mut self) {
        self.step_costs = None;
        self.sampled_costs.clear();
    }

    /// Auto mode's acceptance estimates and probe and exploring budgets as
    /// the last generation left them (none yet: the prior).
    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn set_history(&mut self, history: History) {
        self.history = history;
    }

    /// Times steps as greedy decoding runs them, or as sampling with
    /// `sampling` does (their distributions made too).
    fn measure_step_costs(
        &mut self,
        sampling: Option<&SamplingParams>,
    ) -> Result<StepCosts, EngineError> {
        /// Timed steps per sample, at least and at most, and the time after
        /// which no more are taken.
        const MIN_REPS: usize = 3;
        const MAX_REPS: usize = 9;
        const SAMPLE_SECONDS: f64 = 0.03;
        let block = self.model.hparams.orthrus.map_or(1, |o| o.block_size);
        let logits = sampling.map_or(Logits::None, |p| self.logits_for(p));
        let mask = self.model.hparams.orthrus.map_or(0, |o| o.mask_token);
        let n_ctx = self.n_ctx();
        let (mut samples, mut fresh) = (Vec::new(), Vec::new());
        let (mut ar_cost, mut last_per_row) = (f64::INFINITY, f64::INFINITY);
        for rows in bucket_rows(block) {
            if rows > n_ctx {
                break;
            }
            let far = n_ctx.min(2048) - rows;
            let positions = if far >= KV_WINDOW {
                vec![0, far]
            } else {
                vec![0]
            };
            let mut at_start = 0.0;
            for pos in positions {
                let step = |s: &mut Self| -> Result<(), EngineError> {
                    let mut blk = vec![mask; rows];
                    blk[0] = 0;
                    if rows > 1 && s.fuses_steps(logits) {
                        s.step(&blk, pos, rows)?;
                        return Ok(());
                    }
                    let mut passes = Vec::new();
                    if rows > 1 {
                        let d = s.forward(View::Diffusion, &blk, pos, rows, logits)?;
                        passes.push((d, rows - 1));
                    }
                    let v = s.forward(View::Ar, &vec![0; rows], pos, rows, logits)?;
                    passes.push((v, rows));
                    if let Some(p) = sampling {
                        for (out, n) in &passes {
                            for row in 0..*n {
                                std::hint::black_box(out.distribution(row, p));
                            }
                        }
                    }
                    Ok(())
                };
                // Untimed: the first run builds the graphs; on CUDA the
                // second finds them unchanged and captures them. What the
                // two cost beyond two steps is a fresh shape's extra cost.
                let t = Instant::now();
                step(self)?;
                step(self)?;
                let first_two = t.elapsed().as_secs_f64();
                step(self)?;
                let mut times = Vec::new();
                let t0 = Instant::now();
                while times.len() < MIN_REPS
                    || (times.len() < MAX_REPS && t0.elapsed().as_secs_f64() < SAMPLE_SECONDS)
                {
                    let t = Instant::now();
                    step(self)?;
                    times.push(t.elapsed().as_secs_f64());
                }
                times.sort_by(f64::total_cmp);
                let median = times[times.len() / 2];
                if pos == 0 {
                    at_start = median;
                }
                samples.push((rows, pos, median));
                // The last position's: at the first, the run also made the
                // scheduler, which happens once.
                fresh.push((rows, (first_two - 2.0 * median).max(0.0)));
            }
            // A step's cost per row falls with more rows while the passes
            // are bound by latency (a GPU), and stops falling once they are
            // bound by arithmetic (a CPU): then larger steps cannot pay if
            // this one cannot.
            let per_row = at_start / rows as f64;
            if rows == 1 {
                ar_cost = at_start;
            } else if per_row > ar_cost && per_row > 0.9 * last_per_row {
                break;
            }
            if rows > 1 {
                last_per_row = per_row;
            }
        }
        let mut costs = StepCosts::from_samples(&samples);
        for (rows, seconds) in fresh {
            costs.set_fresh(rows, seconds);
        }
        if self.on_gpu && !self.exact && sampling.is_none() {
            costs.set_windows(self.cache.n_ctx);
        }
        costs.drop_dominated(DOMINATED_MARGIN);
        Ok(costs)
    }

    /// Exact mode: AR-view decoding passes (one-token AR steps and verify
    /// passes) compute each row as a one-token pass does on every backend,
    /// so greedy Orthrus output is AR output bit for bit (on the CPU through
    /// the reference kernels, see [`Self::forward`]).
    /// Their attention takes `graph::attention`'s exact path over windows of
    /// [`SLOT_ALIGN`] slots. Their weight matmuls are whole where ggml-cuda
    /// has our matmul and it takes every weight of the model
    /// ([`CudaMatmul::BatchInvariant`], then on for the process), else groups
    /// of [`EXACT_COL_GROUP`] columns on ggml's own kernels (ours off: its
    /// 16-column products do not sum as ggml's one-column ones). The diffusion
    /// pass and the prompt keep the fast kernels. On a GPU it needs an f32
    /// cache; on the CPU, whose reference kernels compute each row alike
    /// whatever the batch, any cache does (with f32, the same exact
    /// attention path as a GPU's). Either way the model must have been
    /// loaded with [`crate::LoadOptions::exact`].
    pub fn set_exact(&mut self, on: bool) -> Result<(), EngineError> {
        if on && self.on_gpu && self.cache.ty != GgmlType::F32 {
            return Err(EngineError::Usage(format!(
                "exact decoding needs an f32 cache, not {} (--cache-type f32)",
                self.cache.ty.name()
            )));
        }
        if on && self.model.repacked {
            return Err(EngineError::Usage(
                "exact decoding needs the CPU weights in ggml's plain layout: load the model \
                 with exact on (LoadOptions::exact)"
                    .into(),
            ));
        }
        let ours_take_all = self.switches.cuda_kernels && self.model.matmuls_batch_invariant();
        let want = match (on, ours_take_all) {
            (_, false) if !self.switches.cuda_kernels => CudaMatmul::Ggml,
            (false, _) => CudaMatmul::Default,
            (true, true) => CudaMatmul::BatchInvariant,
            (true, false) => CudaMatmul::Ggml,
        };
        let now = set_cuda_matmul(&self.model.devices, want);
        self.exact_matmul = on && ours_take_all && now == Some(CudaMatmul::BatchInvariant);
        self.exact = on;
        self.forget_step_costs();
        Ok(())
    }

    /// Whether exact mode's weight matmuls are our batch-invariant ones
    /// (see [`Self::set_exact`]).
    pub fn exact_matmul(&self) -> bool {
        self.exact_matmul
    }

    /// The graph shape of a pass of `rows` rows at `pos0` (see [`Self::run`]).
    fn shape(
        &self,
        view: View,
        pos0: usize,
        rows: usize,
        n_out: usize,
        logits: Logits,
        decoding: bool,
    ) -> Shape {
        let exact = self.exact && decoding && view == View::Ar;
        // The exact attention path reads V transposed, as only an f32 cache
        // holds it; on the CPU the reference kernels make the rest exact.
        let exact_path = exact && self.cache.ty == GgmlType::F32;
        // Decoding graphs span the windows calibration chose for their rows
        // (on a GPU; see StepCosts::set_windows), other passes KV_WINDOW.
        let window = match &self.step_costs {
            Some(c) if decoding && !self.exact => c.window(rows),
            _ => KV_WINDOW,
        };
        let n_kv = if exact_path {
            // Within the allocation: slots are whole windows of SLOT_ALIGN.
            (pos0 + rows).next_multiple_of(SLOT_ALIGN)
        } else {
            (pos0 + rows).next_multiple_of(window).min(self.cache.n_ctx)
        };
        let col_group = match (exact, decoding) {
            (true, _) if self.exact_matmul => 0,
            // A group of 1 to 4 set by set_col_group, else 4.
            (true, _) if (1..=EXACT_COL_GROUP).contains(&self.col_group) => self.col_group,
            (true, _) => EXACT_COL_GROUP,
            (false, true) => self.col_group,
            (false, false) => 0,
        };
        let attention = if exact_path {
            Attention::Exact
        } else if self.cache.ty == GgmlType::F32 || self.switches.plain_attention {
            Attention::Plain
        } else {
            Attention::Fused
        };
        Shape {
            view,
            step: false,
            n_tokens: rows,
            mask_on_device: n_kv * rows >= self.device_mask_min,
            n_kv,
            n_out,
            logits,
            col_group,
            attention,
        }
    }

    /// The shape of a whole step of `rows` rows at `pos0` (see [`Self::step`]).
    fn step_shape(&self, pos0: usize, rows: usize) -> Shape {
        Shape {
            step: true,
            ..self.shape(View::Diffusion, pos0, rows, rows, Logits::None, true)
        }
    }

    /// What share of a fresh shape's extra cost (`StepCosts::fresh`) a
    /// decoding step of `rows` rows at `pos0` still pays: 0 when its graphs
    /// (a drafting step's one, or both views' as sampling runs it) are
    /// ready, 1 when they are not built;
    /// on a GPU, a half for each of the two runs before one is captured
    /// (see [`Kept::runs`]). `logits`: what of the logits the step's
    /// sampling takes.
    pub fn step_graphs_to_build(&self, rows: usize, pos0: usize, logits: Logits) -> f64 {
        if pos0 + rows > self.cache.n_ctx {
            return 0.0;
        }
        let shapes = if rows > 1 && self.fuses_steps(logits) {
            vec![self.step_shape(pos0, rows)]
        } else if rows > 1 {
            [View::Diffusion, View::Ar]
                .map(|v| self.shape(v, pos0, rows, rows, logits, true))
                .to_vec()
        } else {
            vec![self.shape(View::Ar, pos0, rows, rows, logits, true)]
        };
        let left: f64 = shapes
            .iter()
            .map(|shape| {
                self.graphs
                    .get(shape)
                    .map_or(1.0, |g| g.to_build(self.gpu_graphs(g.sched)))
            })
            .sum();
        left / shapes.len() as f64
    }

    fn gpu_graphs(&self, key: SchedKey) -> GpuGraphs {
        GpuGraphs {
            on: self.on_gpu,
            ours: self.ours_on_gpu,
            made: self.graphs_made.get(&key).copied().unwrap_or(0),
        }
    }

    /// The one pass behind `forward`, `forward_padded`, `step` and `prefill`.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        view: View,
        step: bool,
        tokens: &[u32],
        pos0: usize,
        n_out: usize,
        logits: Logits,
        decoding: bool,
        rows: usize,
    ) -> Result<PassOutput, EngineError> {
        let t = tokens.len();
        let end = pos0 + t;
        assert!(
            t > 0 && (1..=t).contains(&n_out),
            "bad batch: {t} tokens, {n_out} outputs"
        );
        // Rows of the graph: the batch, or padded to `rows` where that fits.
        let rows = if pos0 + rows <= self.cache.n_ctx {
            rows.max(t)
        } else {
            t
        };
        let graph_out = if rows > t { rows } else { n_out };
        if end > self.cache.n_ctx {
            return Err(EngineError::ContextFull {
                needed: end,
                n_ctx: self.cache.n_ctx,
            });
        }
        let hp = &self.model.hparams;
        if let Some(&bad) = tokens.iter().find(|&&id| id as usize >= hp.n_vocab) {
            return Err(EngineError::Usage(format!(
                "token id {bad} is outside the vocabulary of {}",
                hp.n_vocab
            )));
        }
        let exact = self.exact && decoding && view == View::Ar;
        let shape = if step {
            self.step_shape(pos0, rows)
        } else {
            self.shape(view, pos0, rows, graph_out, logits, decoding)
        };
        let (n_kv, attention) = (shape.n_kv, shape.attention);
        let key = match (step, decoding) {
            (true, _) => SchedKey::Step(rows),
            (false, true) => SchedKey::Decode(view, rows),
            (false, false) => SchedKey::Prompt,
        };
        if !self.graphs.contains_key(&shape) && self.graphs.len() >= MAX_GRAPHS {
            // A prompt's graph goes first, the least recently used: a
            // prompt's last chunk has a shape of its own, while decoding
            // cycles through a few, some rarely (a draft length auto mode
            // chose once in a while), and on a GPU a step whose graphs
            // were dropped builds and captures them again (milliseconds,
            // where a step of the bundled model takes 0.25-0.7).
            let oldest = self
                .graphs
                .iter()
                .min_by_key(|(_, g)| (g.sched != SchedKey::Prompt, g.used))
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.graphs.remove(&k);
            }
        }
        let new = !self.graphs.contains_key(&shape);
        if new {
            self.graphs_built += 1;
            let g = graph::build(self.model, self.cache, shape);
            self.graphs.insert(
                shape,
                Kept {
                    graph: g,
                    used: Instant::now(),
                    made: 0,
                    runs: 0,
                    sched: key,
                },
            );
        }
        self.sched(key)?;
        // A new graph for the scheduler's backend: one just built, or a
        // shape that prompts and decoding share, run on the other's.
        let fresh = new || self.graphs[&shape].sched != key;
        if fresh {
            *self.graphs_made.entry(key).or_default() += 1;
        }
        let gpu = self.gpu_graphs(key);
        let kept = self.graphs.get_mut(&shape).expect("inserted above");
        if fresh {
            (kept.sched, kept.runs, kept.made) = (key, 0, gpu.made);
        }
        // A run that builds, captures or allocates its graph afresh is no
        // sample of what a step costs.
        let allocating = !self.scheds[&key].holds(&kept.graph);
        let building = kept.start_run(gpu) || allocating;
        if building {
            self.graphs_built += 1;
        }
        let graph = &mut kept.graph;

        let ids: Vec<i32> = (0..rows).map(|j| tokens[j.min(t - 1)] as i32).collect();
        let pos: Vec<i32> = (pos0..pos0 + rows).map(|p| p as i32).collect();
        let slots: Vec<i64> = (pos0..pos0 + rows).map(|p| p as i64).collect();
        let causal = |j: usize| pos0 + j + 1;
        let visible = |j: usize| match view {
            View::Diffusion if j < t => end,
            _ => causal(j),
        };
        let f16 = graph::mask_type(attention) == Type::F16;
        let mask = |visible: &dyn Fn(usize) -> usize| match shape.mask_on_device {
            true => Mask::Visible((0..rows).map(|j| visible(j) as f32).collect()),
            false => Mask::new(f16, n_kv, rows, visible),
        };
        let (name, verify_name) = match shape.mask_on_device {
            true => (io::VISIBLE, io::VISIBLE_VERIFY),
            false => (io::MASK, io::MASK_VERIFY),
        };
        let masks = [
            Some((name, mask(&visible))),
            step.then(|| (verify_name, mask(&causal))),
        ];
        let mut inputs = vec![
            Input::I32(io::TOKENS, &ids),
            Input::I32(io::POS, &pos),
            Input::I64(io::SLOTS, &slots),
        ];
        inputs.extend(masks.iter().flatten().map(|(name, m)| m.input(name)));
        let mut argmax = vec![0i32; graph_out];
        let mut drafts = vec![0i32; if step { rows } else { 0 }];
        let mut out = PassOutput::default();
        let k = match logits {
            Logits::Top(k) => k,
            _ => 0,
        };
        let (mut top_ids, mut top_logits) = (vec![0i32; graph_out * k], vec![0f32; graph_out * k]);
        if logits == Logits::All {
            out.logits = vec![0.0; graph_out * hp.n_vocab];
        }
        {
            let mut outputs = vec![Output::I32(io::ARGMAX, &mut argmax)];
            match logits {
                Logits::None => {}
                Logits::All => outputs.push(Output::F32(io::LOGITS, &mut out.logits)),
                Logits::Top(_) => {
                    outputs.push(Output::I32(io::TOP_IDS, &mut top_ids));
                    outputs.push(Output::F32(io::TOP_LOGITS, &mut top_logits));
                }
            }
            if step {
                outputs.push(Output::I32(io::DRAFTS, &mut drafts));
            }
            let sched = self.scheds.get_mut(&key).expect("made above");
            sched.set_reference_kernels(exact);
            if sched.run(graph, &inputs, &mut outputs)? && self.on_gpu {
                // Every graph of this scheduler moved: each runs uncaptured,
                // then is captured again, as if new; this one has had its
                // first such run (counted as building: it allocated).
                for (s, g) in self.graphs.iter_mut() {
                    if g.sched == key {
                        g.runs = if *s == shape { 1 } else { 0 };
                    }
                }
            }
        }
        if rows > t {
            // All rows were computed; the batch's last n_out are asked for.
            argmax = argmax[t - n_out..t].to_vec();
            if logits == Logits::All {
                out.logits = out.logits[(t - n_out) * hp.n_vocab..t * hp.n_vocab].to_vec();
            }
            top_ids = top_ids[(t - n_out) * k..t * k].to_vec();
            top_logits = top_logits[(t - n_out) * k..t * k].to_vec();
        }
        out.top = top_ids
            .iter()
            .zip(&top_logits)
            .map(|(&id, &l)| (id as u32, l))
            .collect();
        out.argmax = argmax.into_iter().map(|x| x as u32).collect();
        // The drafts: of the rows but the last (the next pass's tokens).
        out.drafts = drafts.iter().take(t - 1).map(|&x| x as u32).collect();
        Ok(out)
    }

    /// Runs the AR view over a prompt at positions `pos0..` in chunks of
    /// `n_batch`, with the fast kernels (both decoding modes share the
    /// prompt's cache); returns the last row's output.
    pub fn prefill(
        &mut self,
        tokens: &[u32],
        pos0: usize,
        logits: impl Into<Logits>,
    ) -> Result<PassOutput, EngineError> {
        let logits = logits.into();
        let mut last = PassOutput::default();
        let mut pos = pos0;
        for chunk in tokens.chunks(self.n_batch) {
            last = self.run(View::Ar, false, chunk, pos, 1, logits, false, chunk.len())?;
            pos += chunk.len();
        }
        Ok(last)
    }
}

/// Top-k sampling of at most this many tokens takes a pass's top logits
/// from the backend (`Logits::Top`), larger or no top-k all of them.
const TOP_K_FROM_BACKEND: usize = 1024;
/// ... from a vocabulary of at least this many tokens: below, copying a
/// row and choosing on the host is the quicker. On the H100 (1.7B random
/// weights, top-k 40, 16 drafts) sampled steps took 4.08 ms taking the top
/// 40 from the GPU and 14.4-15.0 copying all 151936 logits, AR steps 1.53
/// and 1.83 ms; on the bundled model's 4160, AR steps 0.327 and 0.240.
const TOP_K_MIN_VOCAB: usize = 32768;

/// An attention mask in the graph's type (converting a 16-row mask of a 32K
/// cache from f32 cost about 1 ms of CPU a pass, before the GPU began), or
/// each row's visible slots for a mask made in the graph.
enum Mask {
    F16(Vec<half::f16>),
    F32(Vec<f32>),
    Visible(Vec<f32>),
}

impl Mask {
    fn new(f16: bool, n_kv: usize, rows: usize, visible: &dyn Fn(usize) -> usize) -> Mask {
        if f16 {
            Mask::F16(causal_mask(
                n_kv,
                rows,
                visible,
                half::f16::ZERO,
                half::f16::NEG_INFINITY,
            ))
        } else {
            Mask::F32(causal_mask(n_kv, rows, visible, 0.0f32, f32::NEG_INFINITY))
        }
    }

    fn input<'a>(&'a self, name: &'a str) -> Input<'a> {
        match self {
            Mask::F16(m) => Input::F16(name, m),
            Mask::F32(m) | Mask::Visible(m) => Input::F32(name, m),
        }
    }
}

/// Rows of `n_kv` slots, row j open (`zero`) on its first `visible(j)` slots
/// and closed (`closed`) after them.
fn causal_mask<T: Copy>(
    n_kv: usize,
    rows: usize,
    visible: impl Fn(usize) -> usize,
    zero: T,
    closed: T,
) -> Vec<T> {
    let mut mask = vec![closed; n_kv * rows];
    for (j, row) in mask.chunks_mut(n_kv).enumerate() {
        row[..visible(j)].fill(zero);
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_captures_stay_in_our_ggml_cuda_until_newer_ones_push_them_out() {
        // Used within the idle limit: captured, whatever ggml-cuda it is.
        assert!(!capture_dropped(false, false, 1000));
        // Idle: a plain ggml-cuda drops it.
        assert!(capture_dropped(true, false, 0));
        // Ours keeps it while it is among the most recently used.
        assert!(!capture_dropped(true, true, 0));
        let room = backend_layout::GPU_GRAPHS_KEPT - MAX_GRAPHS as u64;
        assert!(!capture_dropped(true, true, room));
        assert!(capture_dropped(true, true, room + 1));
    }
}
