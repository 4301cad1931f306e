//! Matrix products over weights kept in GGUF's quantized blocks (Q4_1, Q8_0), for the packed
//! model: far fewer bytes to read per token than f32 weights, which is what bounds generation
//! speed on a CPU. The kernels are chosen at run time ([`Kernels::detect`]): AVX2/FMA where
//! the CPU has them, portable Rust elsewhere, so one binary runs on any x86-64 (or other) CPU.
//! Rows are split over the threads of the current rayon pool.

#[cfg(target_arch = "x86_64")]
mod avx2;
mod blocks;

use rayon::prelude::*;

pub use blocks::{BlockFormat, BLOCK};

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

    pub fn dot_row(self, format: BlockFormat, row: &[u8], x: &[f32]) -> f32 {
        match self {
            Kernels::Portable => blocks::dot_row(format, row, x),
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2(k) => k.dot_row(format, row, x),
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
    pub fn axpy(self, a: f32, x: &[f32], y: &mut [f32]) {
        match self {
            Kernels::Portable => blocks::axpy(a, x, y),
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2(k) => k.axpy(a, x, y),
        }
    }

    fn tile(self, w: [&[f32]; 4], x: [&[f32]; 3]) -> [[f32; 4]; 3] {
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

    fn dot_row(&self, k: Kernels, r: usize, x: &[f32]) -> f32 {
        match self.row(r) {
            Row::Blocks(format, bytes) => k.dot_row(format, bytes, x),
            Row::F32(w) => k.dot(w, x),
        }
    }

    /// `out[t * rows + r] = W[r] · x[t * cols..(t + 1) * cols]` for the `seq` rows of `x`,
    /// the rows of `W` split over the current rayon pool's threads.
    pub fn matmul(&self, k: Kernels, x: &[f32], seq: usize, out: &mut [f32]) {
        let (rows, cols) = (self.rows, self.cols);
        assert!(x.len() == seq * cols && out.len() == seq * rows);
        // One piece of whole 4-row groups per thread.
        let groups = rows.div_ceil(4);
        let per_piece = groups.div_ceil(rayon::current_num_threads().max(1)).max(1) * 4;
        if seq == 1 {
            out.par_chunks_mut(per_piece)
                .enumerate()
                .for_each(|(p, o)| {
                    for (i, v) in o.iter_mut().enumerate() {
                        *v = self.dot_row(k, p * per_piece + i, x);
                    }
                });
            return;
        }
        // Each piece fills its rows for every token (`[row][token]`), then a transpose.
        let mut by_row = vec![0f32; rows * seq];
        by_row
            .par_chunks_mut(per_piece * seq)
            .enumerate()
            .for_each(|(p, o)| self.tile_rows(k, p * per_piece, x, seq, o));
        for (r, col) in by_row.chunks_exact(seq).enumerate() {
            for (t, &v) in col.iter().enumerate() {
                out[t * rows + r] = v;
            }
        }
    }

    /// Rows `first..` (as many as `out` holds, `out` being `[row][token]`): four rows are
    /// decoded at a time and multiplied with three tokens at a time.
    fn tile_rows(&self, k: Kernels, first: usize, x: &[f32], seq: usize, out: &mut [f32]) {
        let cols = self.cols;
        let n_rows = out.len() / seq;
        let mut w = vec![0f32; 4 * cols];
        for g in (0..n_rows).step_by(4) {
            let nr = (n_rows - g).min(4);
            for i in 0..nr {
                self.decode_row_into(k, first + g + i, &mut w[i * cols..(i + 1) * cols]);
            }
            let wr: [&[f32]; 4] =
                std::array::from_fn(|i| &w[i.min(nr - 1) * cols..(i.min(nr - 1) + 1) * cols]);
            for t0 in (0..seq).step_by(3) {
                let nt = (seq - t0).min(3);
                let xr: [&[f32]; 3] = std::array::from_fn(|j| {
                    let t = t0 + j.min(nt - 1);
                    &x[t * cols..(t + 1) * cols]
                });
                let res = k.tile(wr, xr);
                for (j, rj) in res.iter().enumerate().take(nt) {
                    for (i, &v) in rj.iter().enumerate().take(nr) {
                        out[(g + i) * seq + t0 + j] = v;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::blocks::tests::{reference_dot, within_rounding, Rng};
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
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for format in [BlockFormat::Q4_1, BlockFormat::Q8_0] {
            for (rows, cols) in [(1, 32), (7, 64), (13, 96), (64, 576)] {
                let data = rng.blocks(format, rows * cols / BLOCK);
                let m = QMatrix::new(format, rows, cols, data).unwrap();
                for seq in [1, 2, 4, 5] {
                    let x = rng.floats(seq * cols);
                    for k in all_kernels() {
                        let mut out = vec![f32::NAN; seq * rows];
                        pool.install(|| m.matmul(k, &x, seq, &mut out));
                        for t in 0..seq {
                            for r in 0..rows {
                                let xt = &x[t * cols..(t + 1) * cols];
                                let Row::Blocks(_, row) = m.row(r) else {
                                    unreachable!()
                                };
                                let want = reference_dot(format, row, xt);
                                let got = out[t * rows + r];
                                assert!(
                                    within_rounding(got, format, row, xt),
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
            stacked.matmul(k, &x, 3, &mut out);
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
        odd.matmul(Kernels::detect(), &rng.floats(10), 2, &mut out);
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
