//! How many tokens an Orthrus step drafts in `--mode auto`: before each step,
//! the draft length `n` in `0..=max` (0: a plain AR step) that maximises the
//! expected committed tokens per second, `(1 + E[accepted(n)]) / cost(n)`.
//!
//! - [`StepCosts`]: what a step costs on this device and model, by the rows
//!   of its passes and the context length; calibrated by the session
//!   (`Session::step_costs`, and `step_costs_for` sampled steps), refined
//!   here from the steps decoding times.
//! - [`Acceptance`]: running per-position acceptance estimates of one
//!   generation.
//! - [`History`]: what a generation leaves the next: the estimates and the
//!   probe and exploring budgets.
//! - [`DraftPolicy`]: chooses `n` from both, and now and then re-probes an
//!   AR stretch with a short draft, so that a bad stretch does not lock
//!   drafting out for the rest of the generation.
//!
//! The choice never changes the output: verification is lossless whatever
//! the draft length, and the choice depends on past steps only.

use crate::sampling::Rng;
use crate::session::KV_WINDOW;

/// Rows of the step graphs auto mode uses for a model of `block` tokens per
/// block: 1 (an AR step), the powers of two below `block`, and `block`. A
/// step of `n` drafts runs through the smallest of them that holds `n + 1`
/// rows, the extra rows masked out (`Session::forward_padded`), so that a
/// few graphs serve every length (building one, and on CUDA capturing it,
/// costs more than a step).
pub fn bucket_rows(block: usize) -> Vec<usize> {
    let mut rows: Vec<usize> = std::iter::successors(Some(1usize), |r| Some(r * 2))
        .take_while(|&r| r < block)
        .collect();
    rows.push(block.max(1));
    rows.dedup();
    rows
}

/// Seconds of one step by graph rows: the diffusion and verify passes of
/// `rows` rows as greedy decoding runs them (one graph; rows = 1: the
/// one-token AR pass), or as sampling does (two graphs, logits to the host),
/// linear in the position the step starts at (attention reads the whole
/// context).
#[derive(Clone, Debug, Default)]
pub struct StepCosts {
    buckets: Vec<BucketCost>,
    /// The farthest position calibrated.
    far: usize,
    /// The cache's slots, once windows are set: no graph reads past them.
    n_ctx: Option<usize>,
}

#[derive(Clone, Copy, Debug)]
struct BucketCost {
    rows: usize,
    /// Seconds at position 0, and per position of context.
    base: f64,
    per_position: f64,
    /// Seconds a step of these rows costs beyond `base` when its graphs
    /// are not built yet (for each window of context positions): building
    /// them, and on CUDA running them uncaptured and capturing them.
    fresh: f64,
    /// Cache slots a window of its graphs spans (see [`StepCosts::set_windows`]).
    window: usize,
}

impl BucketCost {
    /// Seconds at `position`.
    fn at(&self, position: usize) -> f64 {
        self.base + self.per_position * position as f64
    }
}

/// A drafting size that costs within this share of a larger one is not
/// used (see [`StepCosts::drop_dominated`]): about what calibration's
/// medians vary by.
pub(crate) const DOMINATED_MARGIN: f64 = 0.03;

/// How much of the log of a timed step's ratio to its estimate one step
/// moves the estimate: about 30 steps to follow a lasting change, so that a
/// burst of load on the machine does not swing the choice.
const COST_RATE: f64 = 0.03;
/// A timed step is taken as at most this many times (or at least its
/// inverse) its estimate: one step stalled by the OS must not count much.
const COST_CLAMP: f64 = 2.0;

impl StepCosts {
    /// Costs from timed samples `(rows, position, seconds)`: per rows, a line
    /// through its samples at the lowest and highest positions (the mean at
    /// each); the slope is 0 when all of them are at one position.
    pub fn from_samples(samples: &[(usize, usize, f64)]) -> StepCosts {
        let mut rows: Vec<usize> = samples.iter().map(|s| s.0).collect();
        rows.sort_unstable();
        rows.dedup();
        let buckets = rows
            .into_iter()
            .map(|r| {
                let mine: Vec<(usize, f64)> = samples
                    .iter()
                    .filter(|s| s.0 == r)
                    .map(|s| (s.1, s.2.max(1e-9)))
                    .collect();
                let lo = mine.iter().map(|s| s.0).min().unwrap_or(0);
                let hi = mine.iter().map(|s| s.0).max().unwrap_or(0);
                let mean_at = |p: usize| {
                    let at: Vec<f64> = mine.iter().filter(|s| s.0 == p).map(|s| s.1).collect();
                    at.iter().sum::<f64>() / at.len() as f64
                };
                let (y0, y1) = (mean_at(lo), mean_at(hi));
                let per_position = if hi > lo {
                    ((y1 - y0) / (hi - lo) as f64).max(0.0)
                } else {
                    0.0
                };
                BucketCost {
                    rows: r,
                    base: (y0 - per_position * lo as f64).max(1e-9),
                    per_position,
                    fresh: 0.0,
                    window: KV_WINDOW,
                }
            })
            .collect();
        let far = samples.iter().map(|s| s.1).max().unwrap_or(0);
        let mut costs = StepCosts {
            buckets,
            far,
            n_ctx: None,
        };
        costs.bound_ar();
        costs
    }

    /// A drafting step runs a pass of more rows than a one-token step, and
    /// a diffusion pass besides, so a one-token step that reads dearer than
    /// one (at the start of the cache or as far as calibration went) was
    /// timed in a stall: its line is scaled down to that bound. Auto mode
    /// would otherwise draft for good and seldom time an AR step that could
    /// correct it.
    fn bound_ar(&mut self) {
        let Some(ar) = self.buckets.iter().position(|b| b.rows == 1) else {
            return;
        };
        let a = self.buckets[ar];
        let scale = self
            .buckets
            .iter()
            .filter(|b| b.rows > 1)
            .flat_map(|b| [0, self.far].map(|p| b.at(p) / a.at(p)))
            .fold(1.0, f64::min);
        let b = &mut self.buckets[ar];
        b.base *= scale;
        b.per_position *= scale;
    }

    /// Drops each drafting size that costs within `margin` of the next
    /// larger size kept, at the start of the cache and as far as
    /// calibration went: the larger drafts more for about the same, so the
    /// smaller could save at most `margin` a step, while each size auto
    /// mode uses builds (on a GPU: captures) its graphs in each KV window,
    /// at many steps' cost. (Where passes are bound by latency, 2, 4 and 8
    /// rows often cost the same to a percent.)
    pub fn drop_dominated(&mut self, margin: f64) {
        let far = self.far;
        let mut kept: Vec<BucketCost> = Vec::new();
        for b in self.buckets.iter().rev() {
            let dominated = b.rows > 1
                && kept.last().is_some_and(|l| {
                    [0, far]
                        .iter()
                        .all(|&p| l.at(p) <= (1.0 + margin) * b.at(p))
                });
            if !dominated {
                kept.push(*b);
            }
        }
        kept.reverse();
        self.buckets = kept;
    }

    /// Sets each size's KV window, the slots that its graphs' attention
    /// reads in steps (a power of two times [`KV_WINDOW`], no larger than
    /// the span calibration timed): the window that costs least a step, reading half a
    /// window more of the cache than it needs on average (`per_position`
    /// a slot) against building its graphs once a window (`fresh`, shared
    /// by a window of steps of one token). Where a build costs many steps,
    /// as a small model's on a GPU, windows grow; where reading the cache
    /// costs more, they stay small. A CPU keeps [`KV_WINDOW`] (its builds
    /// cost little, see `Session::step_graphs_to_build`). `n_ctx`: the
    /// cache's slots, where every window ends.
    pub fn set_windows(&mut self, n_ctx: usize) {
        self.n_ctx = Some(n_ctx);
        // Beyond the timed span the cost per position is a guess (0 where
        // timing noise flattened it).
        let largest = (self.far + 1).next_power_of_two().max(KV_WINDOW);
        for b in &mut self.buckets {
            let cost = |w: usize| b.per_position * w as f64 / 2.0 + b.fresh / w as f64;
            b.window = std::iter::successors(Some(KV_WINDOW), |w| Some(w * 2))
                .take_while(|&w| w <= largest)
                .min_by(|x, y| cost(*x).total_cmp(&cost(*y)))
                .unwrap_or(KV_WINDOW);
        }
    }

    /// Takes the KV windows `other` set (see [`Self::set_windows`]): costs
    /// measured for other steps of the same graphs.
    pub fn copy_windows(&mut self, other: &StepCosts) {
        self.n_ctx = other.n_ctx;
        for b in &mut self.buckets {
            b.window = other.window(b.rows);
        }
    }

    /// The KV window of a step of `rows` rows: its size's, or the next
    /// larger size's (a length padded to none of them), else the largest's.
    pub fn window(&self, rows: usize) -> usize {
        self.buckets
            .iter()
            .find(|b| b.rows >= rows)
            .or(self.buckets.last())
            .map_or(KV_WINDOW, |b| b.window)
    }

