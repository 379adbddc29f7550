//! Turning logits into a distribution (temperature, top-k, top-p, min-p) and
//! drawing from it with a seeded generator.

/// Sampling settings; `temperature == 0` means greedy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1 disables.
    pub top_p: f32,
    /// 0 disables.
    pub min_p: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 20,
            top_p: 0.8,
            min_p: 0.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }
}

/// A distribution over a few token ids (the rest have probability 0),
/// sorted by decreasing probability, summing to 1.
#[derive(Clone, Debug, PartialEq)]
pub struct Distribution {
    pub probs: Vec<(u32, f32)>,
}

impl Distribution {
    /// Applies temperature, then top-k, then top-p, then min-p to one row of
    /// logits (the order of the reference implementation; min-p last).
    pub fn from_logits(logits: &[f32], p: &SamplingParams) -> Distribution {
        let scores = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        Distribution::from_scores(scores, p)
    }

    /// As [`Self::from_logits`] from part of a row: `(id, logit)` pairs that
    /// hold its `p.top_k` largest logits (all of them when top-k is off),
    /// the rest taken as -inf. The same distribution, but where several
    /// logits equal the k-th (which of them the part holds decides) or are
    /// NaN (the backends' top-k takes NaN as -inf, `total_cmp` above all).
    pub fn from_scores(mut idx: Vec<(u32, f32)>, p: &SamplingParams) -> Distribution {
        assert!(!idx.is_empty(), "a distribution over no tokens");
        let t = p.temperature.max(1e-6);
        for s in &mut idx {
            s.1 /= t;
        }
        let k = if p.top_k == 0 {
            idx.len()
        } else {
            p.top_k.min(idx.len())
        };
        if k < idx.len() {
            idx.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
            idx.truncate(k);
        }
        idx.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let max = idx[0].1;
        let mut probs: Vec<(u32, f32)> = idx.iter().map(|&(i, l)| (i, (l - max).exp())).collect();
        normalize(&mut probs);
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (n, &(_, q)) in probs.iter().enumerate() {
                acc += q;
                if acc >= p.top_p {
                    keep = n + 1;
                    break;
                }
            }
            probs.truncate(keep);
            normalize(&mut probs);
        }
        if p.min_p > 0.0 {
            let floor = probs[0].1 * p.min_p;
            probs.retain(|&(_, q)| q >= floor);
            normalize(&mut probs);
        }
        Distribution { probs }
    }

    pub fn prob(&self, id: u32) -> f32 {
        self.probs
            .iter()
            .find(|&&(i, _)| i == id)
            .map_or(0.0, |&(_, q)| q)
    }

    pub fn sample(&self, rng: &mut Rng) -> u32 {
        let mut u = rng.uniform() as f32;
        for &(id, q) in &self.probs {
            if u < q {
                return id;
            }
            u -= q;
        }
        self.probs.last().expect("a distribution is never empty").0
    }

    /// `normalize(max(0, self - other))`, or `None` when that is ~0 everywhere.
    pub fn residual(&self, other: &Distribution) -> Option<Distribution> {
        let mut probs: Vec<(u32, f32)> = self
            .probs
            .iter()
            .map(|&(id, q)| (id, (q - other.prob(id)).max(0.0)))
            .filter(|&(_, q)| q > 0.0)
            .collect();
        if probs.iter().map(|p| p.1).sum::<f32>() < 1e-6 {
            return None;
        }
        normalize(&mut probs);
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Some(Distribution { probs })
    }
}

fn normalize(p: &mut [(u32, f32)]) {
    let sum: f32 = p.iter().map(|x| x.1).sum();
    for x in p {
        x.1 /= sum;
    }
}

/// SplitMix64: small, seedable, and good enough for sampling.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform(); // (0, 1]: ln(u) is finite
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()
    }

    /// Gamma(shape, 1), shape > 0 (Marsaglia and Tsang).
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = 1.0 - self.uniform();
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = 1.0 - self.uniform();
            if u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
                return d * v;
            }
        }
    }

    /// Beta(a, b), a and b > 0.
    pub fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a);
        let y = self.gamma(b);
        x / (x + y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_samples_have_the_right_mean_and_spread() {
        let mut rng = Rng::new(3);
        for (a, b) in [(0.8, 0.2), (1.6, 2.4), (2.0, 40.0), (30.0, 10.0)] {
            let n = 20000;
            let xs: Vec<f64> = (0..n).map(|_| rng.beta(a, b)).collect();
            assert!(xs.iter().all(|x| (0.0..=1.0).contains(x)));
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            let (m, v) = (a / (a + b), a * b / ((a + b).powi(2) * (a + b + 1.0)));
            assert!(
                (mean - m).abs() < 0.01,
                "Beta({a}, {b}): mean {mean}, not {m}"
            );
            assert!(
                (var / v - 1.0).abs() < 0.1,
                "Beta({a}, {b}): variance {var}, not {v}"
            );
        }
    }

    #[test]
    fn filters_apply_in_order() {
        let logits = [0.0, 1.0, 2.0, 3.0, -5.0];
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 3,
            top_p: 1.0,
            min_p: 0.0,
            seed: 0,
        };
        let d = Distribution::from_logits(&logits, &p);
        assert_eq!(
            d.probs.iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![3, 2, 1]
        );
        let e: Vec<f32> = [3.0f32, 2.0, 1.0].iter().map(|l| (l - 3.0).exp()).collect();
        let s: f32 = e.iter().sum();
        for (got, want) in d.probs.iter().zip(&e) {
            assert!((got.1 - want / s).abs() < 1e-6);
        }
        let p = SamplingParams { top_p: 0.7, ..p };
        assert_eq!(Distribution::from_logits(&logits, &p).probs.len(), 2);
        let p = SamplingParams {
            top_p: 1.0,
            min_p: 0.5,
            ..p
        };
        assert_eq!(Distribution::from_logits(&logits, &p).probs.len(), 1);
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let d = Distribution {
            probs: vec![(7, 0.75), (9, 0.25)],
        };
        let mut rng = Rng::new(1);
        let n = 20000;
        let sevens = (0..n).filter(|_| d.sample(&mut rng) == 7).count() as f64 / n as f64;
        assert!((sevens - 0.75).abs() < 0.02, "{sevens}");
        let q = Distribution {
            probs: vec![(7, 1.0)],
        };
        assert_eq!(d.residual(&q).unwrap().probs, vec![(9, 1.0)]);
        assert!(q.residual(&d).is_some() && d.residual(&d).is_none());
    }
}
