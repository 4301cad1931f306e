//! The GGUF block formats the packed model keeps its weights in, and the portable kernels:
//! plain Rust that any CPU runs, and the reference the SIMD kernels are tested against.
//!
//! A row of a weight matrix is a run of blocks of 32 weights. Q4_1: `d`, `m` (f16), then 16
//! bytes whose low nibbles are weights 0..16 and high nibbles weights 16..32, each `q * d + m`.
//! Q8_0: `d` (f16), then 32 signed bytes, each `q * d`. Decoding computes exactly what
//! candle's `dequantize` computes (a product, then a sum, both rounded), so a decoded row is
//! bit for bit the f32 weight the f32 path multiplies with.

use half::f16;

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

/// `row · x` for a row of blocks and `x.len()` activations.
pub fn dot_row(format: BlockFormat, row: &[u8], x: &[f32]) -> f32 {
    let mut w = [0f32; BLOCK];
    let mut acc = [0f32; 8];
    for (blk, xb) in row
        .chunks_exact(format.block_bytes())
        .zip(x.chunks_exact(BLOCK))
    {
        decode_block(format, blk, &mut w);
        for (wc, xc) in w.chunks_exact(8).zip(xb.chunks_exact(8)) {
            for i in 0..8 {
                acc[i] += wc[i] * xc[i];
            }
        }
    }
    acc.iter().sum()
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

/// The products of 4 decoded weight rows with 3 activation rows, all of one length:
/// `out[t][r] = w[r] · x[t]`.
pub fn tile(w: [&[f32]; 4], x: [&[f32]; 3]) -> [[f32; 4]; 3] {
    x.map(|xt| w.map(|wr| dot(wr, xt)))
}

#[cfg(test)]
pub(super) mod tests {
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

    /// Whether an f32 dot product `got` is within rounding of the exact `want`: a few units
    /// of f32 precision of the products' magnitudes, `row` weights against `x`.
    pub fn within_rounding(got: f32, format: BlockFormat, row: &[u8], x: &[f32]) -> bool {
        let mut w = vec![0f32; x.len()];
        decode_row(format, row, &mut w);
        let scale: f64 = w
            .iter()
            .zip(x)
            .map(|(&a, &b)| (a as f64 * b as f64).abs())
            .sum();
        let want = reference_dot(format, row, x);
        (got as f64 - want).abs() <= 1e-6 * (scale + 1e-3)
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
    fn portable_dot_matches_the_reference() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for format in [BlockFormat::Q4_1, BlockFormat::Q8_0] {
            for blocks in [1, 2, 18, 48] {
                let row = rng.blocks(format, blocks);
                let x = rng.floats(blocks * BLOCK);
                let got = dot_row(format, &row, &x);
                assert!(within_rounding(got, format, &row, &x), "{got}");
            }
        }
    }
}
