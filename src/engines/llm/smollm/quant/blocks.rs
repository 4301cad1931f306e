//! The GGUF block formats the packed model keeps its weights in, and the portable kernels:
//! plain Rust that any CPU runs, and the reference the SIMD kernels are tested against.
//!
//! A row of a weight matrix is a run of blocks of 32 weights. Q4_1: `d`, `m` (f16), then 16
//! bytes whose low nibbles are weights 0..16 and high nibbles weights 16..32, each `q * d + m`.
//! Q8_0: `d` (f16), then 32 signed bytes, each `q * d`. Decoding computes exactly what
//! candle's `dequantize` computes (a product, then a sum, both rounded), so a decoded row is
//! bit for bit the f32 weight the f32 path multiplies with.

use half::f16;

use super::q8::{Q8Quad, Q8Slice, Q8Tokens};

/// Weights per block, in every supported format.
pub const BLOCK: usize = 32;

/// A supported block format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockFormat {
    Q4_1,
    Q8_0,
}

impl BlockFormat {
    /// Bytes of one block of 32 weights.
    pub const fn block_bytes(self) -> usize {
        match self {
            BlockFormat::Q4_1 => 20,
            BlockFormat::Q8_0 => 34,
        }
    }
}

/// The f16 at bytes `i..i + 2`, as f32.
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Decodes one block into its 32 weights.
fn decode_block(format: BlockFormat, blk: &[u8], out: &mut [f32]) {
    match format {
        BlockFormat::Q4_1 => {
            let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
            for (j, &q) in blk[4..20].iter().enumerate() {
                out[j] = f32::from(q & 0x0F) * d + m;
                out[j + 16] = f32::from(q >> 4) * d + m;
            }
        }
        BlockFormat::Q8_0 => {
            let d = f16_at(blk, 0);
            for (o, &q) in out[..BLOCK].iter_mut().zip(&blk[2..34]) {
                *o = f32::from(q as i8) * d;
            }
        }
    }
}

/// Decodes a row of blocks into `out` (`out.len()` weights).
pub fn decode_row(format: BlockFormat, row: &[u8], out: &mut [f32]) {
    for (blk, o) in row
        .chunks_exact(format.block_bytes())
        .zip(out.chunks_exact_mut(BLOCK))
    {
        decode_block(format, blk, o);
    }
}

/// `row · x` for a row of blocks and activations quantized to 8 bits: integer products per
/// block, then `d_w d_x Σ q_w q_x (+ m_w s_x for Q4_1)`.
pub fn dot_row_q8(format: BlockFormat, row: &[u8], x: Q8Slice) -> f32 {
    let mut acc = 0f32;
    for (((blk, xq), &dx), &sx) in row
        .chunks_exact(format.block_bytes())
        .zip(x.q.chunks_exact(BLOCK))
        .zip(x.d)
        .zip(x.s)
    {
        let dw = f16_at(blk, 0);
        match format {
            BlockFormat::Q4_1 => {
                let mut sum = 0i32;
                for (j, &b) in blk[4..20].iter().enumerate() {
                    sum += i32::from(b & 0x0F) * i32::from(xq[j]);
                    sum += i32::from(b >> 4) * i32::from(xq[j + 16]);
                }
                acc += dw * dx * sum as f32 + f16_at(blk, 2) * sx;
            }
            BlockFormat::Q8_0 => {
                let sum: i32 = blk[2..34]
                    .iter()
                    .zip(xq)
                    .map(|(&w, &x)| i32::from(w as i8) * i32::from(x))
                    .sum();
                acc += dw * dx * sum as f32;
            }
        }
    }
    acc
}

/// `row · x[t]` for four interleaved tokens, each exactly as [`dot_row_q8`].
pub fn dot_row_q8_quad(format: BlockFormat, row: &[u8], x: &Q8Quad) -> [f32; 4] {
    let mut acc = [0f32; 4];
    for (((blk, xq), dx), sx) in row
        .chunks_exact(format.block_bytes())
        .zip(x.q.chunks_exact(4 * BLOCK))
        .zip(x.d.chunks_exact(4))
        .zip(x.s.chunks_exact(4))
    {
        let dw = f16_at(blk, 0);
        for t in 0..4 {
            let xq = &xq[t * BLOCK..(t + 1) * BLOCK];
            match format {
                BlockFormat::Q4_1 => {
                    let mut sum = 0i32;
                    for (j, &b) in blk[4..20].iter().enumerate() {
                        sum += i32::from(b & 0x0F) * i32::from(xq[j]);
                        sum += i32::from(b >> 4) * i32::from(xq[j + 16]);
                    }
                    acc[t] += dw * dx[t] * sum as f32 + f16_at(blk, 2) * sx[t];
                }
                BlockFormat::Q8_0 => {
                    let sum: i32 = blk[2..34]
                        .iter()
                        .zip(xq)
                        .map(|(&w, &x)| i32::from(w as i8) * i32::from(x))
                        .sum();
                    acc[t] += dw * dx[t] * sum as f32;
                }
            }
        }
    }
    acc
}

