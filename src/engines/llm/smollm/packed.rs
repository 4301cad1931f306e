//! The packed model: SmolLM2's forward pass over plain buffers, with the weights kept as the
//! GGUF stores them (SmolLM2's file: Q4_1 layers, a Q8_0 embedding that is also the output
//! projection) and multiplied by [`super::quant`]'s kernels, AVX2 chosen at run time. A
//! generated token reads about 100 MB of weights instead of the f32 path's 540 MB, and that
//! is what bounds generation speed on a CPU.
//!
//! As in llama.cpp, each matrix product quantizes its input to 8 bits per block of 32 and
//! multiplies integers; the weights are the f32 path's, and RMS norm, RoPE, softmax, SiLU and
//! attention run in f32 as candle computes them. Logits stay within about 1% of the f32
//! path's, so greedy replies agree with it until two tokens are near a tie. Each token is
//! quantized on its own, so a token gives the same result in a prompt as alone. Work runs on
//! the model's own threads ([`Pool`]): matrix rows, in runs of up to 128 KB of weights, and
//! attention's KV heads (each with the query heads that share it) are split among them.
//! Tensors in formats the kernels do not read are expanded to f32 at load.

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;

use super::config::{self, Dims, ModelConfig};
use super::kv_cache::{HeadsView, KvCache};
use super::pool::Pool;
use super::quant::{BlockFormat, Kernels, QMatrix, BLOCK};
use super::tensors::{guarded, TensorTable};

struct Layer {
    /// The Q, K and V projections stacked: `[hidden + 2 * kv_width, hidden]`.
    qkv: QMatrix,
    wo: QMatrix,
    /// The gate and up projections stacked: `[2 * ff, hidden]`.
    gate_up: QMatrix,
    down: QMatrix,
    attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
}

/// Immutable packed weights and the thread pool that runs them; `Send + Sync`.
pub struct PackedWeights {
    cfg: ModelConfig,
    ff: usize,
    kernels: Kernels,
    embed: QMatrix,
    /// The output projection, when it is not the embedding (tied weights).
    output: Option<QMatrix>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    /// RoPE cosines and sines, `[max_positions, head_dim / 2]`.
    cos: Vec<f32>,
    sin: Vec<f32>,
    max_positions: usize,
    pool: Pool,
}

/// A tensor as a matrix the kernels read: Q4_1 and Q8_0 blocks as they are, anything else
/// expanded to f32.
fn matrix(qt: QTensor, rows: usize, cols: usize) -> Result<QMatrix, String> {
    let format = match qt.dtype() {
        GgmlDType::Q4_1 => Some(BlockFormat::Q4_1),
        GgmlDType::Q8_0 => Some(BlockFormat::Q8_0),
        _ => None,
    };
    match format {
        Some(format) if cols.is_multiple_of(BLOCK) => {
            let data = guarded("the GGUF tensor reader", || {
                qt.data().map(std::borrow::Cow::into_owned)
            })?;
            QMatrix::new(format, rows, cols, data)
        }
        _ => QMatrix::from_f32(rows, cols, floats(&qt)?),
    }
}

fn floats(qt: &QTensor) -> Result<Vec<f32>, String> {
    guarded("the GGUF tensor reader", || {
        qt.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()
    })
}

