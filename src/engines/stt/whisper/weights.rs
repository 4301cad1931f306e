//! Mapping from CTranslate2 variables to candle tensors (f32 on the CPU) and the model
//! dimensions read from their shapes: d_model and vocabulary from the embedding, mel bins from
//! conv1, context lengths from the position tables, layer counts from the variable names, heads
//! from `num_heads` (or d_model / 64).

use candle_core::{Device, Tensor};
use candle_nn::{LayerNorm, Linear};

use super::ct2::Ct2Model;
use super::error::WhisperError;

/// Model dimensions, all read from the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub n_mels: usize,
    pub d_model: usize,
    pub encoder_heads: usize,
    pub decoder_heads: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub vocab: usize,
    /// Encoder positions (1500 = 30 s after the stride-2 convolution).
    pub audio_ctx: usize,
    /// Decoder positions (448).
    pub text_ctx: usize,
}

/// Builds candle tensors from a parsed `model.bin`.
pub(crate) struct Weights<'a> {
    pub ct2: &'a Ct2Model,
}

impl Weights<'_> {
    /// The variable as a tensor; its shape must be `want` (the file's shapes are only claims
    /// until checked against the dimensions read from the embedding and convolution).
    pub fn tensor(&self, name: &str, want: &[usize]) -> Result<Tensor, WhisperError> {
        let shape = self.ct2.shape(name)?;
        if shape != want {
            return Err(self.unsupported(format!(
                "{name} has shape {shape:?}, the model's dimensions need {want:?}"
            )));
        }
        let data = self.ct2.to_f32(name)?;
        Ok(Tensor::from_vec(data, want, &Device::Cpu)?)
    }

    /// A linear layer from `inp` to `out` features.
    pub fn linear(&self, prefix: &str, out: usize, inp: usize) -> Result<Linear, WhisperError> {
        let w = self.tensor(&format!("{prefix}/weight"), &[out, inp])?;
        let b = self.tensor(&format!("{prefix}/bias"), &[out])?;
        Ok(Linear::new(w, Some(b)))
    }

    /// Rows of a linear layer taking `inp` features (a feed-forward layer's width).
    pub fn linear_out(&self, prefix: &str, inp: usize) -> Result<usize, WhisperError> {
        let name = format!("{prefix}/weight");
        match *self.ct2.shape(&name)? {
            [out, i] if i == inp && out > 0 => Ok(out),
            ref other => Err(self.unsupported(format!(
                "{name} has shape {other:?}, the model's dimensions need [n, {inp}]"
            ))),
        }
    }

    pub fn layer_norm(&self, prefix: &str, d: usize) -> Result<LayerNorm, WhisperError> {
        let g = self.tensor(&format!("{prefix}/gamma"), &[d])?;
        let b = self.tensor(&format!("{prefix}/beta"), &[d])?;
        Ok(LayerNorm::new(g, b, 1e-5))
    }

    fn count_layers(&self, prefix: &str) -> usize {
        (0..)
            .take_while(|i| {
                let p = format!("{prefix}/layer_{i}/");
                self.ct2.names().any(|n| n.starts_with(&p))
            })
            .count()
    }

    pub fn unsupported(&self, reason: String) -> WhisperError {
        WhisperError::Unsupported {
            path: self.ct2.path().to_path_buf(),
            reason,
        }
    }

    /// Dimensions from variable shapes (and the `num_heads` flags when present).
    pub fn dims(&self) -> Result<Dims, WhisperError> {
        let w = self;
        let embed = w.ct2.shape("decoder/embeddings/weight")?;
        let conv1 = w.ct2.shape("encoder/conv1/weight")?;
        let enc_pos = w.ct2.shape("encoder/position_encodings/encodings")?;
        let dec_pos = w.ct2.shape("decoder/position_encodings/encodings")?;
        let (&[vocab, d_model], &[_, n_mels, 3], &[audio_ctx, _], &[text_ctx, _]) =
            (embed, conv1, enc_pos, dec_pos)
        else {
            return Err(w.unsupported(format!(
                "unexpected shapes: embeddings {embed:?}, conv1 {conv1:?}, positions {enc_pos:?}/{dec_pos:?}"
            )));
        };
        let heads = |name: &str| -> Result<usize, WhisperError> {
            let h = match w.ct2.scalar_i64(name) {
                Some(h) if h > 0 => h as usize,
                _ => d_model / 64,
            };
            if h == 0 || d_model % h != 0 {
                return Err(w.unsupported(format!("{h} heads do not divide d_model {d_model}")));
            }
            Ok(h)
        };
        let dims = Dims {
            n_mels,
            d_model,
            encoder_heads: heads("encoder/num_heads")?,
            decoder_heads: heads("decoder/num_heads")?,
            encoder_layers: w.count_layers("encoder"),
            decoder_layers: w.count_layers("decoder"),
            vocab,
            audio_ctx,
            text_ctx,
        };
        if dims.encoder_layers == 0 || dims.decoder_layers == 0 {
            return Err(w.unsupported("no encoder or decoder layers found".into()));
        }
        // An empty tensor costs no bytes, so a zero dimension would let the others claim
        // anything (a `[0, 2^32 - 1, 3]` convolution sizing the mel filter bank).
        if [n_mels, d_model, vocab, audio_ctx, text_ctx].contains(&0) {
            return Err(w.unsupported(format!("a zero dimension in {dims:?}")));
        }
        Ok(dims)
    }
}
