//! The Whisper network on candle (CPU, f32): weights mapped from CTranslate2 variable names,
//! dimensions derived from their shapes, an encoder that runs on any number of frames up to the
//! trained context, and a decoder with a per-request self-attention KV cache and cross-attention
//! K/V computed once per utterance ([`DecoderState`]). The weights are immutable after load, so a
//! [`WhisperModel`] is `Send + Sync` and shared by concurrent requests.

use candle_core::{Device, Module, Tensor, D};
use candle_nn::{Conv1d, Conv1dConfig, LayerNorm, Linear};
use rayon::prelude::*;

use super::ct2::Ct2Model;
use super::error::WhisperError;
pub use super::weights::Dims;
use super::weights::Weights;

type CResult<T> = candle_core::Result<T>;

#[derive(Debug, Clone, Copy)]
enum Activation {
    Gelu,
    GeluTanh,
}

impl Activation {
    fn apply(self, x: &Tensor) -> CResult<Tensor> {
        match self {
            Self::Gelu => super::ops::gelu(x),
            Self::GeluTanh => x.gelu(),
        }
    }
}

/// Splits `[b, t, h * hd]` into contiguous heads `[b, h, t, hd]`.
fn split_heads(x: &Tensor, heads: usize) -> CResult<Tensor> {
    let (b, t, d) = x.dims3()?;
    x.reshape((b, t, heads, d / heads))?
        .transpose(1, 2)?
        .contiguous()
}

/// Scaled dot-product attention over heads; `q` is already scaled.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> CResult<Tensor> {
    let mut w = q.matmul(&k.t()?)?;
    if let Some(mask) = mask {
        w = w.broadcast_add(mask)?;
    }
    let w = super::ops::softmax_last_dim(&w)?;
    let o = w.matmul(v)?;
    let (b, h, t, hd) = o.dims4()?;
    o.transpose(1, 2)?.reshape((b, t, h * hd))
}

/// Pre-norm self-attention with fused Q,K,V projection (`linear_0`) and output (`linear_1`).
struct SelfAttention {
    norm: LayerNorm,
    qkv: Linear,
    out: Linear,
    heads: usize,
    d: usize,
    scale: f64,
}

impl SelfAttention {
    fn load(w: &Weights, prefix: &str, heads: usize, d: usize) -> Result<Self, WhisperError> {
        Ok(Self {
            norm: w.layer_norm(&format!("{prefix}/layer_norm"), d)?,
            qkv: w.linear(&format!("{prefix}/linear_0"), 3 * d, d)?,
            out: w.linear(&format!("{prefix}/linear_1"), d, d)?,
            heads,
            d,
            scale: 1.0 / ((d / heads) as f64).sqrt(),
        })
    }

    /// Returns the residual branch; with `cache`, new K/V are appended to it.
    fn forward(
        &self,
        x: &Tensor,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
        mask: Option<&Tensor>,
    ) -> CResult<Tensor> {
        let qkv = self.qkv.forward(&self.norm.forward(x)?)?;
        let q = (split_heads(&qkv.narrow(D::Minus1, 0, self.d)?, self.heads)? * self.scale)?;
        let mut k = split_heads(&qkv.narrow(D::Minus1, self.d, self.d)?, self.heads)?;
        let mut v = split_heads(&qkv.narrow(D::Minus1, 2 * self.d, self.d)?, self.heads)?;
        if let Some(cache) = cache {
            if let Some((pk, pv)) = cache.as_ref() {
                k = Tensor::cat(&[pk, &k], 2)?;
                v = Tensor::cat(&[pv, &v], 2)?;
            }
            *cache = Some((k.clone(), v.clone()));
        }
        self.out.forward(&attend(&q, &k, &v, mask)?)
    }
}

struct Mlp {
    norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl Mlp {
    fn load(w: &Weights, prefix: &str, act: Activation, d: usize) -> Result<Self, WhisperError> {
        let ff = w.linear_out(&format!("{prefix}/linear_0"), d)?;
        Ok(Self {
            norm: w.layer_norm(&format!("{prefix}/layer_norm"), d)?,
            fc1: w.linear(&format!("{prefix}/linear_0"), ff, d)?,
            fc2: w.linear(&format!("{prefix}/linear_1"), d, ff)?,
            act,
        })
    }

    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let h = self.fc1.forward(&self.norm.forward(x)?)?;
        self.fc2.forward(&self.act.apply(&h)?)
    }
}

struct EncoderLayer {
    attn: SelfAttention,
    mlp: Mlp,
}