impl PackedWeights {
    /// Reads a llama-architecture GGUF. `max_context` bounds the RoPE tables (and so the
    /// sessions' context); `threads` is the size of the pool that runs the forward passes.
    pub fn load<R: std::io::Read + std::io::Seek>(
        ct: &gguf_file::Content,
        reader: &mut R,
        max_context: usize,
        kernels: Kernels,
        threads: usize,
    ) -> Result<Self, String> {
        let file_len = reader
            .seek(std::io::SeekFrom::End(0))
            .map_err(|e| format!("cannot read the file: {e}"))?;
        let table = TensorTable { ct, file_len };
        let (cfg, Dims { vocab, ff }) = config::read(ct, &table)?;
        let hidden = cfg.hidden;
        let kv_width = cfg.kv_width();
        let mut read = |name: &str, rows: usize, cols: usize| {
            matrix(table.read(reader, name, &[rows, cols])?, rows, cols)
        };
        let embed = read("token_embd.weight", vocab, hidden)?;
        let output = match table.shape("output.weight")? {
            Some(_) => Some(read("output.weight", vocab, hidden)?),
            None => None,
        };
        let mut vector = |name: &str| floats(&table.read(reader, name, &[hidden])?);
        let norm = vector("output_norm.weight")?;
        // Layers are added as their tensors are read: the claimed count sizes nothing.
        let mut layers = Vec::new();
        for i in 0..cfg.n_layer {
            let mut lin = |n: &str, rows: usize, cols: usize| {
                matrix(
                    table.read(reader, &format!("blk.{i}.{n}.weight"), &[rows, cols])?,
                    rows,
                    cols,
                )
            };
            let qkv = QMatrix::stack(vec![
                lin("attn_q", hidden, hidden)?,
                lin("attn_k", kv_width, hidden)?,
                lin("attn_v", kv_width, hidden)?,
            ])?;
            let wo = lin("attn_output", hidden, hidden)?;
            let gate_up = QMatrix::stack(vec![
                lin("ffn_gate", ff, hidden)?,
                lin("ffn_up", ff, hidden)?,
            ])?;
            let down = lin("ffn_down", hidden, ff)?;
            let mut vector =
                |n: &str| floats(&table.read(reader, &format!("blk.{i}.{n}.weight"), &[hidden])?);
            layers.push(Layer {
                qkv,
                wo,
                gate_up,
                down,
                attn_norm: vector("attn_norm")?,
                ffn_norm: vector("ffn_norm")?,
            });
        }
        let (cos, sin) = config::rope_angles(cfg.head_dim, cfg.rope_base, max_context);
        let pool =
            Pool::new(threads).map_err(|e| format!("cannot start the model's threads: {e}"))?;
        Ok(Self {
            cfg,
            ff,
            kernels,
            embed,
            output,
            layers,
            norm,
            cos,
            sin,
            max_positions: max_context,
            pool,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Threads that run each forward pass.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Bytes of weights held.
    pub fn memory_bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                l.qkv.memory_bytes()
                    + l.wo.memory_bytes()
                    + l.gate_up.memory_bytes()
                    + l.down.memory_bytes()
                    + (l.attn_norm.len() + l.ffn_norm.len()) * 4
            })
            .sum();
        layers
            + self.embed.memory_bytes()
            + self.output.as_ref().map_or(0, QMatrix::memory_bytes)
            + (self.norm.len() + self.cos.len() + self.sin.len()) * 4
    }

