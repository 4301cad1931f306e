//! Next-token choice: greedy (temperature 0) or temperature + nucleus (top-p) sampling
//! with a seeded RNG, so a given seed reproduces a reply.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Candidates considered before falling back to a full sort (top-p mass is almost always
/// inside the best few hundred tokens).
const FAST_CANDIDATES: usize = 256;

/// Picks tokens from logits according to the generation parameters.
pub struct Sampler {
    temperature: f64,
    top_p: f64,
    rng: StdRng,
}

impl Sampler {
    pub fn new(temperature: f64, top_p: f64, seed: u64) -> Self {
        Self {
            temperature,
            top_p,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Chooses the next token id. Non-finite logits are never chosen.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.temperature <= 0.0 || !self.temperature.is_finite() {
            return argmax(logits);
        }
        let max = logits
            .iter()
            .copied()
            .filter(|l| l.is_finite())
            .fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return 0;
        }
        let inv_t = 1.0 / self.temperature;
        // Unnormalised probabilities.
        let probs: Vec<f64> = logits
            .iter()
            .map(|&l| {
                if l.is_finite() {
                    (((l - max) as f64) * inv_t).exp()
                } else {
                    0.0
                }
            })
            .collect();
        let total: f64 = probs.iter().sum();
        let top_p = if self.top_p > 0.0 && self.top_p < 1.0 {
            self.top_p
        } else {
            1.0
        };
        let mut order: Vec<u32> = (0..probs.len() as u32).collect();
        let by_prob_desc = |a: &u32, b: &u32| probs[*b as usize].total_cmp(&probs[*a as usize]);
        let mut nucleus = None;
        if top_p < 1.0 && order.len() > FAST_CANDIDATES {
            order.select_nth_unstable_by(FAST_CANDIDATES, by_prob_desc);
            let head = &mut order[..FAST_CANDIDATES];
            head.sort_unstable_by(by_prob_desc);
            nucleus = cut(head, &probs, total * top_p);
        }
        let nucleus = match nucleus {
            Some(n) => n,
            None => {
                order.sort_unstable_by(by_prob_desc);
                cut(&order, &probs, total * top_p).unwrap_or(order.len())
            }
        };
        let chosen = &order[..nucleus.max(1)];
        let mass: f64 = chosen.iter().map(|&i| probs[i as usize]).sum();
        let mut r = self.rng.random::<f64>() * mass;
        for &i in chosen {
            r -= probs[i as usize];
            if r <= 0.0 {
                return i;
            }
        }
        chosen[chosen.len() - 1]
    }
}

/// Length of the shortest prefix of `sorted` whose mass reaches `target`, if any does.
fn cut(sorted: &[u32], probs: &[f64], target: f64) -> Option<usize> {
    let mut acc = 0.0;
    for (n, &i) in sorted.iter().enumerate() {
        acc += probs[i as usize];
        if acc >= target {
            return Some(n + 1);
        }
    }
    None
}

/// Divides positive logits (multiplies negative ones) by `penalty` for every distinct token
/// in `recent` (the CTRL / llama.cpp repetition penalty).
pub fn apply_repeat_penalty(logits: &mut [f32], recent: &[u32], penalty: f32) {
    if penalty == 1.0 || !penalty.is_finite() || penalty <= 0.0 {
        return;
    }
    let mut seen = std::collections::HashSet::with_capacity(recent.len());
    for &id in recent {
        if !seen.insert(id) {
            continue;
        }
        if let Some(l) = logits.get_mut(id as usize) {
            *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
        }
    }
}

/// Index of the largest finite logit (0 if none).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_max() {
        let mut s = Sampler::new(0.0, 0.9, 1);
        assert_eq!(s.sample(&[0.1, 3.0, f32::NAN, 2.0]), 1);
    }

    #[test]
    fn repeat_penalty_lowers_seen_tokens_once() {
        let mut l = vec![2.0, -1.0, 1.5];
        apply_repeat_penalty(&mut l, &[0, 1, 0, 0], 2.0);
        assert_eq!(l, vec![1.0, -2.0, 1.5]);
        assert_eq!(argmax(&l), 2);
    }

    #[test]
    fn same_seed_same_choices() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 / 10.0).collect();
        let mut a = Sampler::new(0.8, 0.95, 42);
        let mut b = Sampler::new(0.8, 0.95, 42);
        let xs: Vec<u32> = (0..50).map(|_| a.sample(&logits)).collect();
        let ys: Vec<u32> = (0..50).map(|_| b.sample(&logits)).collect();
        assert_eq!(xs, ys);
    }

    #[test]
    fn small_top_p_keeps_only_the_head() {
        let mut logits = vec![0.0f32; 5000];
        logits[7] = 20.0;
        logits[9] = 19.0;
        let mut s = Sampler::new(1.0, 0.5, 3);
        for _ in 0..100 {
            assert_eq!(s.sample(&logits), 7);
        }
        let mut s = Sampler::new(1.0, 0.99, 3);
        let picks: Vec<u32> = (0..200).map(|_| s.sample(&logits)).collect();
        assert!(picks.contains(&7) && picks.contains(&9));
        assert!(picks.iter().all(|&p| p == 7 || p == 9));
    }

    #[test]
    fn full_distribution_when_top_p_is_one() {
        let logits = vec![1.0f32; 4];
        let mut s = Sampler::new(1.0, 1.0, 5);
        let mut seen = [false; 4];
        for _ in 0..200 {
            seen[s.sample(&logits) as usize] = true;
        }
        assert!(seen.iter().all(|&x| x));
    }
}