    /// Where a step of `rows` rows at `position` runs: the position whose
    /// calibrated cost it has (its graph reads as many cache slots as one
    /// there in windows of [`KV_WINDOW`]: calibration's), and the tokens
    /// left before its window no longer holds it.
    fn layout(&self, rows: usize, position: usize) -> (usize, f64) {
        let end = position + rows;
        let within = |n: usize| self.n_ctx.map_or(n, |c| n.min(c.max(end)));
        let n_kv = within(end.next_multiple_of(self.window(rows)));
        let cost_position = position + n_kv - within(end.next_multiple_of(KV_WINDOW));
        (cost_position, (n_kv + 1 - end) as f64)
    }

    /// The rows that have a cost, ascending.
    pub fn rows(&self) -> impl Iterator<Item = usize> + '_ {
        self.buckets.iter().map(|b| b.rows)
    }

    /// Estimated seconds of a step of `rows` rows at `position`, or None if
    /// those rows have no cost.
    pub fn cost(&self, rows: usize, position: usize) -> Option<f64> {
        self.buckets
            .iter()
            .find(|b| b.rows == rows)
            .map(|b| b.at(position))
    }

    /// Sets the extra seconds of a step of `rows` whose graphs are not built
    /// (see [`BucketCost::fresh`]).
    pub fn set_fresh(&mut self, rows: usize, seconds: f64) {
        if let Some(b) = self.buckets.iter_mut().find(|b| b.rows == rows) {
            b.fresh = seconds.max(0.0);
        }
    }

    /// The extra seconds of a step of `rows` whose graphs are not built.
    pub fn fresh(&self, rows: usize) -> f64 {
        self.buckets
            .iter()
            .find(|b| b.rows == rows)
            .map_or(0.0, |b| b.fresh)
    }

    /// `(rows, seconds)` of every step size at `position`.
    pub fn table(&self, position: usize) -> Vec<(usize, f64)> {
        self.buckets
            .iter()
            .map(|b| (b.rows, b.at(position)))
            .collect()
    }

    /// Refines the costs from a step of `rows` rows that took `seconds` at
    /// `position`: the estimate moves a little towards it, in ratio (the
    /// context slope keeps its share). An AR step moves every size's cost
    /// alike: AR steps are the clock by which the machine's speed is
    /// followed (a CPU's moved by half between runs, and within one), and
    /// moving AR's alone, while the drafting sizes went untimed, made
    /// drafts that cannot pay look as if they could. A drafting step moves
    /// its own size's, which corrects a size calibrated too cheap.
    pub fn observe(&mut self, rows: usize, position: usize, seconds: f64) {
        self.observe_at_rate(rows, position, seconds, COST_RATE, rows == 1);
    }

    fn observe_at_rate(
        &mut self,
        rows: usize,
        position: usize,
        seconds: f64,
        rate: f64,
        every_size: bool,
    ) {
        let Some(b) = self.buckets.iter().find(|b| b.rows == rows) else {
            return;
        };
        let estimate = b.at(position);
        if !(seconds > 0.0 && estimate > 0.0) {
            return;
        }
        let ratio = (seconds / estimate).clamp(1.0 / COST_CLAMP, COST_CLAMP);
        let f = ratio.powf(rate);
        for b in &mut self.buckets {
            if every_size || b.rows == rows {
                b.base *= f;
                b.per_position *= f;
            }
        }
        self.bound_ar();
    }
}

/// Prior acceptance rate of the first draft position at the start of a
/// generation: optimistic, so that a model whose drafts are accepted drafts
/// from its first step, while one rejection is enough to pull it down.
const PRIOR_RATE: f64 = 0.8;
/// Weight of the prior, in observations.
const PRIOR_WEIGHT: f64 = 1.0;
/// Each drafting step multiplies the earlier recent observations by this:
/// the estimates follow about the last 7 steps (code, then prose).
const DECAY: f64 = 0.85;
/// Each AR step multiplies the recent observations by this, so that in a
/// stretch of AR steps the estimates drift back to the long-run ones
/// (halfway in about 4 steps): a model whose drafts were often accepted
/// drafts again soon after a bad stretch (prose, then code), one whose
/// drafts rarely are keeps to AR steps and probes.
const AR_DECAY: f64 = 0.85;
/// Each drafting step multiplies the earlier long-run observations by this
/// (about the last 20 drafting steps of the session): after a good stretch
/// the tries to return during a bad one stop within about 20.
const LONG_DECAY: f64 = 0.95;
/// While some first draft was accepted in the long run (this much of a
/// count at position 0) and the long-run rate of position 0 is at least
/// EXPLORE_RATE, position 0's long-run rate is drawn from its posterior when
/// a step is chosen (Thompson sampling) instead of taken at its mean: a
/// generation that began badly otherwise keeps to AR steps and never
/// learns that the drafts became good (prose, then code), while a model
/// whose drafts are rarely accepted (random weights) does not explore.
const EXPLORE_AFTER: f64 = 1.0;
const EXPLORE_RATE: f64 = 0.3;
/// The posteriors' counts are multiplied by this: exploration narrower than
/// the honest posterior, which in replays cost more where drafts are
/// rarely accepted.
const EXPLORE_CONCENTRATION: f64 = 2.0;

/// Discounted counts of accepted and rejected drafts by position.
#[derive(Clone, Debug, Default)]
struct Counts {
    accepted: Vec<f64>,
    rejected: Vec<f64>,
}

impl Counts {
    fn decay(&mut self, f: f64) {
        for (a, r) in self.accepted.iter_mut().zip(&mut self.rejected) {
            *a *= f;
            *r *= f;
        }
    }

    fn record(&mut self, drafted: usize, accepted: usize, decay: f64) {
        if self.accepted.len() < drafted {
            self.accepted.resize(drafted, 0.0);
            self.rejected.resize(drafted, 0.0);
        }
        self.decay(decay);
        for a in &mut self.accepted[..accepted.min(drafted)] {
            *a += 1.0;
        }
        if accepted < drafted {
            self.rejected[accepted] += 1.0;
        }
    }

    fn counts(&self, i: usize) -> (f64, f64) {
        let a = self.accepted.get(i).copied().unwrap_or(0.0);
        let r = self.rejected.get(i).copied().unwrap_or(0.0);
        (a, r)
    }

    /// Position i's rate, given its prior: the posterior mean.
    fn rate(&self, i: usize, prior: f64) -> f64 {
        let (a, r) = self.counts(i);
        (a + PRIOR_WEIGHT * prior) / (a + r + PRIOR_WEIGHT)
    }

    /// Position i's rate drawn from its (concentrated) posterior.
    fn sample(&self, i: usize, prior: f64, rng: &mut Rng) -> f64 {
        let (a, r) = self.counts(i);
        let p = prior.clamp(0.01, 0.99);
        let k = EXPLORE_CONCENTRATION;
        rng.beta(
            k * (a + PRIOR_WEIGHT * p),
            k * (r + PRIOR_WEIGHT * (1.0 - p)),
        )
    }
}

/// Running estimates of `rate(i)`: the probability that draft `i` (0-based)
/// is accepted once drafts `0..i` were. A step that drafted `n` and accepted
/// `a` observes positions `0..a` accepted and, if `a < n`, position `a`
/// rejected; later positions are not observed. Two sets of counts: recent
/// ones (forgotten quickly, and also during AR steps) and long-run ones. A
/// position's recent estimate has its long-run one as prior; a position's
/// long-run estimate has the one before it as prior (position 1: the prior
/// rate), so a long draft is judged by the short ones until it has data of
/// its own.
#[derive(Clone, Debug, Default)]
pub struct Acceptance {
    recent: Counts,
    long: Counts,
}

impl Acceptance {
    pub fn record(&mut self, drafted: usize, accepted: usize) {
        if drafted == 0 {
            self.recent.decay(AR_DECAY);
            return;
        }
        self.recent.record(drafted, accepted, DECAY);
        self.long.record(drafted, accepted, LONG_DECAY);
    }

    /// `rate(i)` for `i` in `0..n`.
    pub fn rates(&self, n: usize) -> Vec<f64> {
        self.rates_with(n, None)
    }

    /// `rate(i)` for `i` in `0..n`, position 0's long-run rate drawn from
    /// its posterior with `rng` while exploring (see [`EXPLORE_AFTER`]).
    fn rates_with(&self, n: usize, mut rng: Option<&mut Rng>) -> Vec<f64> {
        let explore =
            self.long.counts(0).0 >= EXPLORE_AFTER && self.long.rate(0, PRIOR_RATE) >= EXPLORE_RATE;
        let mut long = PRIOR_RATE;
        (0..n)
            .map(|i| {
                // Position 1 starts again from the prior: that first drafts
                // are often rejected says little of the second once the
                // first was accepted (prose, where the first fails, then a
                // run of code).
                let prior = if i == 1 { PRIOR_RATE } else { long };
                long = match rng.as_deref_mut() {
                    Some(rng) if explore && i == 0 => self.long.sample(i, prior, rng),
                    _ => self.long.rate(i, prior),
                };
                self.recent.rate(i, long)
            })
            .collect()
    }