    /// An empty cache shaped for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new_heads(self.cfg.n_layer, self.cfg.n_kv_head, self.cfg.head_dim)
    }

    /// Runs `ids` at positions `cache.len()..`, appends their K/V to the cache and returns
    /// the logits (vocabulary-sized) for the last of them.
    pub fn forward(&self, ids: &[u32], cache: &mut KvCache) -> candle_core::Result<Vec<f32>> {
        let (seq, pos) = (ids.len(), cache.len());
        if seq == 0 {
            candle_core::bail!("forward called with no tokens");
        }
        if pos + seq > self.max_positions {
            candle_core::bail!(
                "position {} beyond context {}",
                pos + seq,
                self.max_positions
            );
        }
        if let Some(id) = ids.iter().find(|&&id| id as usize >= self.embed.rows()) {
            candle_core::bail!("token id {id} outside the vocabulary");
        }
        self.run(ids, cache)
    }

    fn run(&self, ids: &[u32], cache: &mut KvCache) -> candle_core::Result<Vec<f32>> {
        let cfg = &self.cfg;
        let k = self.kernels;
        let (seq, pos) = (ids.len(), cache.len());
        let (hidden, kvw, ff) = (cfg.hidden, cfg.kv_width(), self.ff);
        let qkv_w = hidden + 2 * kvw;
        let eps = cfg.rms_eps as f32;
        let scale = (1.0 / (cfg.head_dim as f64).sqrt()) as f32;

        let mut x = vec![0f32; seq * hidden];
        for (t, &id) in ids.iter().enumerate() {
            self.embed
                .decode_row_into(k, id as usize, &mut x[t * hidden..(t + 1) * hidden]);
        }
        let mut h = vec![0f32; seq * hidden];
        let mut qkv = vec![0f32; seq * qkv_w];
        let mut q = vec![0f32; seq * hidden];
        let mut kn = vec![0f32; seq * kvw];
        let mut vn = vec![0f32; seq * kvw];
        let mut y = vec![0f32; seq * hidden];
        let mut o = vec![0f32; seq * hidden];
        let mut gu = vec![0f32; seq * 2 * ff];
        let mut act = vec![0f32; seq * ff];
        for (li, layer) in self.layers.iter().enumerate() {
            rms_norm(&x, &layer.attn_norm, eps, &mut h);
            layer.qkv.matmul(k, &self.pool, &h, seq, &mut qkv);
            for t in 0..seq {
                let row = &qkv[t * qkv_w..(t + 1) * qkv_w];
                let at = pos + t;
                let qt = &mut q[t * hidden..(t + 1) * hidden];
                self.rope(&row[..hidden], at, qt);
                qt.iter_mut().for_each(|v| *v *= scale);
                self.rope(
                    &row[hidden..hidden + kvw],
                    at,
                    &mut kn[t * kvw..(t + 1) * kvw],
                );
                vn[t * kvw..(t + 1) * kvw].copy_from_slice(&row[hidden + kvw..]);
            }
            let kv = cache.append_heads(li, &kn, &vn)?;
            attention(k, &self.pool, cfg, &q, &kv, pos, &mut y);
            layer.wo.matmul(k, &self.pool, &y, seq, &mut o);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            rms_norm(&x, &layer.ffn_norm, eps, &mut h);
            layer.gate_up.matmul(k, &self.pool, &h, seq, &mut gu);
            for (a, g) in act.chunks_exact_mut(ff).zip(gu.chunks_exact(2 * ff)) {
                let (gate, up) = g.split_at(ff);
                for ((a, &g), &u) in a.iter_mut().zip(gate).zip(up) {
                    *a = g / (1.0 + (-g).exp()) * u;
                }
            }
            layer.down.matmul(k, &self.pool, &act, seq, &mut o);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
        }
        cache.advance(seq);
        let mut last = vec![0f32; hidden];
        rms_norm(&x[(seq - 1) * hidden..], &self.norm, eps, &mut last);
        let output = self.output.as_ref().unwrap_or(&self.embed);
        let mut logits = vec![0f32; output.rows()];
        output.matmul(k, &self.pool, &last, 1, &mut logits);
        Ok(logits)
    }

    /// Interleaved RoPE (pairs of neighbours rotated) of `src`, one or more heads, at `pos`.
    fn rope(&self, src: &[f32], pos: usize, dst: &mut [f32]) {
        let half = self.cfg.head_dim / 2;
        let cos = &self.cos[pos * half..(pos + 1) * half];
        let sin = &self.sin[pos * half..(pos + 1) * half];
        for (s, d) in src
            .chunks_exact(self.cfg.head_dim)
            .zip(dst.chunks_exact_mut(self.cfg.head_dim))
        {
            for i in 0..half {
                let (a, b) = (s[2 * i], s[2 * i + 1]);
                d[2 * i] = a * cos[i] - b * sin[i];
                d[2 * i + 1] = a * sin[i] + b * cos[i];
            }
        }
    }
}

/// RMS norm of each row of `x` (as candle computes it: sum of squares in order, then divide
/// by the root and multiply by the weight).
fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    for (row, o) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let sum2 = row.iter().map(|&v| v * v).sum::<f32>();
        let m = (sum2 / n as f32 + eps).sqrt();
        for ((o, &v), &a) in o.iter_mut().zip(row).zip(w) {
            *o = v / m * a;
        }
    }
}

/// Causal attention of the queries at positions `pos..` (`q`: `[seq, hidden]`, already
/// scaled) over the cached keys and values (head by head), into `y` (`[seq, hidden]`). Each
/// token's KV heads run in parallel, each with the query heads that share it.
fn attention(
    k: Kernels,
    pool: &Pool,
    cfg: &ModelConfig,
    q: &[f32],
    kv: &HeadsView,
    pos: usize,
    y: &mut [f32],
) {
    let hd = cfg.head_dim;
    let (n_rep, groups) = (cfg.n_head / cfg.n_kv_head, cfg.n_kv_head);
    // One task per token and KV head: the query heads that share it, whose outputs are
    // consecutive in `y` (`[token, head, head_dim]`).
    pool.for_chunks_mut(y, n_rep * hd, |i, out| {
        let (t, g) = (i / groups, i % groups);
        let n = pos + t + 1;
        let mut p = vec![0f32; n_rep * n];
        let qt = &q[i * n_rep * hd..(i + 1) * n_rep * hd];
        let at = g * kv.head_stride;
        k.scores(qt, hd, &kv.k[at..], hd, &mut p);
        p.chunks_exact_mut(n).for_each(softmax);
        k.weighted_sum(&p, hd, &kv.v[at..], hd, out);
    });
}

