//! Greedy decoding of one audio window: prompt, token suppression (config.json's `suppress_ids`,
//! `suppress_ids_begin` on the first step, and every special/timestamp id above `<|endoftext|>`),
//! no-speech probability at the `<|startoftranscript|>` position, average log-probability, a token
//! cap, a repetition guard against hallucination loops, and the caller's cancel check between
//! steps.

use candle_core::Tensor;

use super::error::WhisperError;
use super::model::DecoderState;

/// One decoder step: feeds tokens, returns logits `[tokens, vocab]`.
pub type Step<'a> = dyn Fn(&[u32], &mut DecoderState) -> candle_core::Result<Tensor> + 'a;

/// Token ids the decoder needs, read from the tokenizer.
#[derive(Debug, Clone)]
pub struct Specials {
    pub sot: u32,
    pub eot: u32,
    pub no_timestamps: u32,
    /// `<|nospeech|>` (or its older name `<|nocaptions|>`), if the vocabulary has it.
    pub no_speech: Option<u32>,
    /// Extra prompt tokens after `sot` for multilingual models (`<|en|>`, `<|transcribe|>`).
    pub task: Vec<u32>,
}

/// What to suppress and when to stop.
#[derive(Debug, Clone)]
pub struct DecodeParams {
    pub suppress: Vec<u32>,
    pub suppress_begin: Vec<u32>,
    pub max_tokens: usize,
}

/// Result of decoding one window.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    /// Text tokens, without prompt or `<|endoftext|>`.
    pub tokens: Vec<u32>,
    /// Sum of the chosen tokens' log-probabilities (including `<|endoftext|>`) / (tokens + 1).
    pub avg_logprob: f32,
    pub no_speech_prob: f32,
    /// The repetition guard cut a loop short.
    pub looped: bool,
}

/// Runs greedy decoding until `<|endoftext|>`, the token cap, the context limit or a loop.
pub fn greedy(
    step_fn: &Step,
    state: &mut DecoderState,
    text_ctx: usize,
    specials: &Specials,
    params: &DecodeParams,
    cancel: &dyn Fn() -> bool,
) -> Result<Decoded, WhisperError> {
    let mut prompt = vec![specials.sot];
    prompt.extend_from_slice(&specials.task);
    prompt.push(specials.no_timestamps);
    let logits = step_fn(&prompt, state)?;
    let no_speech_prob = match specials.no_speech {
        Some(id) => softmax_at(&row(&logits, 0)?, id as usize),
        None => 0.0,
    };
    let mut last = row(&logits, prompt.len() - 1)?;
    let mut out = Decoded {
        no_speech_prob,
        ..Decoded::default()
    };
    let mut sum_logprob = 0f64;
    for step in 0..params.max_tokens {
        if cancel() {
            return Err(WhisperError::Cancelled);
        }
        suppress(&mut last, specials.eot, &params.suppress);
        if step == 0 {
            suppress(&mut last, specials.eot, &params.suppress_begin);
        }
        let (token, logprob) = argmax_logprob(&last);
        sum_logprob += f64::from(logprob);
        if token == specials.eot {
            break;
        }
        out.tokens.push(token);
        if let Some(keep) = repetition_cut(&out.tokens) {
            out.tokens.truncate(keep);
            out.looped = true;
            break;
        }
        if state.offset() >= text_ctx {
            break;
        }
        last = row(&step_fn(&[token], state)?, 0)?;
    }
    out.avg_logprob = (sum_logprob / (out.tokens.len() + 1) as f64) as f32;
    Ok(out)
}

fn row(logits: &Tensor, i: usize) -> candle_core::Result<Vec<f32>> {
    logits.get(i)?.to_vec1::<f32>()
}