    /// E[accepted(k)] for k in `0..=n`: the sum over positions of the
    /// probability that every draft up to it is accepted.
    pub fn expected_accepted(&self, n: usize) -> Vec<f64> {
        expected(&self.rates(n))
    }
}

fn expected(rates: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0];
    let mut all = 1.0;
    for r in rates {
        all *= r;
        out.push(out.last().copied().unwrap_or(0.0) + all);
    }
    out
}

/// What one step runs: `drafts` drafted tokens, through graphs of `rows` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    pub drafts: usize,
    pub rows: usize,
}

/// A drafting size is used only where, with every draft accepted, it
/// would beat AR steps by this share: closer than that, errors in the step
/// costs decide whether it pays. On this 2-core CPU a 2-row step of the
/// bundled model costs 2.5-3 AR steps, but the costs auto held put it at
/// 1.9-4.5 across ten runs, and at 1.9 (a best case of 5%) auto drafted now
/// and then at a loss.
const MIN_BEST_GAIN: f64 = 0.25;

/// Long-run observations of the first draft position at which a graph
/// build is shared by half the tokens left in its KV window (all of them as
/// observations grow, none before the first: the step that builds pays all
/// of it). Spread over the whole window from the first step, builds chosen
/// on the prior rate were paid for by one or two steps: replaying the H200
/// bench's first generations on random weights (where AR steps are the
/// faster mode), auto came to 0.940, 0.956 and 0.937 of AR, and to 0.974,
/// 0.974 and 0.965 with this (the same from 5 to 15 observations).
const BUILD_EVIDENCE: f64 = 8.0;

/// Share of the AR steps' time auto mode may spend re-probing: a probe is a
/// short draft whose expected loss against an AR step is paid from a budget
/// that every AR step adds this share of its cost to.
const PROBE_SHARE: f64 = 0.01;

/// Share of the steps' time auto mode may spend exploring: a step that the
/// drawn rate chose (see [`EXPLORE_AFTER`]) where the mean rates would
/// choose another pays its expected loss against that one from a budget
/// that every step adds this share of its cost to. Unbounded, exploring
/// drafted 14 of 50 steps where drafts were dear (the 8B configuration
/// after a 32K prompt on the H200: 0.90 of AR); at 2% the 8B after an 8K
/// prompt still drafted 5 of 59 (0.948), and in replays 1% did as well on
/// the shifting generations and better where drafts are dear.
const EXPLORE_SHARE: f64 = 0.01;

/// Share of the drafting steps' time auto mode may spend checking AR's
/// cost: an AR step among drafting ones is paid from a budget that every
/// drafting step adds this share of its cost to, once the budget covers its
/// expected loss against drafting. AR's cost is otherwise timed only while
/// AR steps are chosen, so one calibrated too high would never be corrected.
const CHECK_SHARE: f64 = 0.005;
/// Steps since AR's cost was last timed before an AR check may be paid
/// for: where drafting is barely better, the checks' expected loss is near
/// zero, and unbounded they came in runs (a replay of the bundled model's
/// recorded generations lost 6% to them). A check records no acceptance
/// (an AR step's decay of the recent estimates cost that replay 1%).
const CHECK_AFTER: usize = 128;
/// Checks in a row while they build graphs instead of timing a step.
const CHECK_TRIES: usize = 3;
/// How far one check's timing moves AR's cost (see [`COST_RATE`]).
const CHECK_RATE: f64 = 0.3;

/// What one generation's policy leaves the next in a session: a model
/// whose drafts are rarely accepted should not pay for a long first draft
/// in every generation, nor for a probe in every short one.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub acceptance: Acceptance,
    /// Seconds of expected loss re-probing and exploring may still spend
    /// (below zero when such steps took longer than expected).
    probe_budget: f64,
    explore_budget: f64,
    check_budget: f64,
    /// Steps since an AR step was timed.
    untimed_ar: usize,
}

/// Which budget paid for a step auto mode would not otherwise take.
#[derive(Clone, Copy, Debug)]
enum Budget {
    Probe,
    Explore,
    Check,
}

/// The draft length of every step of one generation in auto mode.
#[derive(Clone, Debug)]
pub struct DraftPolicy {
    costs: StepCosts,
    acceptance: Acceptance,
    probe_budget: f64,
    explore_budget: f64,
    check_budget: f64,
    untimed_ar: usize,
    /// The last probe, explored step or AR check, the cost it was charged at and the
    /// budget that paid, until it reports.
    charged: Option<(Choice, f64, Budget)>,
    /// Draws the explored rates (the output never depends on them).
    rng: Rng,
}

impl DraftPolicy {
    /// A policy starting from `costs` and what the session's previous
    /// generation left (see [`Self::into_parts`]).
    pub fn new(costs: StepCosts, history: History) -> DraftPolicy {
        DraftPolicy {
            costs,
            acceptance: history.acceptance,
            probe_budget: history.probe_budget,
            explore_budget: history.explore_budget,
            check_budget: history.check_budget,
            untimed_ar: history.untimed_ar,
            charged: None,
            rng: Rng::new(0x5eed),
        }
    }

