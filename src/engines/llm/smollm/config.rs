//! The model's hyper-parameters, read from the GGUF metadata and checked against the tensors'
//! shapes before any weight is read; shared by both forward passes.

use candle_core::quantized::gguf_file;

use super::tensors::TensorTable;

/// Hyper-parameters read from the GGUF metadata.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub hidden: usize,
    pub rms_eps: f64,
    pub rope_base: f32,
    /// Context length the model was trained for.
    pub train_context: usize,
}

/// Sizes that follow from the tensors' shapes rather than the metadata.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dims {
    pub vocab: usize,
    /// Width of the feed-forward layer.
    pub ff: usize,
}

impl ModelConfig {
    /// Width of the K and V projections.
    pub fn kv_width(&self) -> usize {
        self.n_kv_head * self.head_dim
    }
}

/// Widest attention head accepted. Real llama-family models use 64 to 256; the RoPE tables
/// cost `max_context * head_dim` floats, so a header claiming one huge head must not size them.
const MAX_HEAD_DIM: usize = 512;

fn md_u32(ct: &gguf_file::Content, key: &str) -> Result<usize, String> {
    ct.metadata
        .get(key)
        .ok_or_else(|| format!("missing metadata {key}"))?
        .to_u32()
        .map(|v| v as usize)
        .map_err(|e| format!("metadata {key}: {e}"))
}

fn md_f32(ct: &gguf_file::Content, key: &str) -> Option<f32> {
    ct.metadata.get(key).and_then(|v| v.to_f32().ok())
}

/// Reads and checks a llama-architecture GGUF's hyper-parameters and main shapes.
pub(super) fn read(
    ct: &gguf_file::Content,
    table: &TensorTable,
) -> Result<(ModelConfig, Dims), String> {
    let arch = ct
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
        .unwrap_or("");
    if arch != "llama" {
        return Err(format!("architecture {arch:?} is not llama"));
    }
    let n_head = md_u32(ct, "llama.attention.head_count")?;
    let n_kv_head = md_u32(ct, "llama.attention.head_count_kv")?;
    let hidden = md_u32(ct, "llama.embedding_length")?;
    if n_head == 0
        || n_kv_head == 0
        || hidden == 0
        || n_head % n_kv_head != 0
        || hidden % n_head != 0
    {
        return Err(format!(
            "bad head counts: {n_head} heads, {n_kv_head} kv heads, {hidden} wide"
        ));
    }
    let head_dim = hidden / n_head;
    if head_dim % 2 != 0 || head_dim > MAX_HEAD_DIM {
        return Err(format!(
            "attention heads {head_dim} wide (need an even width up to {MAX_HEAD_DIM})"
        ));
    }
    let cfg = ModelConfig {
        n_layer: md_u32(ct, "llama.block_count")?,
        n_head,
        n_kv_head,
        head_dim,
        hidden,
        rms_eps: md_f32(ct, "llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f64,
        rope_base: md_f32(ct, "llama.rope.freq_base").unwrap_or(10_000.0),
        train_context: md_u32(ct, "llama.context_length").unwrap_or(2048),
    };
    // Shapes in candle's order (GGUF lists them reversed): `[out, in]` for a linear layer.
    let embed_dims = table.required("token_embd.weight")?;
    let vocab = match embed_dims.as_slice() {
        &[vocab, h] if h == hidden && vocab > 0 => vocab,
        _ => {
            return Err(format!(
                "tensor token_embd.weight has shape {embed_dims:?}, need [vocab, {hidden}]"
            ))
        }
    };
    let ff = match table.shape("blk.0.ffn_gate.weight")?.as_deref() {
        Some(&[ff, h]) if h == hidden && ff > 0 => ff,
        _ if cfg.n_layer == 0 => 0,
        other => {
            return Err(format!(
                "tensor blk.0.ffn_gate.weight has shape {other:?}, need [ff, {hidden}]"
            ))
        }
    };
    Ok((cfg, Dims { vocab, ff }))
}

/// RoPE angles' cosines and sines, `[positions, head_dim / 2]` each, computed as candle's
/// f32 path computes them.
pub(super) fn rope_angles(head_dim: usize, base: f32, positions: usize) -> (Vec<f32>, Vec<f32>) {
    let inv_freq: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1.0 / base.powf(i as f32 / head_dim as f32))
        .collect();
    let mut cos = Vec::with_capacity(positions * inv_freq.len());
    let mut sin = Vec::with_capacity(positions * inv_freq.len());
    for p in 0..positions {
        for f in &inv_freq {
            let a = p as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    (cos, sin)
}
