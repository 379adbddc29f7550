//! Generation: plain AR decoding and Orthrus dual-view decoding (greedy
//! consensus, and lossless speculative sampling), per docs/design.md §5-§6,
//! with a fixed draft length or one chosen before each step
//! ([`crate::draft_policy`]).

use std::time::Instant;

use crate::draft_policy::{Choice, DraftPolicy};
use crate::graph::View;
use crate::sampling::{Distribution, Rng, SamplingParams};
use crate::session::{PassOutput, Session};
use crate::EngineError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// One token a step, the AR view alone.
    Ar,
    /// Every step drafts the same number of tokens (`draft_max`).
    Orthrus,
    /// Each step drafts the number of tokens that is expected to commit the
    /// most tokens a second (0: an AR step); a model without a diffusion
    /// view decodes as in `Ar`.
    #[default]
    Auto,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Ar => "ar",
            Mode::Orthrus => "orthrus",
            Mode::Auto => "auto",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "ar" => Ok(Mode::Ar),
            "orthrus" => Ok(Mode::Orthrus),
            "auto" => Ok(Mode::Auto),
            _ => Err(format!("unknown mode {s:?} (use auto, orthrus or ar)")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct GenerateParams {
    pub mode: Mode,
    pub max_tokens: usize,
    pub ignore_eos: bool,
    pub sampling: SamplingParams,
    /// Tokens a step drafts (orthrus mode), or drafts at most (auto mode),
    /// each step's block being one token longer: at most the file's
    /// `block_size - 1`, which is the default. 0 drafts nothing (AR steps).
    pub draft_max: Option<usize>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            mode: Mode::Auto,
            max_tokens: 128,
            ignore_eos: false,
            sampling: SamplingParams::default(),
            draft_max: None,
        }
    }
}

/// One decoding step: the drafts proposed (none in an AR step) and how many
/// were accepted.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    pub drafts: Vec<u32>,
    pub accepted: usize,
    /// Tokens in the cache before the step, rows of its passes' graphs, its
    /// microseconds, and whether it built (on a GPU: captured) a graph or
    /// allocated one afresh: `bench --steps-out`'s record of what auto mode
    /// chose and paid.
    #[serde(skip)]
    pub position: usize,
    #[serde(skip)]
    pub rows: usize,
    #[serde(skip)]
    pub micros: u64,
    #[serde(skip)]
    pub built: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Finish {
    /// An end-of-sequence token was produced (and emitted).
    Eos,
    /// `max_tokens` or the context size was reached.
    Length,
    /// The token callback asked to stop (stop string, client gone).
    Stopped,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Decoding steps (Orthrus steps, or tokens in AR mode).
    pub steps: usize,
    /// Mean tokens committed per step (accepted drafts + 1).
    pub mean_accepted: f64,
    /// `histogram[a]` = steps that accepted `a` drafts.
    pub histogram: Vec<usize>,
    /// Steps that drafted (vLLM's `num_drafts`), tokens they drafted and
    /// drafts accepted.
    pub draft_steps: usize,
    pub draft_tokens: usize,
    pub accepted_tokens: usize,
    /// Per draft position `i` (0-based): steps that drafted a token there,
    /// and steps whose token there was accepted.
    pub draft_tokens_per_pos: Vec<usize>,
    pub accepted_tokens_per_pos: Vec<usize>,
    pub prompt_seconds: f64,
    pub generation_seconds: f64,
    /// Seconds of the steps that drafted nothing (AR steps), so that auto
    /// mode's AR steps can be compared with `ar` mode's.
    pub ar_step_seconds: f64,
    /// Steps that built (on a GPU: captured) a graph or allocated one
    /// afresh, and their seconds.
    pub build_steps: usize,
    pub build_seconds: f64,
    pub prompt_tokens_per_second: f64,
    pub generation_tokens_per_second: f64,
}

#[derive(Clone, Debug)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub steps: Vec<Step>,
    pub finish: Finish,
    pub stats: Stats,
}

/// Emits committed tokens to the caller, tracking EOS, limits and stops.
struct Sink<'a> {
    tokens: Vec<u32>,
    max: usize,
    eos: &'a [u32],
    on_token: &'a mut dyn FnMut(u32) -> bool,
    finish: Option<Finish>,
}