/// Softmax in place, as candle's `softmax_last_dim`: subtract the maximum, exponentiate, sum
/// in order, divide.
fn softmax(p: &mut [f32]) {
    let max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    p.iter_mut().for_each(|v| *v = (*v - max).exp());
    let sum: f32 = p.iter().sum();
    p.iter_mut().for_each(|v| *v /= sum);
}

#[cfg(test)]
mod tests {
    use super::super::{default_model_path, KernelChoice, LoadOptions, SmolLm, WeightFormat};

    fn load(format: WeightFormat, kernels: KernelChoice) -> SmolLm {
        let options = LoadOptions {
            weight_format: format,
            max_context: 256,
            kernels,
            ..LoadOptions::default()
        };
        SmolLm::load_with(&default_model_path(), &options).unwrap()
    }

    fn logits(lm: &SmolLm, pieces: &[&[u32]]) -> Vec<Vec<f32>> {
        let mut cache = lm.weights().new_cache();
        pieces
            .iter()
            .map(|ids| lm.weights().forward(ids, &mut cache).unwrap())
            .collect()
    }

    /// The packed pass gives the f32 path's logits, with the detected kernels and with the
    /// portable ones, whether the tokens come in one piece or several (the cache carried
    /// between them): activations are quantized to 8 bits, so within a few percent of the
    /// largest logit, and with the same top token.
    #[test]
    fn matches_the_f32_path() {
        let ids: Vec<u32> = vec![1, 9690, 198, 21350, 314, 253, 5356, 30, 2, 198, 1, 4093];
        let pieces: [&[u32]; 4] = [&ids[..5], &ids[5..], &[28], &[253]];
        let want = logits(&load(WeightFormat::F32, KernelChoice::Detect), &pieces);
        for kernels in [KernelChoice::Detect, KernelChoice::Portable] {
            let got = logits(&load(WeightFormat::Packed, kernels), &pieces);
            for ((g, w), piece) in got.iter().zip(&want).zip(pieces) {
                let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
                let diff = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                let argmax = super::super::sampling::argmax;
                eprintln!("{kernels:?} {piece:?}: largest difference {}", diff / scale);
                assert!(
                    diff / scale < 6e-2,
                    "{kernels:?} {piece:?}: {}",
                    diff / scale
                );
                assert_eq!(argmax(g), argmax(w), "{kernels:?} {piece:?}");
            }
        }
    }

    /// Greedy replies of the packed and f32 paths, word by word. The activations' 8-bit
    /// quantization moves the logits by well under 1%, so replies agree until two tokens are
    /// near a tie; then they may go different (equally plausible) ways.
    #[test]
    fn greedy_replies_agree_with_the_f32_path() {
        use super::super::{ChatMessage, GenerateParams};
        use std::sync::Arc;
        let prompts = [
            "What is the capital of France? Answer in one sentence.",
            "Hi, are you open on Saturday?",
            "Can I book a check-up for Monday morning?",
            "Name three fruits.",
        ];
        let params = GenerateParams {
            max_tokens: 24,
            temperature: 0.0,
            ..GenerateParams::default()
        };
        let reply = |lm: &Arc<SmolLm>, user: &str| {
            let msgs = [
                ChatMessage::system("You are a helpful assistant. Answer briefly."),
                ChatMessage::user(user),
            ];
            let mut text = String::new();
            lm.new_session()
                .generate(&msgs, &params, &|| false, &mut |d| {
                    text.push_str(d);
                    true
                })
                .unwrap();
            text
        };
        let f32 = Arc::new(load(WeightFormat::F32, KernelChoice::Detect));
        let packed = Arc::new(load(WeightFormat::Packed, KernelChoice::Detect));
        let mut same_words = Vec::new();
        for user in prompts {
            let (a, b) = (reply(&f32, user), reply(&packed, user));
            let (wa, wb): (Vec<&str>, Vec<&str>) = (
                a.split_whitespace().collect(),
                b.split_whitespace().collect(),
            );
            let n = wa.iter().zip(&wb).take_while(|(x, y)| x == y).count();
            eprintln!("{user:?}\n  f32:    {a:?}\n  packed: {b:?}\n  same first {n} words");
            same_words.push((n, wa.len()));
        }
        // Every reply starts the same; half are the same throughout (measured: 2 of these 4,
        // the others parting after 1 and 3 words).
        assert!(same_words.iter().all(|&(n, _)| n >= 1), "{same_words:?}");
        let whole = same_words.iter().filter(|&&(n, len)| n == len).count();
        assert!(whole * 2 >= prompts.len(), "{same_words:?}");
    }
}