/// `out[t] = row · x[t]` for several tokens, each exactly as a single-token kernel: four at a
/// time through `quad`, the rest through `one`.
pub fn dot_row_tokens(
    row: &[u8],
    x: &Q8Tokens,
    out: &mut [f32],
    quad: impl Fn(&[u8], &Q8Quad) -> [f32; 4],
    one: impl Fn(&[u8], Q8Slice) -> f32,
) {
    let (four, rest) = out.split_at_mut(x.quads.len() * 4);
    for (o, q) in four.chunks_exact_mut(4).zip(&x.quads) {
        o.copy_from_slice(&quad(row, q));
    }
    for (o, &t) in rest.iter_mut().zip(&x.rest) {
        *o = one(row, t);
    }
}

/// `a · b` over the shorter of the two.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y += a * x`.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// The products of a panel of 4 decoded weight rows with a panel of 3 tokens, both
/// interleaved by 8 columns (`w[s * 32 + r * 8 + l]`, `x[s * 24 + t * 8 + l]`):
/// `out[t][r] = w[r] · x[t]`.
pub fn tile(w: &[f32], x: &[f32]) -> [[f32; 4]; 3] {
    let mut acc = [[[0f32; 8]; 4]; 3];
    for (ws, xs) in w.chunks_exact(32).zip(x.chunks_exact(24)) {
        for (t, xt) in xs.chunks_exact(8).enumerate() {
            for (r, wr) in ws.chunks_exact(8).enumerate() {
                for l in 0..8 {
                    acc[t][r][l] += wr[l] * xt[l];
                }
            }
        }
    }
    acc.map(|a| a.map(|v| v.iter().sum()))
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::q8::Q8Activations;
    use super::*;

    /// A small deterministic generator (xorshift), so the tests need no extra crate.
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        /// Uniform in [-1, 1).
        pub fn float(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
        pub fn floats(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.float()).collect()
        }
        /// `n` random blocks of `format` with small, finite scales.
        pub fn blocks(&mut self, format: BlockFormat, n: usize) -> Vec<u8> {
            let mut out = Vec::with_capacity(n * format.block_bytes());
            for _ in 0..n {
                let d = f16::from_f32(self.float() * 0.05).to_le_bytes();
                out.extend_from_slice(&d);
                if format == BlockFormat::Q4_1 {
                    out.extend_from_slice(&f16::from_f32(self.float() * 0.2).to_le_bytes());
                }
                while out.len() % format.block_bytes() != 0 {
                    out.push(self.next() as u8);
                }
            }
            out
        }
    }

    /// The straightforward definition: decode, then multiply and add in f64.
    pub fn reference_dot(format: BlockFormat, row: &[u8], x: &[f32]) -> f64 {
        let mut w = vec![0f32; x.len()];
        decode_row(format, row, &mut w);
        w.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum()
    }

    /// `row · x` in f64 from the decoded weights and the dequantized activations: what the
    /// integer kernels compute, up to f32 rounding.
    pub fn reference_dot_q8(format: BlockFormat, row: &[u8], x: Q8Slice) -> (f64, f64) {
        let mut w = vec![0f32; x.q.len()];
        decode_row(format, row, &mut w);
        let mut sum = 0f64;
        let mut scale = 0f64;
        for (i, (&w, &q)) in w.iter().zip(x.q).enumerate() {
            let p = w as f64 * q as f64 * x.d[i / BLOCK] as f64;
            sum += p;
            scale += p.abs();
        }
        (sum, scale)
    }

    #[test]
    fn decoding_matches_the_format_definition() {
        // Q4_1: d = 0.5, m = -1, bytes 0x21 -> weights 1 (low) and 2 (high).
        let mut blk = Vec::new();
        blk.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
        blk.extend_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        blk.extend_from_slice(&[0x21; 16]);
        let mut w = [0f32; BLOCK];
        decode_row(BlockFormat::Q4_1, &blk, &mut w);
        assert_eq!(w[0], 1.0 * 0.5 - 1.0);
        assert_eq!(w[16], 2.0 * 0.5 - 1.0);
        // Q8_0: d = 0.25, byte 0xFC = -4 -> -1.
        let mut blk = f16::from_f32(0.25).to_le_bytes().to_vec();
        blk.extend_from_slice(&[0xFC; 32]);
        decode_row(BlockFormat::Q8_0, &blk, &mut w);
        assert!(w.iter().all(|&v| v == -1.0));
    }

    #[test]
    fn portable_integer_dot_matches_the_reference() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for format in [BlockFormat::Q4_1, BlockFormat::Q8_0] {
            for blocks in [1, 2, 18, 48] {
                let row = rng.blocks(format, blocks);
                let x = Q8Activations::quantize(&rng.floats(blocks * BLOCK));
                let (want, scale) = reference_dot_q8(format, &row, x.slice());
                let got = dot_row_q8(format, &row, x.slice()) as f64;
                assert!((got - want).abs() <= 1e-6 * (scale + 1e-3), "{got} {want}");
            }
        }
    }
}
