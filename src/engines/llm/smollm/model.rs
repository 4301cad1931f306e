//! SmolLM2 (llama architecture) forward pass over shared weights, with the KV cache kept
//! outside the weights so that many sessions can use one copy of the model.
//!
//! Follows candle's `quantized_llama` (interleaved RoPE as GGUF llama expects, RMS norm,
//! SwiGLU MLP, grouped-query attention) but: the cache is a per-session [`KvCache`] that
//! grows in chunks and can be truncated, attention groups query heads per KV head instead of
//! copying K/V, and linear weights can be dequantized to f32 at load (much faster on CPU than
//! candle's quantized kernels). The default packed format runs its own pass (packed.rs).

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use std::sync::Arc;

use super::config::{self, Dims, ModelConfig};
pub use super::kv_cache::KvCache;
use super::tensors::TensorTable;
use super::WeightFormat;

struct Layer {
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    w_gate: QMatMul,
    w_up: QMatMul,
    w_down: QMatMul,
    attn_norm: Tensor,
    ffn_norm: Tensor,
}

/// Immutable model weights; `Send + Sync`, shared by all sessions.
pub struct Weights {
    cfg: ModelConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    output: QMatMul,
    cos: Tensor,
    sin: Tensor,
    device: Device,
}

/// Weights as `candle`'s `QMatMul` in the requested format. (Storing f32 weights transposed
/// for the gemm was measured: no faster, both are memory-bound here.)
fn linear(qt: QTensor, format: WeightFormat) -> candle_core::Result<QMatMul> {
    let float = matches!(
        qt.dtype(),
        GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16
    );
    match format {
        WeightFormat::F16 => Ok(QMatMul::TensorF16(qt.dequantize_f16(&qt.device())?)),
        WeightFormat::F32 => Ok(QMatMul::Tensor(qt.dequantize(&qt.device())?)),
        WeightFormat::Quantized if float => Ok(QMatMul::Tensor(qt.dequantize(&qt.device())?)),
        // The packed format has its own forward pass (packed.rs); here it is the stored blocks.
        WeightFormat::Quantized | WeightFormat::Packed => Ok(QMatMul::QTensor(Arc::new(qt))),
    }
}