    /// The step to run next, drafting at most `max_drafts` tokens, at
    /// `position` (tokens in the cache); `to_build(rows)`: the share of its
    /// fresh cost (see [`StepCosts::fresh`]) a step of `rows` rows still
    /// pays at this position, 0 when its graphs are ready (built, and on a
    /// GPU captured).
    pub fn choose(
        &mut self,
        max_drafts: usize,
        position: usize,
        to_build: &dyn Fn(usize) -> f64,
    ) -> Choice {
        let ar = Choice { drafts: 0, rows: 1 };
        let at = |rows| self.costs.layout(rows, position).0;
        let Some(ar_cost) = self.costs.cost(1, at(1)) else {
            return ar;
        };
        let candidates: Vec<(Choice, f64)> = self
            .costs
            .rows()
            .filter(|&r| r >= 2 && max_drafts > 0)
            .filter_map(|rows| {
                let drafts = (rows - 1).min(max_drafts);
                let cost = self.costs.cost(rows, at(rows))?;
                Some((Choice { drafts, rows }, cost))
            })
            .collect();
        // Where no draft could beat AR steps by MIN_BEST_GAIN even if all
        // were accepted (a CPU), an AR step, without the sums below (about
        // 1% of the bundled model's step on a CPU).
        // Whether a step, every draft accepted, beats AR steps by `gain`.
        let beats_ar_by = |&(c, cost): &(Choice, f64), gain: f64| {
            cost * (1.0 + gain) < (c.drafts + 1) as f64 * ar_cost
        };
        if !candidates.iter().any(|c| beats_ar_by(c, MIN_BEST_GAIN)) {
            self.explore_budget += EXPLORE_SHARE * ar_cost;
            self.probe_budget += PROBE_SHARE * ar_cost;
            return ar;
        }
        let mean = expected(&self.acceptance.rates(max_drafts));
        let drawn = expected(&self.acceptance.rates_with(max_drafts, Some(&mut self.rng)));
        // Building a length's graphs is paid once for the steps that use
        // them until the KV window moves on (the session keeps them across
        // generations): per step, the build's share of the tokens left in
        // the window that the step commits. (Unshared, a build of 4.5 AR steps' time for 60 tokens
        // left made a single draft of the 8B after an 8K prompt look free.)
        // A drafting length's build is shared only as far as the estimates
        // rest on observations (see BUILD_EVIDENCE): one chosen on the prior
        // may be dropped after its first step. AR steps' is shared by the
        // whole window: every generation takes them once drafting stops
        // paying. (Scaled as a drafting size's, an AR build was charged to
        // a single token before any draft was seen, and could make a draft
        // at a loss look the better step.)
        let (a0, r0) = self.acceptance.long.counts(0);
        let observed = (a0 + r0) / (a0 + r0 + BUILD_EVIDENCE);
        let left = |rows| {
            let share = if rows == 1 { 1.0 } else { observed };
            (self.costs.layout(rows, position).1 * share).max(1.0)
        };
        let build: Vec<(usize, f64)> = std::iter::once(1)
            .chain(candidates.iter().map(|(c, _)| c.rows))
            .map(|rows| (rows, to_build(rows) * self.costs.fresh(rows)))
            .collect();
        let build_of = |rows: usize| build.iter().find(|b| b.0 == rows).map_or(0.0, |b| b.1);
        let build_share = |rows: usize, tokens: f64| build_of(rows) * tokens / left(rows);
        // The step of most expected tokens a second, and that rate.
        let best_by = |expected: &[f64]| {
            let mut best = (ar, 1.0 / (ar_cost + build_share(1, 1.0)));
            for &(c, cost) in &candidates {
                let tokens = 1.0 + expected[c.drafts];
                let rate = tokens / (cost + build_share(c.rows, tokens));
                if rate > best.1 {
                    best = (c, rate);
                }
            }
            best
        };
        let best = best_by(&mean);
        // A step's cost, with building its graphs where they are not ready.
        let with_fresh = |c: Choice, cost: f64| {
            if c == ar {
                cost
            } else {
                cost + build_of(c.rows)
            }
        };
        let step_cost = |c: Choice| {
            let cost = candidates
                .iter()
                .find(|x| x.0 == c)
                .map_or(ar_cost, |x| x.1);
            with_fresh(c, cost)
        };
        self.explore_budget += EXPLORE_SHARE * step_cost(best.0);
        // Exploring: the drawn rate chose another step. It costs the time
        // beyond what the mean's choice takes for the tokens it is expected
        // to commit.
        let explored = best_by(&drawn).0;
        if explored != best.0 {
            let cost = step_cost(explored);
            let loss = cost - (1.0 + mean[explored.drafts]) / best.1;
            if loss <= self.explore_budget {
                self.explore_budget -= loss.max(0.0);
                self.charged = Some((explored, cost, Budget::Explore));
                return explored;
            }
        }
        if best.0 != ar {
            // Drafting: now and then an AR step, to time it (see CHECK_SHARE);
            // it costs the time beyond what the best step takes for a token.
            self.check_budget += CHECK_SHARE * step_cost(best.0);
            let cost = ar_cost + build_of(1);
            let loss = cost - 1.0 / best.1;
            if self.untimed_ar >= CHECK_AFTER && loss <= self.check_budget {
                self.check_budget -= loss.max(0.0);
                self.charged = Some((ar, cost, Budget::Check));
                return ar;
            }
            return best.0;
        }
        // An AR step: it adds to the probe budget; the cheapest draft that
        // could pay (at full acceptance) is tried once the budget covers its
        // expected loss against AR steps. A probe is a step or two, so a
        // shape whose graphs it would build pays for building them too
        // (where a chosen length pays once for the steps that follow).
        self.probe_budget += PROBE_SHARE * ar_cost;
        let Some((probe, cost)) = candidates
            .iter()
            .filter(|c| beats_ar_by(c, 0.0))
            .map(|&(c, cost)| (c, with_fresh(c, cost)))
            .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.rows.cmp(&b.0.rows)))
        else {
            return ar;
        };
        // Judged at the drawn rates (while exploring), charged at least the
        // loss at the mean ones: a probe the draw made look free still
        // spends the budget. (Charged the drawn loss, such probes made auto
        // 0.964 of AR in exploring_costs_little_where_drafts_are_dear.)
        let loss = cost - (1.0 + drawn[probe.drafts]) * ar_cost;
        let mean_loss = cost - (1.0 + mean[probe.drafts]) * ar_cost;
        if loss <= self.probe_budget {
            self.probe_budget -= loss.max(mean_loss).max(0.0);
            self.charged = Some((probe, cost, Budget::Probe));
            return probe;
        }
        ar
    }

    /// What the step `choice` accepted, and its time when it was a fair
    /// sample of the step's cost (None when it also built a graph).
    pub fn report(
        &mut self,
        choice: Choice,
        position: usize,
        accepted: usize,
        seconds: Option<f64>,
    ) {
        let check = matches!(self.charged, Some((c, _, Budget::Check)) if c == choice);
        if !check {
            self.acceptance.record(choice.drafts, accepted);
        }
        // A probe or explored step that took longer than expected pays the
        // difference (on the H200 probes averaged 7.7 ms where 3.5 were
        // expected); one that was quicker gets nothing back, as the costs
        // may be off.
        if let (Some((c, charged, budget)), Some(s)) = (self.charged.take(), seconds) {
            if c == choice {
                let budget = match budget {
                    Budget::Probe => &mut self.probe_budget,
                    Budget::Explore => &mut self.explore_budget,
                    Budget::Check => &mut self.check_budget,
                };
                *budget -= (s - charged).max(0.0);
            }
        }
        if let Some(s) = seconds {
            // A check is a rare sample of AR's cost against drafting's: it
            // counts as ten, and moves AR's alone.
            let at = self.costs.layout(choice.rows, position).0;
            if check {
                self.costs.observe_at_rate(1, at, s, CHECK_RATE, false);
            } else {
                self.costs.observe(choice.rows, at, s);
            }
        }
        // A check that built graphs is tried again (on a GPU the third run
        // is timed), up to CHECK_TRIES, then waits for the next period.
        self.untimed_ar = match (choice.rows == 1 && seconds.is_some(), check) {
            (true, _) => 0,
            (false, true) if self.untimed_ar >= CHECK_AFTER + CHECK_TRIES - 1 => 0,
            _ => self.untimed_ar + 1,
        };
    }

    /// The costs, as refined by this generation's steps, and what it
    /// leaves the next generation.
    pub fn into_parts(self) -> (StepCosts, History) {
        let history = History {
            acceptance: self.acceptance,
            probe_budget: self.probe_budget,
            explore_budget: self.explore_budget,
            check_budget: self.check_budget,
            untimed_ar: self.untimed_ar,
        };
        (self.costs, history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A device where a step of r rows costs `step(r)` seconds, at any position.
    fn costs(step: impl Fn(usize) -> f64, block: usize) -> StepCosts {
        let samples: Vec<(usize, usize, f64)> = bucket_rows(block)
            .into_iter()
            .map(|r| (r, 0, step(r)))
            .collect();
        StepCosts::from_samples(&samples)
    }

    /// A GPU-like device: a pass of up to 16 rows costs about one of 1.
    fn gpu() -> StepCosts {
        costs(|r| if r == 1 { 1.0 } else { 2.0 + 0.02 * r as f64 }, 16)
    }

    /// Runs `steps` steps where draft i is accepted with probability
    /// `accept(step, i)` (given the ones before); returns the chosen lengths
    /// and the committed tokens per unit of cost.
    fn simulate(
        policy: &mut DraftPolicy,
        steps: usize,
        accept: impl Fn(usize, usize) -> f64,
        seed: u64,
    ) -> (Vec<usize>, f64) {
        let mut rng = crate::sampling::Rng::new(seed);
        let (mut tokens, mut time, mut lengths) = (0.0, 0.0, Vec::new());
        for s in 0..steps {
            let c = policy.choose(15, 100, &|_| 0.0);
            let accepted = (0..c.drafts)
                .take_while(|&i| rng.uniform() < accept(s, i))
                .count();
            let cost = policy.costs.cost(c.rows, 100).unwrap();
            policy.report(c, 100, accepted, None);
            tokens += 1.0 + accepted as f64;
            time += cost;
            lengths.push(c.drafts);
        }
        (lengths, tokens / time)
    }

    #[test]
    fn bucket_rows_are_powers_of_two_and_the_block() {
        assert_eq!(bucket_rows(16), [1, 2, 4, 8, 16]);
        assert_eq!(bucket_rows(32), [1, 2, 4, 8, 16, 32]);
        assert_eq!(bucket_rows(12), [1, 2, 4, 8, 12]);
        assert_eq!(bucket_rows(2), [1, 2]);
        assert_eq!(bucket_rows(1), [1]);
    }

    #[test]
    fn windows_grow_where_builds_cost_many_steps() {
        // Qwen3-1.7B shapes on the H200 (s): steps after 0 and 7680
        // positions, and what building their graphs cost.
        let mut c = StepCosts::from_samples(&[
            (1, 0, 1.49e-3),
            (1, 7680, 1.801e-3),
            (16, 0, 3.641e-3),
            (16, 7680, 4.665e-3),
        ]);
        c.set_fresh(1, 7.7e-3);
        c.set_fresh(16, 11.2e-3);
        let mut cpu = c.clone();
        c.set_windows(1 << 20);
        assert_eq!((c.window(1), c.window(16)), (512, 512));
        // A length between sizes takes the next larger size's window.
        assert_eq!(c.window(9), 512);
        // Building for free (a CPU): the default.
        cpu.set_fresh(1, 0.0);
        cpu.set_fresh(16, 0.0);
        cpu.set_windows(1 << 20);
        assert_eq!((cpu.window(1), cpu.window(16)), (KV_WINDOW, KV_WINDOW));
        // A small model's: reading more of the cache costs next to nothing,
        // so as far as calibration timed it (2000 positions).
        let mut small = StepCosts::from_samples(&[(1, 0, 0.25e-3), (1, 2000, 0.2502e-3)]);
        small.set_fresh(1, 1.9e-3);
        small.set_windows(1 << 20);
        assert_eq!(small.window(1), 2048);
        // A step of 16 rows at 600 in a window of 512 reads 1024 slots, as
        // one at 856 does in windows of 256, and fits until 1009.
        assert_eq!(c.layout(16, 600), (856, 409.0));
        assert_eq!(cpu.layout(16, 600), (600, 153.0));
        // In a cache of 900 slots the window ends there.
        c.set_windows(900);
        assert_eq!(c.layout(16, 600), (732, 285.0));
    }

    #[test]
    fn sizes_costing_about_what_a_larger_one_does_are_dropped() {
        // Step costs of Qwen3-1.7B shapes on the H200 after a 512-token
        // prompt (ms): 2, 4 and 8 rows within 1.5% of each other.
        let h200 = [
            (1, 1.529),
            (2, 3.276),
            (4, 3.267),
            (8, 3.274),
            (16, 3.668),
            (32, 4.608),
        ];
        let samples = |ms: &[(usize, f64)], far: &dyn Fn(usize, f64) -> f64| {
            let mut s: Vec<(usize, usize, f64)> = ms.iter().map(|&(r, c)| (r, 0, c)).collect();
            s.extend(ms.iter().map(|&(r, c)| (r, 2000, far(r, c))));
            StepCosts::from_samples(&s)
        };
        let mut c = samples(&h200, &|_, c| 1.1 * c);
        c.drop_dominated(0.03);
        assert_eq!(c.rows().collect::<Vec<_>>(), [1, 8, 16, 32]);
        // Dominated at the start but not far into the cache: kept.
        let mut c = samples(&h200, &|r, c| if r == 4 { c } else { 1.2 * c });
        c.drop_dominated(0.03);
        assert_eq!(c.rows().collect::<Vec<_>>(), [1, 4, 8, 16, 32]);
        // A CPU, where a step costs about its rows: every size kept.
        let mut c = samples(&[(1, 1.0), (2, 2.3), (4, 4.4), (8, 8.5)], &|_, c| c);
        c.drop_dominated(0.03);
        assert_eq!(c.rows().collect::<Vec<_>>(), [1, 2, 4, 8]);
    }

    #[test]
    fn costs_fit_the_context_and_follow_timed_steps() {
        let c = StepCosts::from_samples(&[
            (1, 0, 1.0),
            (1, 1000, 2.0),
            (1, 1000, 2.2),
            (4, 0, 3.0),
            (4, 1000, 5.0),
        ]);
        assert_eq!(c.rows().collect::<Vec<_>>(), [1, 4]);
        assert!((c.cost(1, 500).unwrap() - 1.55).abs() < 1e-9);
        assert_eq!(c.cost(4, 2000), Some(7.0));
        assert_eq!(c.cost(2, 0), None);
        // A one-token step dearer than a step of more rows was timed in a
        // stall: it is taken down to that bound.
        let stalled =
            StepCosts::from_samples(&[(1, 0, 10.0), (1, 1000, 11.0), (4, 0, 3.0), (4, 1000, 3.3)]);
        assert!((stalled.cost(1, 0).unwrap() - 3.0).abs() < 1e-9);
        assert!((stalled.cost(1, 1000).unwrap() - 3.3).abs() < 1e-9);
        // A lasting slowdown of 4 rows is followed, one stalled step is not.
        let mut d = c.clone();
        d.observe(4, 0, 300.0);
        assert!(d.cost(4, 0).unwrap() < 3.1);
        for _ in 0..200 {
            d.observe(4, 0, 4.5);
        }
        assert!((d.cost(4, 0).unwrap() - 4.5).abs() < 0.1);
        assert_eq!(d.cost(1, 0), c.cost(1, 0));
        // An AR step's timing moves every size alike.
        let mut e = c.clone();
        for _ in 0..200 {
            e.observe(1, 0, 2.0);
        }
        assert!((e.cost(1, 0).unwrap() - 2.0).abs() < 0.05);
        let moved = e.cost(4, 0).unwrap() / c.cost(4, 0).unwrap();
        assert!((moved - e.cost(1, 0).unwrap() / c.cost(1, 0).unwrap()).abs() < 1e-9);
    }

    #[test]
    fn acceptance_is_per_position_and_forgets() {
        let mut a = Acceptance::default();
        assert!((a.rates(3)[2] - PRIOR_RATE).abs() < 1e-12);
        for _ in 0..20 {
            a.record(4, 2); // 0 and 1 accepted, 2 rejected, 3 not seen
        }
        let r = a.rates(4);
        assert!(r[0] > 0.9 && r[1] > 0.9 && r[2] < 0.2, "{r:?}");
        // Position 3 was never reached: its prior is position 2's long-run rate.
        assert!(r[3] < 0.2, "{r:?}");
        let e = a.expected_accepted(4);
        assert!((e[2] - r[0] - r[0] * r[1]).abs() < 1e-12 && e[4] < 2.1);
        // Later rejections at position 0 take over within a few steps.
        for _ in 0..12 {
            a.record(4, 0);
        }
        assert!(a.rates(1)[0] < 0.3, "{:?}", a.rates(1));
    }

    #[test]
    fn good_drafts_on_a_gpu_draft_the_whole_block() {
        let mut p = DraftPolicy::new(gpu(), History::default());
        let (lengths, _) = simulate(&mut p, 200, |_, _| 0.95, 1);
        let whole = lengths[10..].iter().filter(|&&n| n == 15).count();
        assert!(whole > 190 * 9 / 10, "{lengths:?}");
        // Exploring may try a shorter length now and then.
        assert!(
            lengths.iter().filter(|&&n| n < 7).count() <= 3,
            "{lengths:?}"
        );
    }

    #[test]
    fn rejected_drafts_give_ar_steps_with_rare_probes() {
        let mut p = DraftPolicy::new(gpu(), History::default());
        let (lengths, rate) = simulate(&mut p, 2000, |_, _| 0.0, 2);
        let drafting = lengths[20..].iter().filter(|&&n| n > 0).count();
        // The probes cost at most about PROBE_SHARE of the time.
        assert!(
            drafting > 0 && drafting < 2000 / 40,
            "{drafting} drafting steps"
        );
        assert!(rate > 0.97, "{rate} tokens per AR step's cost");
        // The cheapest probe that could pay: 2 rows cost more than 2 AR steps.
        assert!(
            lengths[20..].iter().all(|&n| n == 0 || n == 3),
            "{lengths:?}"
        );
    }

    #[test]
    fn probes_that_would_build_graphs_are_rarer() {
        // Building a probe's graphs costs 10 AR steps: the budget then
        // covers about a tenth as many probes.
        let probes = |ready: bool| {
            let mut c = gpu();
            for rows in bucket_rows(16) {
                c.set_fresh(rows, 10.0);
            }
            let mut p = DraftPolicy::new(c, History::default());
            (0..4000)
                .filter(|_| {
                    let c = p.choose(15, 100, &|_| if ready { 0.0 } else { 1.0 });
                    p.report(c, 100, 0, None);
                    c.drafts > 0
                })
                .count()
        };
        let (cheap, dear) = (probes(true), probes(false));
        assert!(
            cheap > 25 && dear < cheap / 4,
            "{cheap} probes, {dear} building graphs"
        );
    }

    #[test]
    fn an_ar_build_is_shared_by_its_window() {
        // A device where one draft could pay, after two first drafts
        // rejected, at a step with the AR graph to build (20 AR steps'
        // time) and the drafting ones ready: AR steps will serve the
        // window's 167 tokens left, so an AR step. (Charged as a drafting
        // size's build, by the two observations, its share made a draft
        // expected at 0.73 tokens an AR step's time look the better.)
        let c = StepCosts::from_samples(&[(1, 0, 1.0), (2, 0, 1.5), (4, 0, 3.0)]);
        let mut seen = DraftPolicy::new(c.clone(), History::default());
        for _ in 0..2 {
            seen.report(Choice { drafts: 1, rows: 2 }, 80, 0, None);
        }
        let mut c = c;
        c.set_fresh(1, 20.0);
        let mut p = DraftPolicy::new(c, seen.into_parts().1);
        let choice = p.choose(15, 89, &|rows| if rows == 1 { 1.0 } else { 0.0 });
        assert_eq!(choice.drafts, 0, "{choice:?}");
    }

    #[test]
    fn no_draft_where_even_full_acceptance_gains_little() {
        // This CPU's bundled model as one calibration had it (ms): one draft
        // at 1.9 AR steps, 3 at 3.8, and every draft accepted so far. With
        // all accepted a step would gain 5%; as the costs auto held put
        // 2-row steps at 1.9-4.5 AR steps across runs, AR steps.
        let c = StepCosts::from_samples(&[(1, 0, 0.52), (2, 0, 1.0), (4, 0, 1.98)]);
        let mut p = DraftPolicy::new(c, History::default());
        for _ in 0..200 {
            let choice = p.choose(15, 100, &|_| 0.0);
            assert_eq!(choice.drafts, 0, "{choice:?}");
            p.report(Choice { drafts: 3, rows: 4 }, 100, 3, None);
        }
    }

    /// A one-token pass timed during a stall at calibration (on a 2-core
    /// CPU, 16 ms where it takes 0.4) must not keep auto drafting for good:
    /// AR steps now and then while drafting correct its cost.
    #[test]
    fn an_ar_cost_measured_too_high_is_corrected() {
        // A CPU-like device: a step of r rows costs 2r one-token passes.
        let truth = |r: usize| if r == 1 { 1.0 } else { 2.0 * r as f64 };
        let mut table = costs(truth, 16).table(0);
        table[0].1 = 40.0;
        table[1].1 = 100.0;
        let samples: Vec<_> = table.iter().map(|&(r, c)| (r, 0, c)).collect();
        let calibrated = StepCosts::from_samples(&samples);
        let mut p = DraftPolicy::new(calibrated, History::default());
        let mut rng = crate::sampling::Rng::new(3);
        let (mut tokens, mut time) = (0.0, 0.0);
        for s in 0..3000 {
            let c = p.choose(15, 100, &|_| 0.0);
            let accepted = (0..c.drafts).take_while(|_| rng.uniform() < 0.6).count();
            p.report(c, 100, accepted, Some(truth(c.rows)));
            if s >= 1000 {
                tokens += 1.0 + accepted as f64;
                time += truth(c.rows);
            }
        }
        // AR steps commit 1 token per unit; the best drafting step (3 drafts,
        // 4 rows, each accepted at 0.6) 2.18 per 8 units.
        assert!(
            tokens / time > 0.95,
            "{} tokens per AR step's cost",
            tokens / time
        );
        assert!(
            p.costs.cost(1, 100).unwrap() < 1.5,
            "{:?}",
            p.costs.table(100)
        );
    }

    #[test]
    fn costs_follow_a_machine_whose_speed_swings() {
        // A CPU-like device where one draft costs 2.05 AR steps and more
        // rows about as many AR steps, first drafts accepted at 0.95, whose
        // speed falls to 1/1.5-1/2.5 for stretches of about 100 steps, each
        // step's time +-20%. AR's cost alone following the machine made
        // drafting look cheaper in the slow stretches: 555-1762 drafting
        // steps in 20000, auto 0.981-0.985 of AR.
        let truth = |r: usize| match r {
            1 => 1.0,
            2 => 2.05,
            4 => 4.3,
            8 => 8.5,
            _ => 17.0,
        };
        let samples: Vec<_> = bucket_rows(16)
            .into_iter()
            .map(|r| (r, 0, truth(r)))
            .collect();
        for seed in 0..4 {
            let mut p = DraftPolicy::new(StepCosts::from_samples(&samples), History::default());
            let mut rng = crate::sampling::Rng::new(seed);
            let (mut time, mut ar_time, mut slow) = (0.0, 0.0, 1.0);
            for _ in 0..20000 {
                if rng.uniform() < 0.01 {
                    slow = if slow > 1.0 { 1.0 } else { 1.5 + rng.uniform() };
                }
                let c = p.choose(15, 100, &|_| 0.0);
                let accepted = (0..c.drafts)
                    .take_while(|&i| rng.uniform() < if i == 0 { 0.95 } else { 0.6 })
                    .count();
                let unit = slow * (0.8 + 0.4 * rng.uniform());
                p.report(c, 100, accepted, Some(truth(c.rows) * unit));
                time += truth(c.rows) * unit;
                ar_time += (1 + accepted) as f64 * unit;
            }
            let auto = ar_time / time;
            assert!(auto > 0.995, "seed {seed}: auto {auto:.3} of AR");
        }
    }

    #[test]
    fn probes_pay_what_they_took() {
        // Probes that take three times their cost are about a third as many.
        let probes = |slowdown: f64| {
            let mut p = DraftPolicy::new(gpu(), History::default());
            (0..4000)
                .filter(|_| {
                    let c = p.choose(15, 100, &|_| 0.0);
                    let took = slowdown * p.costs.cost(c.rows, 100).unwrap();
                    p.report(c, 100, 0, (c.drafts > 0).then_some(took));
                    c.drafts > 0
                })
                .count()
        };
        let (fair, slow) = (probes(1.0), probes(3.0));
        assert!(
            fair > 25 && slow * 2 < fair && slow * 5 > fair,
            "{fair} probes, {slow} when they take three times as long"
        );
    }

    #[test]
    fn short_generations_share_one_probe_budget() {
        // 100 generations of 40 steps probe about as often as one of 4000,
        // slow probes included: the budget, and its debts, carry over.
        let probes = |generations: usize, steps: usize| {
            let mut history = History::default();
            let mut n = 0;
            for _ in 0..generations {
                let mut p = DraftPolicy::new(gpu(), history);
                for _ in 0..steps {
                    let c = p.choose(15, 100, &|_| 0.0);
                    let took = 3.0 * p.costs.cost(c.rows, 100).unwrap();
                    p.report(c, 100, 0, (c.drafts > 0).then_some(took));
                    n += (c.drafts > 0) as usize;
                }
                history = p.into_parts().1;
            }
            n
        };
        let (long, short) = (probes(1, 4000), probes(100, 40));
        assert!(
            long > 5 && short <= long + 2 && short * 2 >= long,
            "{long} probes in one generation, {short} in 100 short ones"
        );
    }

    #[test]
    fn short_acceptance_runs_give_short_drafts() {
        // Drafts 0 and 1 are accepted, 2 never: 2 or 3 drafts (rows 4) win.
        let mut p = DraftPolicy::new(gpu(), History::default());
        let (lengths, _) = simulate(&mut p, 100, |_, i| if i < 2 { 0.98 } else { 0.0 }, 3);
        let tail = &lengths[30..];
        assert!(
            tail.iter().filter(|&&n| n == 3).count() > tail.len() * 8 / 10,
            "{lengths:?}"
        );
    }

    #[test]
    fn a_stretch_of_rejections_then_acceptances_is_followed() {
        let mut p = DraftPolicy::new(gpu(), History::default());
        let accept = |s: usize, _| if (200..400).contains(&s) { 0.0 } else { 0.95 };
        let (lengths, _) = simulate(&mut p, 1200, accept, 4);
        assert!(lengths[150..200].iter().all(|&n| n == 15));
        // Mostly AR steps; some drafts try to return (and explore) while
        // the long-run estimates, which the good stretch made high, come
        // down.
        let ar = lengths[230..400].iter().filter(|&&n| n == 0).count();
        assert!(ar > 130, "{ar} AR steps of 170");
        // The probes find the good drafts again (AR steps now and then
        // check AR's cost: untimed here, so CHECK_TRIES in a row).
        let tail = &lengths[1000..];
        let short = tail.iter().filter(|&&n| n < 3).count();
        let checks = CHECK_TRIES * (tail.len() / CHECK_AFTER + 1);
        assert!(short <= checks, "{:?}", &lengths[400..]);
        assert!(tail.iter().filter(|&&n| n == 15).count() > tail.len() * 8 / 10);
    }

    #[test]
    fn auto_keeps_up_with_the_better_mode_when_acceptance_shifts() {
        // Against AR steps (1 token per unit of cost) and drafting the whole
        // block at every step, over 2000 steps: acceptance constant, or
        // alternating every 40 steps between a bad and a good rate (prose,
        // then code). Without forgetting during AR steps auto fell to
        // 0.67-0.80 of drafting on the alternating ones.
        let whole_block = |accept: &dyn Fn(usize, usize) -> f64| {
            let mut rng = crate::sampling::Rng::new(9);
            let cost = gpu().cost(16, 100).unwrap();
            let tokens: usize = (0..2000)
                .map(|s| {
                    1 + (0..15)
                        .take_while(|&i| rng.uniform() < accept(s, i))
                        .count()
                })
                .sum();
            tokens as f64 / (2000.0 * cost)
        };
        type Accept = Box<dyn Fn(usize, usize) -> f64>;
        let cases: [(&str, Accept, f64); 6] = [
            ("never", Box::new(|_, _| 0.0), 0.97),
            ("0.6", Box::new(|_, _| 0.6), 0.95),
            ("0.75", Box::new(|_, _| 0.75), 0.95),
            (
                "0.5, 0.9",
                Box::new(|s, _| if (s / 40) % 2 == 0 { 0.5 } else { 0.9 }),
                0.97,
            ),
            (
                "0.3, 0.9",
                Box::new(|s, _| if (s / 40) % 2 == 0 { 0.3 } else { 0.9 }),
                0.97,
            ),
            (
                "0, 0.9",
                Box::new(|s, _| if (s / 40) % 2 == 0 { 0.0 } else { 0.9 }),
                0.97,
            ),
        ];
        for (name, accept, goal) in &cases {
            let mut p = DraftPolicy::new(gpu(), History::default());
            let (_, auto) = simulate(&mut p, 2000, accept, 4);
            let best = whole_block(&**accept).max(1.0);
            assert!(
                auto >= goal * best,
                "acceptance {name}: auto {auto:.3}, best {best:.3}"
            );
        }
    }

    /// The share of a graph's build still to pay after `runs` runs (none:
    /// not built), as a GPU session counts it (`Kept::to_build`).
    fn to_build(runs: Option<u32>) -> f64 {
        (2 - runs.unwrap_or(0).min(2)) as f64 / 2.0
    }

    /// What the run after `runs` runs pays of the build: its share of it.
    fn paid(runs: u32) -> f64 {
        to_build(Some(runs)) - to_build(Some(runs + 1))
    }

    /// Replays greedy generations of `lengths[g]` tokens whose step of `d`
    /// drafts at token `n` accepts `accept(g, n, d)`. Returns auto's and the
    /// whole-block drafts' committed tokens per unit of cost, relative to
    /// AR steps; `fresh`: each generation from a new session. Graphs as a
    /// GPU session keeps them, per rows and KV window (256 slots, after a
    /// prompt of `PROMPT` tokens): the first two runs of a step's graphs
    /// (built and run, then captured) pay half of `costs.fresh(rows)` each,
    /// in both modes; calibration ran every size in the first window.
    fn replay(
        costs: &StepCosts,
        lengths: &[usize],
        accept: &dyn Fn(usize, usize, usize) -> usize,
        fresh: bool,
    ) -> (f64, f64) {
        const PROMPT: usize = 40;
        let window = |n: usize, rows: usize| (PROMPT + n + rows).div_ceil(KV_WINDOW);
        let (mut tokens, mut auto, mut whole) = (0.0, 0.0, 0.0);
        let ar = costs.cost(1, 0).unwrap();
        let mut history = History::default();
        // Runs of the graphs of (rows, window); a session keeps them.
        let mut runs: HashMap<(usize, usize), u32> = HashMap::new();
        let mut runs_whole: HashMap<usize, u32> = HashMap::new();
        for (g, &total) in lengths.iter().enumerate() {
            let mut p = DraftPolicy::new(
                costs.clone(),
                if fresh { History::default() } else { history },
            );
            if fresh || runs.is_empty() {
                runs = costs.rows().map(|r| ((r, 1), 3)).collect();
                runs_whole = HashMap::from([(1, 3)]);
            }
            let mut n = 0;
            while n < total {
                let left = |rows: usize| to_build(runs.get(&(rows, window(n, rows))).copied());
                let c = p.choose(15.min(total - n - 1), PROMPT + n, &left);
                let a = accept(g, n, c.drafts);
                auto += costs.cost(c.rows, 0).unwrap();
                let r = runs.entry((c.rows, window(n, c.rows))).or_insert(0);
                let built = paid(*r) * costs.fresh(c.rows);
                auto += built;
                *r += 1;
                // Timed as estimated (so that AR checks see AR timed), unless it built.
                let timed = (built == 0.0).then(|| costs.cost(c.rows, 0).unwrap());
                p.report(c, 0, a, timed);
                n += a + 1;
            }
            history = p.into_parts().1;
            tokens += total as f64;
            let mut n = 0;
            while n < total {
                let d = 15.min(total - n - 1);
                whole += costs.cost(16, 0).unwrap();
                let r = runs_whole.entry(window(n, 16)).or_insert(0);
                whole += paid(*r) * costs.fresh(16);
                *r += 1;
                n += accept(g, n, d) + 1;
            }
        }
        (tokens * ar / auto, tokens * ar / whole)
    }

    /// [`replay`] of greedy generations recorded in Orthrus mode (tokens
    /// accepted at each step of 15 drafts): a step of `d` drafts at token
    /// `n` accepts what the recorded step starting at `n` accepted, or the
    /// rest of the recorded run `n` falls in, at most `d`.
    fn replay_recorded(costs: &StepCosts, generations: &[Vec<usize>], fresh: bool) -> (f64, f64) {
        let rest: Vec<Vec<usize>> = generations.iter().map(|g| rest_of_runs(g)).collect();
        let lengths: Vec<usize> = rest.iter().map(|r| r.len() - 1).collect();
        replay(costs, &lengths, &|g, n, d| rest[g][n].min(d), fresh)
    }

    #[test]
    fn auto_follows_recorded_generations_whose_acceptance_shifts() {
        // The bundled model on the H200, on prompts where it writes prose
        // and then code: without exploring, a generation that began with
        // rejected drafts kept to AR steps (replayed: 0.91 of drafting the
        // whole block, each generation in a new session; 0.95 with
        // exploring unpaid, 0.97 paid).
        let file: serde_json::Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/tiny-orthrus/shifting-traces-h200.json"
        )))
        .unwrap();
        let costs = costs_from_json(&file, "step_ms", None);
        let generations: Vec<Vec<usize>> =
            serde_json::from_value(file["accepted"].clone()).unwrap();
        // Then with graphs built per KV window, at what building a step's
        // graphs cost beyond the step there (ms by rows, same call). A new
        // session each generation: 0.925 of the whole block while a chosen
        // length did not pay for its build.
        let mut building = costs.clone();
        for (rows, ms) in [(1, 1.768), (2, 4.003), (4, 3.845), (8, 3.792), (16, 3.981)] {
            building.set_fresh(rows, ms / 1e3);
        }
        for costs in [&costs, &building] {
            for fresh in [false, true] {
                let (auto, whole) = replay_recorded(costs, &generations, fresh);
                eprintln!("fresh {fresh}: auto {auto:.3}, whole block {whole:.3} (AR 1)");
                assert!(
                    auto >= 0.96 * whole.max(1.0),
                    "fresh {fresh}: auto {auto:.3}, whole block {whole:.3}"
                );
            }
        }
        // On this CPU's costs for the bundled model (a step of 8 rows 6.8
        // AR steps') drafting pays only at near-full acceptance: exploring
        // must not make auto slower than AR there.
        let cpu = StepCosts::from_samples(&[
            (1, 0, 0.595e-3),
            (2, 0, 1.382e-3),
            (4, 0, 2.351e-3),
            (8, 0, 4.056e-3),
            (16, 0, 7.95e-3),
        ]);
        // Auto against AR steps, in one session and a new one each time.
        let at_least_ar =
            |what: &str, costs: &StepCosts, generations: &[Vec<usize>], bound: f64| {
                for fresh in [false, true] {
                    let (auto, _) = replay_recorded(costs, generations, fresh);
                    eprintln!("{what}, fresh {fresh}: auto {auto:.3} (AR 1)");
                    assert!(auto >= bound, "{what}, fresh {fresh}: auto {auto:.3} of AR");
                }
            };
        at_least_ar("CPU costs", &cpu, &generations, 0.97);
        // Drafts rarely accepted, on the H200's costs: explored rarely.
        // Random weights on the H200 accepted 1.5% of 15 drafts.
        let mut rng = crate::sampling::Rng::new(5);
        for (first, next) in [(0.15, 0.1), (0.05, 0.02)] {
            let rare: Vec<Vec<usize>> = (0..16)
                .map(|_| {
                    let (mut g, mut n) = (Vec::new(), 0);
                    while n < 256 {
                        let a = (0..15)
                            .take_while(|&i| rng.uniform() < if i == 0 { first } else { next })
                            .count();
                        g.push(a);
                        n += a + 1;
                    }
                    g
                })
                .collect();
            at_least_ar(&format!("accepted {first}, {next}"), &costs, &rare, 0.96);
        }
    }

    #[test]
    fn auto_follows_the_shifting_generations_at_h100_costs() {
        // The same prompts on an H100, where a 4-row step costs 86% of a
        // 16-row one: in one session (the server's, and bench's) auto keeps
        // up with the whole block. (In a new session each generation it
        // keeps to AR steps through most of the prose and falls below.)
        let file: serde_json::Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/tiny-orthrus/shifting-traces-h100.json"
        )))
        .unwrap();
        let mut costs = costs_from_json(&file, "step_ms", None);
        costs.drop_dominated(DOMINATED_MARGIN);
        let generations: Vec<Vec<usize>> =
            serde_json::from_value(file["accepted"].clone()).unwrap();
        let (auto, whole) = replay_recorded(&costs, &generations, false);
        eprintln!("one session: auto {auto:.3}, whole block {whole:.3} (AR 1)");
        assert!(
            auto >= 0.96 * whole.max(1.0),
            "auto {auto:.3}, whole block {whole:.3}"
        );
    }

    /// Step costs in a JSON object of milliseconds by rows (`key`), with
    /// the fresh costs under `fresh` when given.
    fn costs_from_json(file: &serde_json::Value, key: &str, fresh: Option<&str>) -> StepCosts {
        let ms = |k: &str| -> Vec<(usize, f64)> {
            file[k]
                .as_object()
                .unwrap()
                .iter()
                .map(|(rows, ms)| (rows.parse().unwrap(), ms.as_f64().unwrap() / 1e3))
                .collect()
        };
        let samples: Vec<(usize, usize, f64)> =
            ms(key).into_iter().map(|(r, s)| (r, 0, s)).collect();
        let mut costs = StepCosts::from_samples(&samples);
        for (rows, s) in fresh.map(ms).unwrap_or_default() {
            costs.set_fresh(rows, s);
        }
        costs
    }

    #[test]
    fn auto_keeps_up_with_the_whole_block_on_the_acceptance_oracle() {
        // The bundled model's shifting prompts on the H200, each step
        // accepting what its drafts there really get right
        // (acceptance_oracle), at the H200's costs: the whole block commits
        // 1.29 tokens an AR step's time (`orthrus` mode live: 1.35, its text
        // parting from the AR pass's at near-ties). Replayed, auto came to
        // 1.08 of the whole block in one session, yet live to 0.90-0.93:
        // steps whose graphs had moved cost 2-4x what was expected, which
        // the probe budget paid for (see Session::run).
        let file: serde_json::Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/tiny-orthrus/shifting-oracle.json"
        )))
        .unwrap();
        let costs = costs_from_json(&file, "step_ms", Some("fresh_ms"));
        let oracle: Vec<Vec<usize>> = serde_json::from_value(file["accepted_at"].clone()).unwrap();
        let lengths: Vec<usize> = oracle.iter().map(|g| g.len()).collect();
        for fresh in [false, true] {
            let (auto, whole) = replay(&costs, &lengths, &|g, n, d| oracle[g][n].min(d), fresh);
            eprintln!("fresh {fresh}: auto {auto:.3}, whole block {whole:.3} (AR 1)");
            assert!(
                auto >= 0.97 * whole.max(1.0),
                "fresh {fresh}: auto {auto:.3}, whole block {whole:.3}"
            );
        }
    }

    #[test]
    fn exploring_costs_little_where_drafts_are_dear() {
        // The 8B configuration on the H200 after a 32K prompt (random
        // weights): a step of 2, 4, 8 and 16 rows cost 2.1, 2.6, 2.45 and
        // 3.1 AR steps, and drafts were accepted at about 0.4 a position;
        // auto, exploring, drafted 14 of 50 steps and came to 0.90 of AR.
        // Replayed here before exploring was bounded: 0.964 in one session.
        let dear = costs(
            |r| match r {
                1 => 1.0,
                2 => 2.1,
                4 => 2.6,
                8 => 2.45,
                _ => 3.1,
            },
            16,
        );
        // Generations of 64 tokens in one session (as the server and bench
        // run them), and each in a new session: there the first step drafts
        // at the prior rate, and the few steps after it cannot yet tell
        // positions 1.. from it, which costs about 5% of a 64-token
        // generation.
        for (one_session, bound) in [(true, 0.97), (false, 0.93)] {
            let mut history = History::default();
            let (mut tokens, mut time) = (0.0, 0.0);
            for g in 0..16 {
                let mut p = DraftPolicy::new(dear.clone(), history.clone());
                let mut rng = crate::sampling::Rng::new(100 + g);
                let mut n = 0;
                while n < 64 {
                    let c = p.choose(15.min(63 - n), 100, &|_| 0.0);
                    let a = (0..c.drafts).take_while(|_| rng.uniform() < 0.4).count();
                    time += dear.cost(c.rows, 100).unwrap();
                    p.report(c, 100, a, None);
                    n += a + 1;
                }
                tokens += n as f64;
                if one_session {
                    history = p.into_parts().1;
                }
            }
            let auto = tokens / time;
            eprintln!("one session {one_session}: auto {auto:.3} of AR");
            assert!(
                auto >= bound,
                "one session {one_session}: auto {auto:.3} of AR"
            );
        }
    }

    /// For each step of a recorded generation, the drafts still accepted
    /// from its token on: a step at token `n` accepts what the recorded step
    /// starting there accepted, or the rest of the recorded run `n` falls in.
    fn rest_of_runs(accepted: &[usize]) -> Vec<usize> {
        let mut rest = vec![0; accepted.iter().map(|a| a + 1).sum::<usize>() + 1];
        let mut t = 0;
        for &a in accepted {
            for k in 0..=a {
                rest[t + k] = a - k;
            }
            t += a + 1;
        }
        rest
    }

    /// `orthrus bench` replayed on generations recorded in `orthrus` mode
    /// (drafts accepted per step), every prompt of `prompt` tokens: the
    /// warm-up (8 tokens a mode at the first prompt, leaving the graphs of
    /// AR steps and of `orthrus` mode's size ready, and auto's of its own 8
    /// tokens built), the acceptance estimates reset, then auto on each
    /// generation in one session, its graphs per KV window of 256 slots
    /// ready from their third run (each of the first two paying half of
    /// `fresh`). Returns auto's speed over AR steps'.
    fn replay_bench(
        costs: &StepCosts,
        prompt: usize,
        draft_max: usize,
        gens: &[Vec<usize>],
    ) -> f64 {
        let rests: Vec<Vec<usize>> = gens.iter().map(|g| rest_of_runs(g)).collect();
        let window = |n: usize, rows: usize| (prompt + n + rows).div_ceil(KV_WINDOW);
        let mut runs: HashMap<(usize, usize), u32> = HashMap::from([
            ((1, window(0, 1)), 3),
            ((draft_max + 1, window(0, draft_max + 1)), 3),
        ]);
        let (mut costs, mut history) = (costs.clone(), History::default());
        let (mut auto, mut ar) = (0.0, 0.0);
        // The warm-up on the first generation, then each generation.
        let plan = std::iter::once((0, 8, false)).chain((0..gens.len()).map(|g| (g, 0, true)));
        for (g, max_tokens, timed) in plan {
            let total = if max_tokens > 0 {
                max_tokens
            } else {
                rests[g].len() - 1
            };
            let mut p = DraftPolicy::new(costs.clone(), history);
            let mut n = 0;
            while n < total {
                let left = |rows: usize| to_build(runs.get(&(rows, window(n, rows))).copied());
                let c = p.choose(draft_max.min(total - n - 1), prompt + n, &left);
                let a = rests[g][n].min(c.drafts);
                let step = costs.cost(c.rows, 0).unwrap();
                let r = runs.entry((c.rows, window(n, c.rows))).or_insert(0);
                let built = paid(*r) * costs.fresh(c.rows);
                *r += 1;
                if timed {
                    auto += step + built;
                }
                p.report(c, prompt + n, a, (built == 0.0).then_some(step));
                n += a + 1;
            }
            if timed {
                ar += total as f64 * costs.cost(1, 0).unwrap();
            }
            (costs, history) = p.into_parts();
            if !timed {
                history = History::default();
            }
        }
        ar / auto
    }

    #[test]
    fn auto_keeps_up_with_ar_on_random_weights_recorded_on_the_h200() {
        // Random weights of published shapes on the H200, where AR steps
        // are the faster mode: the drafts' first token is often accepted
        // (the text repeats itself), hardly ever more, so a drafting step
        // commits about what it costs. Live, auto came to 0.975, 0.963 and
        // 0.898 of AR; replayed then, 0.940, 0.956 and 0.937: the first
        // generation drafted at the prior rate, built graphs in the
        // prompt's KV window for one or two steps, and needed a few
        // rejections at position 1 to stop (see BUILD_EVIDENCE). (Less
        // optimism at position 1, a prior of half the weight or position 1
        // judged by position 0, gave 0.97-0.98 here but 0.94 and 0.85 of
        // the whole block on the shifting generations.)
        let file: serde_json::Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/golden/h200-random-steps.json"
        )))
        .unwrap();
        for (name, c) in file["configs"].as_object().unwrap() {
            let mut costs = costs_from_json(c, "step_ms", Some("fresh_ms"));
            costs.drop_dominated(DOMINATED_MARGIN);
            let gens: Vec<Vec<usize>> = serde_json::from_value(c["accepted"].clone()).unwrap();
            let prompt = c["prompt"].as_u64().unwrap() as usize;
            let draft_max = c["draft_max"].as_u64().unwrap() as usize;
            let auto = replay_bench(&costs, prompt, draft_max, &gens);
            eprintln!("{name}: auto {auto:.3} of AR (live {})", c["auto_vs_best"]);
            assert!(auto >= 0.96, "{name}: auto {auto:.3} of AR");
        }
    }

    #[test]
    fn the_next_generation_starts_from_the_last_ones_acceptance() {
        let mut p = DraftPolicy::new(gpu(), History::default());
        // With no history the first step drafts the whole block.
        assert_eq!(p.choose(15, 0, &|_| 0.0).drafts, 15);
        simulate(&mut p, 50, |_, _| 0.0, 6);
        let (costs, history) = p.into_parts();
        let mut next = DraftPolicy::new(costs, history);
        assert_eq!(next.choose(15, 0, &|_| 0.0).drafts, 0);
    }

    #[test]
    fn a_device_where_drafts_cannot_pay_runs_ar_only() {
        // A CPU-like device: each row of a step costs more than a one-token
        // step. Even drafts that are always accepted lose, so none is tried.
        let c = costs(|r| if r == 1 { 2.0 } else { 2.2 * r as f64 }, 16);
        let mut p = DraftPolicy::new(c, History::default());
        let (lengths, rate) = simulate(&mut p, 500, |_, _| 1.0, 5);
        assert_eq!(rate, 0.5);
        assert!(lengths.iter().all(|&n| n == 0), "{lengths:?}");
    }

    #[test]
    fn the_draft_limit_is_respected() {
        let mut p = DraftPolicy::new(gpu(), History::default());
        for max in [0, 1, 2, 5, 15] {
            for _ in 0..20 {
                let c = p.choose(max, 0, &|_| 0.0);
                assert!(c.drafts <= max && c.rows > c.drafts, "{c:?} at max {max}");
                p.report(c, 0, c.drafts, None);
            }
        }
        // Costs without an AR step: AR only (nothing to compare with).
        let mut q = DraftPolicy::new(StepCosts::from_samples(&[(4, 0, 1.0)]), History::default());
        assert_eq!(q.choose(3, 0, &|_| 0.0), Choice { drafts: 0, rows: 1 });
    }
}
