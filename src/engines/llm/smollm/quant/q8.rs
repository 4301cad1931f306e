//! Activations quantized to 8 bits per block of 32, the other operand of the integer dot
//! products that generation runs (as llama.cpp's `vec_dot_q4_1_q8_1`): an f32 scale `d` and
//! 32 signed bytes per block, plus `s = d * Σ q` for Q4_1's offset term. One vector is
//! quantized once and shared by every row and thread; every kernel set reads the same bytes.

use super::blocks::BLOCK;

/// A vector of activations in 8-bit blocks.
#[derive(Debug, Clone, Default)]
pub struct Q8Activations {
    /// The quantized values, `x ≈ q * d` block by block.
    pub q: Vec<i8>,
    /// Per block: the scale `d` (the block's largest magnitude over 127).
    pub d: Vec<f32>,
    /// Per block: `d * Σ q`.
    pub s: Vec<f32>,
}

impl Q8Activations {
    /// Quantizes `x` (a whole number of blocks), rounding to nearest.
    pub fn quantize(x: &[f32]) -> Self {
        let blocks = x.len() / BLOCK;
        let mut out = Self {
            q: Vec::with_capacity(blocks * BLOCK),
            d: Vec::with_capacity(blocks),
            s: Vec::with_capacity(blocks),
        };
        for b in x.chunks_exact(BLOCK) {
            let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for &v in b {
                // |v * inv| <= 127 (up to rounding), so the cast never saturates wrongly.
                let q = (v * inv).round() as i8;
                sum += i32::from(q);
                out.q.push(q);
            }
            out.d.push(d);
            out.s.push(d * sum as f32);
        }
        out
    }

    /// All the blocks.
    pub fn slice(&self) -> Q8Slice<'_> {
        Q8Slice {
            q: &self.q,
            d: &self.d,
            s: &self.s,
        }
    }

    /// Blocks `first..first + n`: one token's, when several tokens were quantized together.
    pub fn range(&self, first: usize, n: usize) -> Q8Slice<'_> {
        Q8Slice {
            q: &self.q[first * BLOCK..(first + n) * BLOCK],
            d: &self.d[first..first + n],
            s: &self.s[first..first + n],
        }
    }
}

/// Some blocks of a [`Q8Activations`] (one token's, typically).
#[derive(Debug, Clone, Copy)]
pub struct Q8Slice<'a> {
    pub q: &'a [i8],
    pub d: &'a [f32],
    pub s: &'a [f32],
}

impl Q8Slice<'_> {
    /// Blocks held.
    pub fn blocks(&self) -> usize {
        self.d.len()
    }
}

/// Four tokens' blocks interleaved, for the kernels that read each weight block once for
/// four tokens: block `b` of token `t` at `q[(b * 4 + t) * 32..]`, `d[b * 4 + t]`, `s[b * 4 + t]`.
#[derive(Debug, Clone)]
pub struct Q8Quad {
    pub q: Vec<i8>,
    pub d: Vec<f32>,
    pub s: Vec<f32>,
}

impl Q8Quad {
    /// Interleaves four tokens of as many blocks each.
    pub fn new(tokens: [Q8Slice; 4]) -> Self {
        let nb = tokens[0].blocks();
        assert!(tokens
            .iter()
            .all(|t| t.blocks() == nb && t.q.len() == nb * BLOCK));
        let mut out = Self {
            q: Vec::with_capacity(nb * 4 * BLOCK),
            d: Vec::with_capacity(nb * 4),
            s: Vec::with_capacity(nb * 4),
        };
        for b in 0..nb {
            for t in &tokens {
                out.q.extend_from_slice(&t.q[b * BLOCK..(b + 1) * BLOCK]);
                out.d.push(t.d[b]);
                out.s.push(t.s[b]);
            }
        }
        out
    }

    /// Blocks per token.
    pub fn blocks(&self) -> usize {
        self.d.len() / 4
    }
}

/// Several tokens' activations for the multi-token kernels: groups of four interleaved
/// ([`Q8Quad`]), then the remaining tokens (fewer than four) one by one.
#[derive(Debug, Clone)]
pub struct Q8Tokens<'a> {
    pub quads: Vec<Q8Quad>,
    pub rest: Vec<Q8Slice<'a>>,
}

impl<'a> Q8Tokens<'a> {
    /// `x` holds `seq` tokens of `blocks` blocks each.
    pub fn new(x: &'a Q8Activations, seq: usize, blocks: usize) -> Self {
        let token = |t: usize| x.range(t * blocks, blocks);
        let full = seq / 4 * 4;
        Self {
            quads: (0..full)
                .step_by(4)
                .map(|t| Q8Quad::new([token(t), token(t + 1), token(t + 2), token(t + 3)]))
                .collect(),
            rest: (full..seq).map(token).collect(),
        }
    }

    /// Tokens held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.quads.len() * 4 + self.rest.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantizes_to_the_nearest_step() {
        let mut x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.1).collect();
        x[40..].fill(0.0);
        let a = Q8Activations::quantize(&x);
        assert_eq!(a.d.len(), 2);
        assert_eq!(a.d[0], 2.0 / 127.0);
        for (i, &v) in x.iter().enumerate().take(32) {
            let back = f32::from(a.q[i]) * a.d[0];
            assert!(
                (back - v).abs() <= a.d[0] / 2.0 + 1e-6,
                "{i}: {back} vs {v}"
            );
        }
        let sum: i32 = a.q[..32].iter().map(|&q| i32::from(q)).sum();
        assert_eq!(a.s[0], a.d[0] * sum as f32);
        // An all-zero block has no scale and no values.
        let z = Q8Activations::quantize(&[0.0; 32]);
        assert_eq!((z.d[0], z.s[0]), (0.0, 0.0));
        assert!(z.q.iter().all(|&q| q == 0));
    }
}