impl Weights {
    /// Reads a llama-architecture GGUF. `max_context` bounds the RoPE tables (and so the
    /// sessions' context).
    pub fn load<R: std::io::Read + std::io::Seek>(
        ct: &gguf_file::Content,
        reader: &mut R,
        format: WeightFormat,
        max_context: usize,
    ) -> Result<Self, String> {
        let file_len = reader
            .seek(std::io::SeekFrom::End(0))
            .map_err(|e| format!("cannot read the file: {e}"))?;
        let table = TensorTable { ct, file_len };
        let (cfg, Dims { vocab, ff }) = config::read(ct, &table)?;
        let hidden = cfg.hidden;
        let device = Device::Cpu;
        let cerr = |e: candle_core::Error| e.to_string();
        let embed_q = table.read(reader, "token_embd.weight", &[vocab, hidden])?;
        let embed = embed_q.dequantize(&device).map_err(cerr)?;
        let output = match table.shape("output.weight")? {
            Some(_) => linear(
                table.read(reader, "output.weight", &[vocab, hidden])?,
                format,
            )
            .map_err(cerr)?,
            // Tied embeddings: in f32 mode share the dequantized table (no extra copy).
            None if format == WeightFormat::F32 => QMatMul::Tensor(embed.clone()),
            None => linear(embed_q, format).map_err(cerr)?,
        };
        let norm_vec = |qt: QTensor| qt.dequantize(&device).map_err(cerr);
        let norm = norm_vec(table.read(reader, "output_norm.weight", &[hidden])?)?;
        let kv_width = cfg.kv_width();
        // Layers are added as their tensors are read: the claimed count sizes nothing.
        let mut layers = Vec::new();
        for i in 0..cfg.n_layer {
            let mut lin = |n: &str, want: &[usize]| -> Result<QMatMul, String> {
                linear(
                    table.read(reader, &format!("blk.{i}.{n}.weight"), want)?,
                    format,
                )
                .map_err(cerr)
            };
            let wq = lin("attn_q", &[hidden, hidden])?;
            let wk = lin("attn_k", &[kv_width, hidden])?;
            let wv = lin("attn_v", &[kv_width, hidden])?;
            let wo = lin("attn_output", &[hidden, hidden])?;
            let w_gate = lin("ffn_gate", &[ff, hidden])?;
            let w_up = lin("ffn_up", &[ff, hidden])?;
            let w_down = lin("ffn_down", &[hidden, ff])?;
            let mut layer_norm = |n: &str| {
                norm_vec(table.read(reader, &format!("blk.{i}.{n}.weight"), &[hidden])?)
            };
            layers.push(Layer {
                wq,
                wk,
                wv,
                wo,
                w_gate,
                w_up,
                w_down,
                attn_norm: layer_norm("attn_norm")?,
                ffn_norm: layer_norm("ffn_norm")?,
            });
        }
        let (cos, sin) =
            rope_tables(cfg.head_dim, cfg.rope_base, max_context, &device).map_err(cerr)?;
        Ok(Self {
            cfg,
            embed,
            layers,
            norm,
            output,
            cos,
            sin,
            device,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Number of positions the RoPE tables cover: the hard limit of a session's cache.
    pub fn max_positions(&self) -> usize {
        self.cos.dims().first().copied().unwrap_or(0)
    }

    /// Runs `ids` at positions `cache.len()..`, appends their K/V to the cache and returns
    /// the logits (f32, vocabulary-sized) for the last of them.
    pub fn forward(&self, ids: &[u32], cache: &mut KvCache) -> candle_core::Result<Vec<f32>> {
        let seq = ids.len();
        let pos = cache.len();
        if seq == 0 {
            candle_core::bail!("forward called with no tokens");
        }
        if pos + seq > self.max_positions() {
            candle_core::bail!(
                "position {} beyond context {}",
                pos + seq,
                self.max_positions()
            );
        }
        let cfg = &self.cfg;
        let ids_t = Tensor::new(ids, &self.device)?;
        let mut x = self.embed.index_select(&ids_t, 0)?.unsqueeze(0)?; // [1, seq, hidden]
        let cos = self.cos.narrow(0, pos, seq)?;
        let sin = self.sin.narrow(0, pos, seq)?;
        let mask = if seq > 1 {
            Some(causal_mask(seq, pos, &self.device)?)
        } else {
            None
        };
        let n_rep = cfg.n_head / cfg.n_kv_head;
        let scale = 1.0 / (cfg.head_dim as f64).sqrt();
        for (li, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, cfg.rms_eps as f32)?;
            let heads = |t: Tensor, n: usize| -> candle_core::Result<Tensor> {
                t.reshape((1, seq, n, cfg.head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = heads(layer.wq.forward(&h)?, cfg.n_head)?;
            let k = heads(layer.wk.forward(&h)?, cfg.n_kv_head)?;
            let v = heads(layer.wv.forward(&h)?, cfg.n_kv_head)?;
            let q = candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?;
            let (k, v) = cache.append(li, &k, &v)?; // [1, n_kv, pos+seq, head_dim]
            let kv_len = pos + seq;
            // Query heads sharing a KV head are stacked along the row axis.
            let q = (q * scale)?.reshape((1, cfg.n_kv_head, n_rep * seq, cfg.head_dim))?;
            let mut att = q.matmul(&k.t()?)?;
            if let Some(mask) = &mask {
                att = att
                    .reshape((1, cfg.n_kv_head, n_rep, seq, kv_len))?
                    .broadcast_add(mask)?
                    .reshape((1, cfg.n_kv_head, n_rep * seq, kv_len))?;
            }
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let y = att
                .matmul(&v)?
                .reshape((1, cfg.n_head, seq, cfg.head_dim))?
                .transpose(1, 2)?
                .reshape((1, seq, cfg.hidden))?;
            x = (x + layer.wo.forward(&y)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, cfg.rms_eps as f32)?;
            let gate = candle_nn::ops::silu(&layer.w_gate.forward(&h)?)?;
            let up = layer.w_up.forward(&h)?;
            x = (x + layer.w_down.forward(&(gate * up)?)?)?;
        }
        cache.advance(seq);
        let last = x.narrow(1, seq - 1, 1)?.contiguous()?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, cfg.rms_eps as f32)?;
        let logits = self.output.forward(&last)?;
        logits.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()
    }

    /// An empty cache shaped for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.cfg.n_layer)
    }
}

fn rope_tables(
    head_dim: usize,
    base: f32,
    positions: usize,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let (cos, sin) = config::rope_angles(head_dim, base, positions);
    let n = head_dim / 2;
    Ok((
        Tensor::from_vec(cos, (positions, n), device)?,
        Tensor::from_vec(sin, (positions, n), device)?,
    ))
}

/// Additive mask `[seq, pos + seq]`: 0 where query `pos + i` may see key `j`, -inf after.
fn causal_mask(seq: usize, pos: usize, device: &Device) -> candle_core::Result<Tensor> {
    let kv = pos + seq;
    let data: Vec<f32> = (0..seq)
        .flat_map(|i| (0..kv).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(data, (seq, kv), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_transformers::models::quantized_llama::ModelWeights;

    fn model_path() -> std::path::PathBuf {
        crate::engines::llm::smollm::default_model_path()
    }

    fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    /// Our forward pass (with the cache fed in pieces) gives candle's `quantized_llama`
    /// logits on the same quantized weights.
    #[test]
    fn matches_candle_quantized_llama() {
        let path = model_path();
        let mut f = std::fs::File::open(&path).unwrap();
        let ct = gguf_file::Content::read(&mut f).unwrap();
        let ids: Vec<u32> = vec![1, 9690, 198, 21350, 314, 253, 5356, 30, 2, 198, 1, 4093];
        let mut reference = ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap();
        let input = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let want_prompt: Vec<f32> = reference
            .forward(&input, 0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let step = Tensor::new(&[28u32], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let want_step: Vec<f32> = reference
            .forward(&step, ids.len())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();

        let mut f = std::fs::File::open(&path).unwrap();
        let ct = gguf_file::Content::read(&mut f).unwrap();
        let ours = Weights::load(&ct, &mut f, WeightFormat::Quantized, 256).unwrap();
        let mut cache = ours.new_cache();
        ours.forward(&ids[..5], &mut cache).unwrap();
        let got_prompt = ours.forward(&ids[5..], &mut cache).unwrap();
        let got_step = ours.forward(&[28], &mut cache).unwrap();
        assert!(max_rel_diff(&got_prompt, &want_prompt) < 1e-3);
        assert!(max_rel_diff(&got_step, &want_step) < 1e-3);

        // f32 weights: same ranking, small differences (no activation quantization).
        let f32w = Weights::load(&ct, &mut f, WeightFormat::F32, 256).unwrap();
        let mut cache = f32w.new_cache();
        let got = f32w.forward(&ids, &mut cache).unwrap();
        assert_eq!(
            crate::engines::llm::smollm::sampling::argmax(&got),
            crate::engines::llm::smollm::sampling::argmax(&want_prompt)
        );
        assert!(
            max_rel_diff(&got, &want_prompt) < 0.1,
            "{}",
            max_rel_diff(&got, &want_prompt)
        );

        // Truncating the cache and re-running gives the same logits.
        cache.truncate(5);
        let again = f32w.forward(&ids[5..], &mut cache).unwrap();
        assert!(max_rel_diff(&again, &got) < 1e-4);
    }
}