impl Sink<'_> {
    /// Commits `t` unless generation already ended; returns whether it goes on.
    fn push(&mut self, t: u32) -> bool {
        if self.finish.is_some() {
            return false;
        }
        self.tokens.push(t);
        if !(self.on_token)(t) {
            self.finish = Some(Finish::Stopped);
        } else if self.eos.contains(&t) {
            self.finish = Some(Finish::Eos);
        } else if self.tokens.len() >= self.max {
            self.finish = Some(Finish::Length);
        }
        self.finish.is_none()
    }

    fn remaining(&self) -> usize {
        self.max - self.tokens.len()
    }
}

/// Generates from `prompt` (positions 0..); `on_token` sees every committed
/// token in order and returns false to stop.
pub fn generate(
    session: &mut Session<'_>,
    prompt: &[u32],
    params: &GenerateParams,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<Generation, EngineError> {
    let model = session.model;
    let hp = &model.hparams;
    if prompt.is_empty() {
        return Err(EngineError::Usage("the prompt is empty".into()));
    }
    if prompt.len() >= session.n_ctx() {
        return Err(EngineError::ContextFull {
            needed: prompt.len() + 1,
            n_ctx: session.n_ctx(),
        });
    }
    let max_drafts =
        match (params.mode, hp.orthrus) {
            (Mode::Ar, _) | (Mode::Auto, None) => 0,
            (Mode::Orthrus, None) => return Err(EngineError::Usage(
                "this is a plain Qwen3 file without a diffusion view; use --mode ar or pass --head"
                    .into(),
            )),
            (_, Some(o)) => {
                let most = o.block_size.saturating_sub(1);
                match params.draft_max {
                    Some(n) if n > most => {
                        return Err(EngineError::Usage(format!(
                        "draft-max {n} is beyond this model's block of {} tokens (at most {most})",
                        o.block_size
                    )))
                    }
                    Some(n) => n,
                    None => most,
                }
            }
        };
    // Measured before the prefill: measuring writes scratch cache slots.
    let mut lengths = match params.mode {
        Mode::Auto if max_drafts > 0 => DraftLengths::Auto(Box::new(DraftPolicy::new(
            session.step_costs_for(&params.sampling)?,
            session.history().clone(),
        ))),
        _ => DraftLengths::Fixed(max_drafts),
    };
    let mask = hp.orthrus.map_or(0, |o| o.mask_token);
    let greedy = params.sampling.is_greedy();
    let mut rng = Rng::new(params.sampling.seed);
    let logits = session.logits_for(&params.sampling);
    let dist = |out: &PassOutput, row: usize| out.distribution(row, &params.sampling);
    let eos: Vec<u32> = if params.ignore_eos {
        Vec::new()
    } else {
        hp.eos_ids.clone()
    };
    let mut sink = Sink {
        tokens: Vec::new(),
        max: params.max_tokens,
        eos: &eos,
        on_token,
        finish: None,
    };
    let mut steps = Vec::new();
    let mut stats = Stats {
        prompt_tokens: prompt.len(),
        histogram: vec![0; max_drafts + 1],
        draft_tokens_per_pos: vec![0; max_drafts],
        accepted_tokens_per_pos: vec![0; max_drafts],
        ..Stats::default()
    };

    let t0 = Instant::now();
    let out = session.prefill(prompt, 0, logits)?;
    let first = if greedy {
        out.argmax[0]
    } else {
        dist(&out, 0).sample(&mut rng)
    };
    stats.prompt_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();

    // x is produced but not yet in the cache; n tokens are.
    let (mut x, mut n) = (first, prompt.len());
    if params.max_tokens == 0 {
        sink.finish = Some(Finish::Length);
    } else {
        sink.push(x);
    }
    while sink.finish.is_none() {
        let room = session.n_ctx() - n;
        if room == 0 {
            sink.finish = Some(Finish::Length);
            break;
        }
        // x is already emitted, so a block of remaining + 1 can still fill
        // the budget; and no mode drafts past --draft-max.
        let limit = sink.remaining().min(room - 1).min(max_drafts);
        let to_build = |rows: usize| session.step_graphs_to_build(rows, n, logits);
        let choice = lengths.choose(limit, n, &to_build);
        let l = choice.drafts + 1;
        let built = session.graphs_built();
        let t = Instant::now();
        let mut blk = vec![mask; l];
        blk[0] = x;
        let (drafts, q, v) = if l > 1 && session.fuses_steps(logits) {
            let mut s = session.step(&blk, n, choice.rows)?;
            (std::mem::take(&mut s.drafts), Vec::new(), s)
        } else {
            let (drafts, q) = if l > 1 {
                let d = session.forward_padded(View::Diffusion, &blk, n, l, logits, choice.rows)?;
                draft(&d, l - 1, greedy, &dist, &mut rng)
            } else {
                (Vec::new(), Vec::new())
            };
            let mut verify = vec![x];
            verify.extend(&drafts);
            let v = session.forward_padded(View::Ar, &verify, n, l, logits, choice.rows)?;
            (drafts, q, v)
        };
        let (accepted, next) = if greedy {
            let a = drafts
                .iter()
                .zip(&v.argmax)
                .take_while(|(d, t)| d == t)
                .count();
            (a, v.argmax[a])
        } else {
            let p: Vec<Distribution> = (0..l).map(|j| dist(&v, j)).collect();
            speculative_accept(&drafts, &q, &p, &mut rng)
        };
        let took = t.elapsed().as_secs_f64();
        let seconds = (session.graphs_built() == built).then_some(took);
        lengths.report(choice, n, accepted, seconds);
        if drafts.is_empty() {
            stats.ar_step_seconds += took;
        }
        if seconds.is_none() {
            stats.build_steps += 1;
            stats.build_seconds += took;
        }
        for &d in &drafts[..accepted] {
            if !sink.push(d) {
                break;
            }
        }
        stats.histogram[accepted] += 1;
        stats.steps += 1;
        if !drafts.is_empty() {
            stats.draft_steps += 1;
            stats.draft_tokens += drafts.len();
            stats.accepted_tokens += accepted;
            for c in &mut stats.draft_tokens_per_pos[..drafts.len()] {
                *c += 1;
            }
            for c in &mut stats.accepted_tokens_per_pos[..accepted] {
                *c += 1;
            }
        }
        if params.mode != Mode::Ar {
            steps.push(Step {
                drafts,
                accepted,
                position: n,
                rows: choice.rows,
                micros: (took * 1e6) as u64,
                built: seconds.is_none(),
            });
        }
        n += accepted + 1;
        x = next;
        sink.push(x);
    }
    if let DraftLengths::Auto(policy) = lengths {
        let (costs, history) = policy.into_parts();
        session.set_step_costs_for(&params.sampling, costs);
        session.set_history(history);
    }
    stats.generation_seconds = t1.elapsed().as_secs_f64();
    stats.generated_tokens = sink.tokens.len();
    let committed: usize = stats
        .histogram
        .iter()
        .enumerate()
        .map(|(a, c)| (a + 1) * c)
        .sum();
    stats.mean_accepted = if stats.steps > 0 {
        committed as f64 / stats.steps as f64
    } else {
        0.0
    };
    stats.prompt_tokens_per_second = prompt.len() as f64 / stats.prompt_seconds.max(1e-9);
    stats.generation_tokens_per_second =
        stats.generated_tokens as f64 / stats.generation_seconds.max(1e-9);
    Ok(Generation {
        tokens: sink.tokens,
        steps,
        finish: sink.finish.unwrap_or(Finish::Length),
        stats,
    })
}

/// How each step's draft length is set.
enum DraftLengths {
    /// Always this many (0: AR steps), through graphs of that many + 1 rows.
    Fixed(usize),
    Auto(Box<DraftPolicy>),
}

impl DraftLengths {
    /// The next step, drafting at most `limit` tokens, at `position`
    /// (`to_build`: see [`DraftPolicy::choose`]).
    fn choose(&mut self, limit: usize, position: usize, to_build: &dyn Fn(usize) -> f64) -> Choice {
        match self {
            DraftLengths::Fixed(k) => Choice {
                drafts: (*k).min(limit),
                rows: *k + 1,
            },
            DraftLengths::Auto(p) => p.choose(limit, position, to_build),
        }
    }

    fn report(&mut self, choice: Choice, position: usize, accepted: usize, seconds: Option<f64>) {
        if let DraftLengths::Auto(p) = self {
            p.report(choice, position, accepted, seconds);
        }
    }
}

/// Drafts from the diffusion pass: rows `0..count` (argmax, or sampled).
fn draft(
    d: &PassOutput,
    count: usize,
    greedy: bool,
    dist: &dyn Fn(&PassOutput, usize) -> Distribution,
    rng: &mut Rng,
) -> (Vec<u32>, Vec<Distribution>) {
    if greedy {
        return (d.argmax[..count].to_vec(), Vec::new());
    }
    let q: Vec<Distribution> = (0..count).map(|j| dist(d, j)).collect();
    (q.iter().map(|q| q.sample(rng)).collect(), q)
}

/// Speculative sampling: accepts draft `j` with probability
/// `min(1, p_j(d)/q_j(d))` in order; at the first rejection the next token
/// comes from `normalize(max(0, p - q))`, and after a full acceptance from
/// the AR distribution of the last row. Returns (accepted, next token).
fn speculative_accept(
    drafts: &[u32],
    q: &[Distribution],
    p: &[Distribution],
    rng: &mut Rng,
) -> (usize, u32) {
    for (j, &d) in drafts.iter().enumerate() {
        let (pd, qd) = (p[j].prob(d), q[j].prob(d));
        if (rng.uniform() as f32) * qd < pd {
            continue;
        }
        let next = p[j]
            .residual(&q[j])
            .unwrap_or_else(|| p[j].clone())
            .sample(rng);
        return (j, next);
    }
    (drafts.len(), p[drafts.len()].sample(rng))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dist(probs: &[(u32, f32)]) -> Distribution {
        let mut probs = probs.to_vec();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Distribution { probs }
    }

    /// Pearson's statistic of `counts` against `want` (probabilities over ids
    /// 0..), and its degrees of freedom; ids `want` gives no mass must not occur.
    fn chi_square(counts: &[usize], want: &Distribution) -> (f64, usize) {
        let n: usize = counts.iter().sum();
        let mut stat = 0.0;
        let mut cells = 0;
        for (id, &c) in counts.iter().enumerate() {
            let e = want.prob(id as u32) as f64 * n as f64;
            if e == 0.0 {
                if c > 0 {
                    return (f64::INFINITY, 1);
                }
                continue;
            }
            stat += (c as f64 - e).powi(2) / e;
            cells += 1;
        }
        (stat, cells - 1)
    }

    /// Upper 0.1% point of chi-square with `df` degrees of freedom (Wilson-Hilferty).
    fn limit(df: usize) -> f64 {
        let k = df as f64;
        k * (1.0 - 2.0 / (9.0 * k) + 3.09 * (2.0 / (9.0 * k)).sqrt()).powi(3)
    }

    /// Lossless speculative sampling: whatever the drafts' distributions q,
    /// every committed token follows the AR distribution p of its position.
    /// Synthetic rows over 6 ids where q and p disagree every way (q above p,
    /// below it, mass where p has none and none where p has some) reach every
    /// branch: acceptance, rejection with a residual draw, full acceptance.
    #[test]
    fn accepted_and_corrected_tokens_follow_the_ar_distribution() {
        let p = [
            dist(&[(0, 0.5), (1, 0.3), (2, 0.2)]),
            dist(&[(1, 0.1), (3, 0.6), (4, 0.3)]),
            dist(&[(2, 0.4), (5, 0.6)]),
        ];
        let q = [
            dist(&[(0, 0.2), (1, 0.5), (5, 0.3)]),
            dist(&[(3, 0.9), (4, 0.1)]),
        ];
        let mut rng = Rng::new(7);
        let n = 200_000;
        // counts[i]: the committed token at position i, when the step commits one there.
        let mut counts = [[0usize; 6]; 3];
        let mut drafted = [0usize; 6];
        let mut lengths = [0usize; 3];
        for _ in 0..n {
            let drafts: Vec<u32> = q.iter().map(|q| q.sample(&mut rng)).collect();
            drafted[drafts[0] as usize] += 1;
            let (accepted, next) = speculative_accept(&drafts, &q, &p, &mut rng);
            lengths[accepted] += 1;
            for (i, &t) in drafts[..accepted].iter().chain([&next]).enumerate() {
                counts[i][t as usize] += 1;
            }
        }
        for (i, (c, p)) in counts.iter().zip(&p).enumerate() {
            let (stat, df) = chi_square(c, p);
            assert!(
                stat < limit(df),
                "position {i}: {c:?} against {p:?}: chi2 {stat:.1} ({df} df)"
            );
        }
        // Every branch ran often enough to be tested.
        assert!(lengths.iter().all(|&l| l > n / 20), "{lengths:?}");
        // The test has power: the drafts themselves (what accepting every
        // draft would commit) are told apart from p.
        let (stat, df) = chi_square(&drafted, &p[0]);
        assert!(stat > limit(df), "drafts not told from p: chi2 {stat:.1}");
    }
}