struct DecoderLayer {
    attn: SelfAttention,
    cross_norm: LayerNorm,
    cross_q: Linear,
    /// Fused cross-attention K,V: applied once per utterance to the encoder output.
    cross_kv: Linear,
    cross_out: Linear,
    mlp: Mlp,
}

/// Per-request decoder state: self-attention cache per layer, cross-attention K/V per layer
/// (from this utterance's encoder output) and the number of tokens consumed so far.
pub struct DecoderState {
    self_kv: Vec<Option<(Tensor, Tensor)>>,
    cross_kv: Vec<(Tensor, Tensor)>,
    offset: usize,
}

impl DecoderState {
    pub fn offset(&self) -> usize {
        self.offset
    }
}

/// Whisper weights and forward passes.
pub struct WhisperModel {
    pub dims: Dims,
    conv1: Conv1d,
    conv2: Conv1d,
    enc_pos: Tensor,
    encoder: Vec<EncoderLayer>,
    enc_norm: LayerNorm,
    /// Token embedding `[vocab, d_model]`, also the (tied) output projection.
    embed: Tensor,
    dec_pos: Tensor,
    decoder: Vec<DecoderLayer>,
    dec_norm: LayerNorm,
    act: Activation,
    cross_scale: f64,
}

impl WhisperModel {
    pub fn from_ct2(ct2: &Ct2Model) -> Result<Self, WhisperError> {
        let w = Weights { ct2 };
        if !ct2.spec.is_empty() && ct2.spec != "WhisperSpec" {
            return Err(w.unsupported(format!("spec is {:?}, expected WhisperSpec", ct2.spec)));
        }
        let act = match ct2.scalar_i64("decoder/activation") {
            None | Some(3) => Activation::Gelu,
            Some(1) => Activation::GeluTanh,
            Some(other) => return Err(w.unsupported(format!("activation type {other}"))),
        };
        let dims = w.dims()?;
        let d = dims.d_model;
        let conv = |name: &str, inputs: usize, stride| -> Result<Conv1d, WhisperError> {
            let cfg = Conv1dConfig {
                padding: 1,
                stride,
                ..Default::default()
            };
            let weight = w.tensor(&format!("encoder/{name}/weight"), &[d, inputs, 3])?;
            let bias = w.tensor(&format!("encoder/{name}/bias"), &[d])?;
            Ok(Conv1d::new(weight, Some(bias), cfg))
        };
        let encoder = (0..dims.encoder_layers)
            .map(|i| {
                let p = format!("encoder/layer_{i}");
                Ok(EncoderLayer {
                    attn: SelfAttention::load(
                        &w,
                        &format!("{p}/self_attention"),
                        dims.encoder_heads,
                        d,
                    )?,
                    mlp: Mlp::load(&w, &format!("{p}/ffn"), act, d)?,
                })
            })
            .collect::<Result<Vec<_>, WhisperError>>()?;
        let decoder = (0..dims.decoder_layers)
            .map(|i| {
                let p = format!("decoder/layer_{i}");
                Ok(DecoderLayer {
                    attn: SelfAttention::load(
                        &w,
                        &format!("{p}/self_attention"),
                        dims.decoder_heads,
                        d,
                    )?,
                    cross_norm: w.layer_norm(&format!("{p}/attention/layer_norm"), d)?,
                    cross_q: w.linear(&format!("{p}/attention/linear_0"), d, d)?,
                    cross_kv: w.linear(&format!("{p}/attention/linear_1"), 2 * d, d)?,
                    cross_out: w.linear(&format!("{p}/attention/linear_2"), d, d)?,
                    mlp: Mlp::load(&w, &format!("{p}/ffn"), act, d)?,
                })
            })
            .collect::<Result<Vec<_>, WhisperError>>()?;
        Ok(Self {
            conv1: conv("conv1", dims.n_mels, 1)?,
            conv2: conv("conv2", d, 2)?,
            enc_pos: w.tensor("encoder/position_encodings/encodings", &[dims.audio_ctx, d])?,
            encoder,
            enc_norm: w.layer_norm("encoder/layer_norm", d)?,
            embed: w.tensor("decoder/embeddings/weight", &[dims.vocab, d])?,
            dec_pos: w.tensor("decoder/position_encodings/encodings", &[dims.text_ctx, d])?,
            decoder,
            dec_norm: w.layer_norm("decoder/layer_norm", d)?,
            act,
            cross_scale: 1.0 / ((d / dims.decoder_heads) as f64).sqrt(),
            dims,
        })
    }

