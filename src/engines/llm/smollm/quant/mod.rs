//! Matrix products over weights kept in GGUF's quantized blocks (Q4_1, Q8_0), for the packed
//! model: far fewer bytes to read per token than f32 weights, which is what bounds generation
//! speed on a CPU. The kernels are chosen at run time ([`Kernels::detect`]): AVX2/FMA where
//! the CPU has them, portable Rust elsewhere, so one binary runs on any x86-64 (or other) CPU.
//! Rows are split over the threads of the model's [`Pool`].

#[cfg(target_arch = "x86_64")]
mod avx2;
mod blocks;
mod q8;

use super::pool::Pool;

pub use blocks::{BlockFormat, BLOCK};
pub use q8::{Q8Activations, Q8Slice, Q8Tokens};

/// Which kernels to run.
#[derive(Debug, Clone, Copy)]
pub enum Kernels {
    /// Plain Rust, for any CPU.
    Portable,
    /// AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    Avx2(avx2::Avx2),
}

impl Kernels {
    /// The fastest kernels this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if let Some(k) = avx2::Avx2::detect() {
            return Kernels::Avx2(k);
        }
        Kernels::Portable
    }

    /// A short name for logs and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            Kernels::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2(_) => "avx2+fma",
        }
    }

    /// `row · x` with activations quantized to 8 bits (integer products).
    pub fn dot_row_q8(self, format: BlockFormat, row: &[u8], x: Q8Slice) -> f32 {
        match self {
            Kernels::Portable => blocks::dot_row_q8(format, row, x),
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2(k) => k.dot_row_q8(format, row, x),
        }
    }

    /// `out[t] = row · x[t]` for several tokens, each exactly as [`Kernels::dot_row_q8`]:
    /// four tokens at a time share each weight block's loading and unpacking.
    pub fn dot_row_q8_tokens(self, format: BlockFormat, row: &[u8], x: &Q8Tokens, out: &mut [f32]) {
        match self {
            Kernels::Portable => blocks::dot_row_tokens(
                row,
                x,
                out,
                |r, q| blocks::dot_row_q8_quad(format, r, q),
                |r, t| blocks::dot_row_q8(format, r, t),
            ),
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2(k) => blocks::dot_row_tokens(
                row,
                x,
                out,
                |r, q| k.dot_row_q8_quad(format, r, q),
                |r, t| k.dot_row_q8(format, r, t),
            ),
        }
    }

    /// `x` quantized to 8 bits per block of 32 ([`Q8Activations::quantize`]).
    pub fn quantize(self, x: &[f32]) -> Q8Activations {
        match self {
            Kernels::Portable => Q8Activations::quantize(x),
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2(k) => k.quantize(x),
        }
    }

    pub fn decode_row(self, format: BlockFormat, row: &[u8], out: &mut [f32]) {
        match self {
            Kernels::Portable => blocks::decode_row(format, row, out),
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2(k) => k.decode_row(format, row, out),
        }
    }

    /// `a · b` over the shorter of the two.
    pub fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Kernels::Portable => blocks::dot(a, b),
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2(k) => k.dot(a, b),
        }
    }

    /// `y += a * x`.
    #[cfg(test)]
    pub fn axpy(self, a: f32, x: &[f32], y: &mut [f32]) {
        match self {
            Kernels::Portable => blocks::axpy(a, x, y),
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2(k) => k.axpy(a, x, y),
        }
    }

    /// Attention scores of query heads that share their keys: `out[h * n + j] = q_h · key_j`
    /// for the heads `q_h = q[h * hd..(h + 1) * hd]` and the keys `key_j =
    /// keys[j * stride..][..hd]` (`n` keys: `out.len()` over the heads), each exactly
    /// [`Kernels::dot`]'s result.
    pub fn scores(self, q: &[f32], hd: usize, keys: &[f32], stride: usize, out: &mut [f32]) {
        match self {
            Kernels::Portable => {
                let n = out.len() / (q.len() / hd).max(1);
                for (o, qh) in out.chunks_exact_mut(n.max(1)).zip(q.chunks_exact(hd)) {
                    for (j, o) in o.iter_mut().enumerate() {
                        *o = blocks::dot(qh, &keys[j * stride..j * stride + hd]);
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2(k) => k.scores(q, hd, keys, stride, out),
        }
    }

    /// Attention's weighted sums of values, for heads that share them: `out[h * hd..][..hd]
    /// = Σ_j p[h * n + j] * values[j * stride..][..hd]` (`p` holds `n` weights per head),
    /// exactly as `Kernels::axpy` (`y += a * x`) for each `j` in order into zeros.
    pub fn weighted_sum(
        self,
        p: &[f32],
        hd: usize,
        values: &[f32],
        stride: usize,
        out: &mut [f32],
    ) {
        match self {
            Kernels::Portable => {
                out.fill(0.0);
                let n = p.len() / (out.len() / hd).max(1);
                for (o, ph) in out.chunks_exact_mut(hd).zip(p.chunks_exact(n.max(1))) {
                    for (j, &pj) in ph.iter().enumerate() {
                        blocks::axpy(pj, &values[j * stride..j * stride + hd], o);
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2(k) => k.weighted_sum(p, hd, values, stride, out),
        }
    }

    /// `out[t][r] = w[r] · x[t]` for a panel of 4 weight rows and one of 3 tokens, each
    /// interleaved by 8 columns (`w[s * 32 + r * 8 + l]`, `x[s * 24 + t * 8 + l]`).
    fn tile(self, w: &[f32], x: &[f32]) -> [[f32; 4]; 3] {
        match self {
            Kernels::Portable => blocks::tile(w, x),
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2(k) => k.tile(w, x),
        }
    }
}

/// A weight matrix `[rows, cols]`, row after row: in quantized blocks as GGUF stores them, or
/// in f32 for formats the kernels do not read.
pub struct QMatrix {
    rows: usize,
    cols: usize,
    data: Data,
}

enum Data {
    Blocks(BlockFormat, Vec<u8>),
    F32(Vec<f32>),
}

/// One row of a [`QMatrix`].
#[derive(Clone, Copy)]
enum Row<'a> {
    Blocks(BlockFormat, &'a [u8]),
    F32(&'a [f32]),
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let format = match &self.data {
            Data::Blocks(format, _) => format!("{format:?}"),
            Data::F32(_) => "F32".into(),
        };
        write!(f, "QMatrix({format}, {}x{})", self.rows, self.cols)
    }
}

impl QMatrix {
    /// Takes the raw blocks of a `[rows, cols]` matrix; `cols` must be a multiple of 32 and
    /// `data` exactly the matrix's bytes.
    pub fn new(
        format: BlockFormat,
        rows: usize,
        cols: usize,
        data: Vec<u8>,
    ) -> Result<Self, String> {
        let want = cols
            .is_multiple_of(BLOCK)
            .then(|| rows.checked_mul(cols / BLOCK * format.block_bytes()))
            .flatten();
        if cols == 0 || want != Some(data.len()) {
            return Err(format!(
                "{format:?} matrix {rows}x{cols}: {} bytes do not make whole rows of blocks",
                data.len()
            ));
        }
        Ok(Self {
            rows,
            cols,
            data: Data::Blocks(format, data),
        })
    }

    /// Takes the f32 weights of a `[rows, cols]` matrix, row after row.
    pub fn from_f32(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self, String> {
        if cols == 0 || rows.checked_mul(cols) != Some(data.len()) {
            return Err(format!(
                "f32 matrix {rows}x{cols}: {} floats do not make whole rows",
                data.len()
            ));
        }
        Ok(Self {
            rows,
            cols,
            data: Data::F32(data),
        })
    }

    /// Stacks matrices of one width: their rows, one after the other. Blocks of different
    /// formats are decoded to f32 to make one matrix.
    pub fn stack(parts: Vec<QMatrix>) -> Result<Self, String> {
        let Some(first) = parts.first() else {
            return Err("nothing to stack".into());
        };
        let cols = first.cols;
        if parts.iter().any(|p| p.cols != cols) {
            return Err("stacked matrices differ in width".into());
        }
        let rows = parts.iter().map(|p| p.rows).sum();
        let format = match &first.data {
            Data::Blocks(f, _) => Some(*f),
            Data::F32(_) => None,
        };
        let same = parts.iter().all(|p| match &p.data {
            Data::Blocks(f, _) => Some(*f) == format,
            Data::F32(_) => format.is_none(),
        });
        match format {
            Some(format) if same => {
                let mut data = Vec::new();
                for p in &parts {
                    if let Data::Blocks(_, d) = &p.data {
                        data.extend_from_slice(d);
                    }
                }
                Self::new(format, rows, cols, data)
            }
            _ => {
                let mut data = vec![0f32; rows * cols];
                let mut at = 0;
                for p in &parts {
                    for r in 0..p.rows {
                        p.decode_row_into(Kernels::Portable, r, &mut data[at..at + cols]);
                        at += cols;
                    }
                }
                Self::from_f32(rows, cols, data)
            }
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn memory_bytes(&self) -> usize {
        match &self.data {
            Data::Blocks(_, d) => d.len(),
            Data::F32(d) => d.len() * 4,
        }
    }

    fn row(&self, r: usize) -> Row<'_> {
        match &self.data {
            Data::Blocks(format, d) => {
                let n = self.cols / BLOCK * format.block_bytes();
                Row::Blocks(*format, &d[r * n..(r + 1) * n])
            }
            Data::F32(d) => Row::F32(&d[r * self.cols..(r + 1) * self.cols]),
        }
    }

    /// Decodes row `r` into `out` (`cols` floats).
    pub fn decode_row_into(&self, k: Kernels, r: usize, out: &mut [f32]) {
        let out = &mut out[..self.cols];
        match self.row(r) {
            Row::Blocks(format, bytes) => k.decode_row(format, bytes, out),
            Row::F32(w) => out.copy_from_slice(w),
        }
    }

    /// Rows per task handed to the pool, whole groups of 4: about a `2 * threads`-th of the
    /// matrix, from [`MIN_TASK_BYTES`] to [`MAX_TASK_BYTES`] of weights. Long runs of rows
    /// stream from memory faster than short ones (the CPU's prefetcher follows them); enough
    /// tasks are left for a thread that the OS pre-empts to delay only a small share.
    fn rows_per_task(&self, threads: usize) -> usize {
        let row_bytes = match &self.data {
            Data::Blocks(format, _) => self.cols / BLOCK * format.block_bytes(),
            Data::F32(_) => self.cols * 4,
        }
        .max(1);
        let bytes =
            (row_bytes * self.rows / (2 * threads.max(1))).clamp(MIN_TASK_BYTES, MAX_TASK_BYTES);
        ((bytes / row_bytes).max(4) / TILE_ROWS) * TILE_ROWS
    }

    /// `out[t * rows + r] = W[r] · x[t * cols..(t + 1) * cols]` for the `seq` rows of `x`,
    /// the rows of `W` split over the pool's threads. Blocks multiply `x` quantized to 8 bits
    /// per block of 32 (integer products, as llama.cpp does), each token on its own, so a
    /// token gives the same result whether it comes alone or with others; f32 rows multiply
    /// `x` itself.
    pub fn matmul(&self, k: Kernels, pool: &Pool, x: &[f32], seq: usize, out: &mut [f32]) {
        let (rows, cols) = (self.rows, self.cols);
        assert!(x.len() == seq * cols && out.len() == seq * rows);
        let per_task = self.rows_per_task(pool.threads());
        // `[row][token]` results, transposed at the end, when there are several tokens.
        let mut by_row = if seq == 1 {
            Vec::new()
        } else {
            vec![0f32; rows * seq]
        };
        match &self.data {
            Data::Blocks(format, data) => {
                let format = *format;
                let row_bytes = cols / BLOCK * format.block_bytes();
                let row = |r: usize| &data[r * row_bytes..(r + 1) * row_bytes];
                let xq = k.quantize(x);
                if seq == 1 {
                    let x1 = xq.slice();
                    pool.for_chunks_mut(out, per_task, |p, o| {
                        for (i, v) in o.iter_mut().enumerate() {
                            *v = k.dot_row_q8(format, row(p * per_task + i), x1);
                        }
                    });
                    return;
                }
                let nb = cols / BLOCK;
                let toks = Q8Tokens::new(&xq, seq, nb);
                pool.for_chunks_mut(&mut by_row, per_task * seq, |p, o| {
                    for (i, col) in o.chunks_exact_mut(seq).enumerate() {
                        k.dot_row_q8_tokens(format, row(p * per_task + i), &toks, col);
                    }
                });
            }
            Data::F32(w) => {
                if seq == 1 {
                    pool.for_chunks_mut(out, per_task, |p, o| {
                        for (i, v) in o.iter_mut().enumerate() {
                            let r = p * per_task + i;
                            *v = k.dot(&w[r * cols..(r + 1) * cols], x);
                        }
                    });
                    return;
                }
                // Four rows at a time against three tokens at a time (f32 tiles).
                let xp = token_panels(x, seq, cols);
                pool.for_chunks_mut(&mut by_row, per_task * seq, |p, o| {
                    self.tile_rows(k, p * per_task, &xp, seq, o)
                });
            }
        }
        for (r, col) in by_row.chunks_exact(seq).enumerate() {
            for (t, &v) in col.iter().enumerate() {
                out[t * rows + r] = v;
            }
        }
    }

    /// Rows `first..` (as many as `out` holds, `out` being `[row][token]`): four rows at a
    /// time are decoded into a panel and multiplied with the tokens' panels, three tokens each.
    fn tile_rows(&self, k: Kernels, first: usize, xp: &[f32], seq: usize, out: &mut [f32]) {
        let cols = self.cols;
        let width = padded(cols);
        let n_rows = out.len() / seq;
        let mut row = vec![0f32; cols];
        let mut wp = vec![0f32; TILE_ROWS * width];
        for g in (0..n_rows).step_by(TILE_ROWS) {
            let nr = (n_rows - g).min(TILE_ROWS);
            for i in 0..TILE_ROWS {
                if i < nr {
                    self.decode_row_into(k, first + g + i, &mut row);
                } else {
                    row.fill(0.0);
                }
                interleave_lane(&row, i, TILE_ROWS, &mut wp);
            }
            for (tr, x) in xp.chunks_exact(TILE_TOKENS * width).enumerate() {
                let res = k.tile(&wp, x);
                let t0 = tr * TILE_TOKENS;
                for (j, rj) in res.iter().enumerate().take(seq - t0) {
                    for (i, &v) in rj.iter().enumerate().take(nr) {
                        out[(g + i) * seq + t0 + j] = v;
                    }
                }
            }
        }
    }
}

/// Bytes of weights per task handed to the pool, at least and at most (see
/// [`QMatrix::rows_per_task`]). On a 2-core machine, 128 KB tasks rather than 16 KB ones
/// took one generated token from about 8.5 to 7 ms.
const MIN_TASK_BYTES: usize = 16 * 1024;
const MAX_TASK_BYTES: usize = 128 * 1024;

/// Rows and tokens of one tile of the prompt kernel.
const TILE_ROWS: usize = 4;
const TILE_TOKENS: usize = 3;

/// A width rounded up to whole vectors of 8.
fn padded(cols: usize) -> usize {
    cols.div_ceil(8) * 8
}

/// Writes `src` as lane `lane` of a panel of `lanes` rows interleaved by 8 columns:
/// `panel[s * 8 * lanes + lane * 8 + l] = src[s * 8 + l]`, zeros past its end.
fn interleave_lane(src: &[f32], lane: usize, lanes: usize, panel: &mut [f32]) {
    for (s, dst) in panel.chunks_exact_mut(8 * lanes).enumerate() {
        let dst = &mut dst[lane * 8..(lane + 1) * 8];
        let from = (s * 8).min(src.len());
        let part = &src[from..(from + 8).min(src.len())];
        dst[..part.len()].copy_from_slice(part);
        dst[part.len()..].fill(0.0);
    }
}

/// The tokens of `x` (`seq` rows of `cols`) as panels of three tokens for the tile kernel.
fn token_panels(x: &[f32], seq: usize, cols: usize) -> Vec<f32> {
    let width = padded(cols);
    let mut xp = vec![0f32; seq.div_ceil(TILE_TOKENS) * TILE_TOKENS * width];
    for (tr, panel) in xp.chunks_exact_mut(TILE_TOKENS * width).enumerate() {
        for j in 0..TILE_TOKENS {
            let t = tr * TILE_TOKENS + j;
            if t < seq {
                interleave_lane(&x[t * cols..(t + 1) * cols], j, TILE_TOKENS, panel);
            }
        }
    }
    xp
}

#[cfg(test)]
mod tests {
    use super::blocks::tests::{reference_dot, reference_dot_q8, Rng};
    use super::*;

    fn all_kernels() -> Vec<Kernels> {
        let mut ks = vec![Kernels::Portable];
        if !matches!(Kernels::detect(), Kernels::Portable) {
            ks.push(Kernels::detect());
        }
        ks
    }

    /// Every kernel set, one token or many, odd row counts: each output is the reference
    /// product of its row and token.
    #[test]
    fn matmul_matches_the_reference_on_every_kernel_set() {
        let mut rng = Rng(7);
        let pool = Pool::new(2).unwrap();
        for format in [BlockFormat::Q4_1, BlockFormat::Q8_0] {
            for (rows, cols) in [(1, 32), (7, 64), (13, 96), (64, 576)] {
                let data = rng.blocks(format, rows * cols / BLOCK);
                let m = QMatrix::new(format, rows, cols, data).unwrap();
                for seq in [1, 2, 4, 5] {
                    let x = rng.floats(seq * cols);
                    for k in all_kernels() {
                        let mut out = vec![f32::NAN; seq * rows];
                        m.matmul(k, &pool, &x, seq, &mut out);
                        for t in 0..seq {
                            for r in 0..rows {
                                let xt = &x[t * cols..(t + 1) * cols];
                                let Row::Blocks(_, row) = m.row(r) else {
                                    unreachable!()
                                };
                                let got = out[t * rows + r];
                                // Integer products with each token quantized on its own.
                                let xq = Q8Activations::quantize(xt);
                                let (want_q, scale) = reference_dot_q8(format, row, xq.slice());
                                let ok = (got as f64 - want_q).abs() <= 1e-6 * (scale + 1e-3);
                                let want = reference_dot(format, row, xt);
                                assert!(
                                    ok,
                                    "{} {format:?} {rows}x{cols} seq {seq} [{t},{r}]: {got} vs {want}",
                                    k.name()
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Attention's kernels on every kernel set: each score is the kernel set's dot product
    /// and each weighted sum its repeated `axpy`, bit for bit, for odd sizes and strides.
    #[test]
    fn attention_kernels_match_their_per_position_form() {
        let mut rng = Rng(5);
        for k in all_kernels() {
            for (hd, heads, stride, n) in [
                (8, 1, 8, 5),
                (12, 3, 20, 7),
                (64, 3, 64, 37),
                (80, 2, 90, 4),
            ] {
                let q = rng.floats(heads * hd);
                let keys = rng.floats(n * stride + hd);
                let key = |j: usize| &keys[j * stride..j * stride + hd];
                let mut s = vec![f32::NAN; heads * n];
                k.scores(&q, hd, &keys, stride, &mut s);
                let p = rng.floats(heads * n);
                let mut o = vec![f32::NAN; heads * hd];
                k.weighted_sum(&p, hd, &keys, stride, &mut o);
                for h in 0..heads {
                    let mut want = vec![0f32; hd];
                    for j in 0..n {
                        let d = k.dot(&q[h * hd..(h + 1) * hd], key(j));
                        assert_eq!(
                            s[h * n + j].to_bits(),
                            d.to_bits(),
                            "{} {hd} {h} {j}",
                            k.name()
                        );
                        k.axpy(p[h * n + j], key(j), &mut want);
                    }
                    let got = &o[h * hd..(h + 1) * hd];
                    assert!(got
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()));
                }
            }
        }
    }

    #[test]
    fn f32_rows_and_mixed_stacks() {
        let mut rng = Rng(11);
        let a = QMatrix::new(BlockFormat::Q4_1, 3, 64, rng.blocks(BlockFormat::Q4_1, 6)).unwrap();
        let b = QMatrix::new(BlockFormat::Q8_0, 2, 64, rng.blocks(BlockFormat::Q8_0, 4)).unwrap();
        let c = QMatrix::from_f32(1, 64, rng.floats(64)).unwrap();
        let mut want = vec![0f32; 6 * 64];
        for (i, (m, r)) in [(&a, 0), (&a, 1), (&a, 2), (&b, 0), (&b, 1), (&c, 0)]
            .into_iter()
            .enumerate()
        {
            m.decode_row_into(Kernels::Portable, r, &mut want[i * 64..(i + 1) * 64]);
        }
        let stacked = QMatrix::stack(vec![a, b, c]).unwrap();
        assert_eq!((stacked.rows(), stacked.memory_bytes()), (6, 6 * 64 * 4));
        let x = rng.floats(3 * 64);
        for k in all_kernels() {
            let mut out = vec![0f32; 3 * 6];
            stacked.matmul(k, &Pool::new(2).unwrap(), &x, 3, &mut out);
            for t in 0..3 {
                for r in 0..6 {
                    let w = &want[r * 64..(r + 1) * 64];
                    let e: f32 = w.iter().zip(&x[t * 64..]).map(|(p, q)| p * q).sum();
                    assert!((out[t * 6 + r] - e).abs() < 1e-4, "{} {t} {r}", k.name());
                }
            }
        }
        // Odd widths work in f32 (the fuzzed model files have them).
        let odd = QMatrix::from_f32(2, 5, rng.floats(10)).unwrap();
        let mut out = vec![0f32; 4];
        odd.matmul(
            Kernels::detect(),
            &Pool::new(1).unwrap(),
            &rng.floats(10),
            2,
            &mut out,
        );
        assert!(out.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(QMatrix::from_f32(2, 3, vec![0.0; 5]).is_err());
        assert!(QMatrix::new(BlockFormat::Q4_1, 2, 33, vec![0; 40]).is_err());
        assert!(QMatrix::new(BlockFormat::Q4_1, 2, 32, vec![0; 39]).is_err());
        assert!(QMatrix::new(BlockFormat::Q8_0, 2, 32, vec![0; 68]).is_ok());
        assert!(QMatrix::new(BlockFormat::Q8_0, usize::MAX, 64, vec![]).is_err());
    }
}