/// Masks `ids` and every id above `eot` (specials, timestamps) except `eot` itself.
fn suppress(logits: &mut [f32], eot: u32, ids: &[u32]) {
    for &id in ids {
        if let Some(x) = logits.get_mut(id as usize) {
            *x = f32::NEG_INFINITY;
        }
    }
    let first_special = eot as usize + 1;
    if first_special < logits.len() {
        logits[first_special..].fill(f32::NEG_INFINITY);
    }
}

fn log_sum_exp(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    let sum: f64 = logits.iter().map(|&x| f64::from(x - max).exp()).sum();
    max + sum.ln() as f32
}

fn softmax_at(logits: &[f32], id: usize) -> f32 {
    match logits.get(id) {
        Some(&x) => (x - log_sum_exp(logits)).exp(),
        None => 0.0,
    }
}

/// The most likely token and its log-probability under the (suppressed) distribution.
fn argmax_logprob(logits: &[f32]) -> (u32, f32) {
    let mut best = (0usize, f32::NEG_INFINITY);
    for (i, &x) in logits.iter().enumerate() {
        if x > best.1 {
            best = (i, x);
        }
    }
    (best.0 as u32, best.1 - log_sum_exp(logits))
}

/// If the sequence ends in a loop, the length to keep (the loop's first occurrence).
/// A pattern of `len` tokens counts as a loop once repeated `reps(len)` times in a row:
/// 12 for single tokens, 6 for pairs, 4 for triples, 3 for 4 to 7 tokens, and twice for 8 to
/// 64 tokens (a whole sentence said again word for word is the decoder repeating itself).
fn repetition_cut(tokens: &[u32]) -> Option<usize> {
    let reps = |len: usize| match len {
        1 => 12,
        2 => 6,
        3 => 4,
        4..=7 => 3,
        _ => 2,
    };
    for len in 1..=64usize {
        let n = reps(len);
        if tokens.len() < len * n {
            continue;
        }
        let tail = &tokens[tokens.len() - len * n..];
        let pattern = &tail[..len];
        if tail.chunks_exact(len).all(|c| c == pattern) {
            return Some(tokens.len() - len * (n - 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_guard_keeps_first_occurrence() {
        let mut t: Vec<u32> = vec![1, 2, 3];
        for _ in 0..3 {
            t.extend_from_slice(&[7, 8, 9, 10]);
        }
        assert_eq!(repetition_cut(&t), Some(3 + 4));
        assert_eq!(
            repetition_cut(&[5, 5, 5]),
            None,
            "short stutters are speech"
        );
        assert_eq!(repetition_cut(&[1, 2, 3, 4, 5, 6, 7, 8]), None);
        assert_eq!(repetition_cut(&[9; 12]), Some(1));
        // A sentence of 10 tokens said twice keeps one copy.
        let sentence: Vec<u32> = (100..110).collect();
        let mut twice = vec![1, 2];
        twice.extend(&sentence);
        twice.extend(&sentence);
        assert_eq!(repetition_cut(&twice), Some(2 + 10));
        // Two different sentences are not a loop.
        let mut two: Vec<u32> = (100..110).collect();
        two.extend(200..210);
        assert_eq!(repetition_cut(&two), None);
    }

    #[test]
    fn suppression_masks_ids_and_specials() {
        let mut logits = vec![0.0f32; 10];
        logits[9] = 5.0;
        logits[3] = 4.0;
        logits[2] = 1.0;
        suppress(&mut logits, 6, &[3]);
        let (tok, lp) = argmax_logprob(&logits);
        assert_eq!(tok, 2);
        assert!(lp < 0.0 && lp > -2.0);
        assert!(logits[7..].iter().all(|x| x.is_infinite()));
        assert_eq!(logits[6], 0.0, "eot stays allowed");
    }

    #[test]
    fn softmax_probability() {
        let p = softmax_at(&[0.0, 0.0, 0.0, 0.0], 1);
        assert!((p - 0.25).abs() < 1e-6);
        assert_eq!(softmax_at(&[0.0], 5), 0.0);
    }
}