    /// Encodes a `[1, n_mels, frames]` log-mel tensor (frames <= 2 * audio_ctx) into
    /// `[1, ceil(frames / 2), d_model]`.
    pub fn encode(&self, mel: &Tensor) -> CResult<Tensor> {
        let x = self.act.apply(&self.conv1.forward(mel)?)?;
        let x = self.act.apply(&self.conv2.forward(&x)?)?;
        let x = x.transpose(1, 2)?;
        let n = x.dim(1)?;
        if n > self.dims.audio_ctx {
            candle_core::bail!(
                "{n} encoder positions exceed the model's {}",
                self.dims.audio_ctx
            );
        }
        let mut x = x.broadcast_add(&self.enc_pos.narrow(0, 0, n)?)?;
        for layer in &self.encoder {
            x = (&x + layer.attn.forward(&x, None, None)?)?;
            x = (&x + layer.mlp.forward(&x)?)?;
        }
        self.enc_norm.forward(&x)
    }

    /// Fresh decoder state for one utterance: cross-attention K/V computed once here.
    pub fn start(&self, audio: &Tensor) -> CResult<DecoderState> {
        let d = self.dims.d_model;
        let heads = self.dims.decoder_heads;
        let cross_kv = self
            .decoder
            .iter()
            .map(|l| {
                let kv = l.cross_kv.forward(audio)?;
                let k = split_heads(&kv.narrow(D::Minus1, 0, d)?, heads)?;
                let v = split_heads(&kv.narrow(D::Minus1, d, d)?, heads)?;
                Ok((k, v))
            })
            .collect::<CResult<Vec<_>>>()?;
        Ok(DecoderState {
            self_kv: vec![None; self.decoder.len()],
            cross_kv,
            offset: 0,
        })
    }

    /// Feeds `tokens` after those already in `state`; returns logits `[tokens.len(), vocab]`.
    pub fn decode(&self, tokens: &[u32], state: &mut DecoderState) -> CResult<Tensor> {
        let n = tokens.len();
        if state.offset + n > self.dims.text_ctx {
            candle_core::bail!("decoder context of {} tokens exceeded", self.dims.text_ctx);
        }
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= self.dims.vocab) {
            candle_core::bail!(
                "token id {bad} outside the {}-token vocabulary",
                self.dims.vocab
            );
        }
        let emb = self
            .embed
            .index_select(&Tensor::new(tokens, &Device::Cpu)?, 0)?;
        let pos = self.dec_pos.narrow(0, state.offset, n)?;
        let mut x = (emb + pos)?.unsqueeze(0)?;
        let mask = (n > 1).then(|| causal_mask(n, state.offset)).transpose()?;
        let heads = self.dims.decoder_heads;
        for ((layer, cache), (ck, cv)) in self
            .decoder
            .iter()
            .zip(state.self_kv.iter_mut())
            .zip(&state.cross_kv)
        {
            x = (&x + layer.attn.forward(&x, Some(cache), mask.as_ref())?)?;
            let q = layer.cross_q.forward(&layer.cross_norm.forward(&x)?)?;
            let q = (split_heads(&q, heads)? * self.cross_scale)?;
            x = (&x + layer.cross_out.forward(&attend(&q, ck, cv, None)?)?)?;
            x = (&x + layer.mlp.forward(&x)?)?;
        }
        state.offset += n;
        let x = self.dec_norm.forward(&x)?.squeeze(0)?;
        self.logits(&x)
    }

    /// `x @ embed^T`. Reading the 51,864-row embedding dominates a decoder step and one core
    /// cannot saturate memory bandwidth, so the rows are split across the current rayon pool
    /// (a few large independent products, no fine-grained synchronisation).
    fn logits(&self, x: &Tensor) -> CResult<Tensor> {
        let parts = rayon::current_num_threads().clamp(1, 4);
        let vocab = self.dims.vocab;
        if parts == 1 {
            return x.matmul(&self.embed.t()?);
        }
        let chunk = vocab.div_ceil(parts);
        let outs = (0..vocab)
            .step_by(chunk)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|start| x.matmul(&self.embed.narrow(0, start, chunk.min(vocab - start))?.t()?))
            .collect::<CResult<Vec<_>>>()?;
        Tensor::cat(&outs, 1)
    }
}

/// `[n, offset + n]` additive mask: query i sees keys 0..=offset + i.
fn causal_mask(n: usize, offset: usize) -> CResult<Tensor> {
    let total = offset + n;
    let mask: Vec<f32> = (0..n)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (n, total), &Device::Cpu)
}
