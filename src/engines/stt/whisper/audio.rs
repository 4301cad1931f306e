//! Audio-level helpers: input validation, the energy gate that skips silent windows without
//! running the model, and splitting long audio into consecutive windows of at most 30 s, cut at
//! the quietest moment near each window's end so words are not split.

use std::ops::Range;

use crate::audio::mel::SAMPLE_RATE;

/// 10 ms analysis frame.
const FRAME: usize = SAMPLE_RATE / 100;

/// RMS level in dBFS of each 10 ms frame (a trailing partial frame is included).
fn frame_levels(pcm: &[f32]) -> Vec<f32> {
    pcm.chunks(FRAME)
        .map(|c| {
            let ms = c.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>() / c.len() as f64;
            (10.0 * ms.max(1e-20).log10()) as f32
        })
        .collect()
}

/// Level of the loudest 30 ms stretch in dBFS (`-200` for empty input).
pub fn peak_level_dbfs(pcm: &[f32]) -> f32 {
    let levels = frame_levels(pcm);
    if levels.len() < 3 {
        return levels.iter().copied().fold(-200.0, f32::max);
    }
    levels
        .windows(3)
        .map(|w| {
            let mean = w
                .iter()
                .map(|&db| 10f64.powf(f64::from(db) / 10.0))
                .sum::<f64>()
                / 3.0;
            (10.0 * mean.max(1e-20).log10()) as f32
        })
        .fold(-200.0, f32::max)
}

/// Rejects samples that would poison the spectrogram.
pub fn validate(pcm: &[f32]) -> Result<(), String> {
    match pcm.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(format!(
            "sample {i} of {} is not a finite number",
            pcm.len()
        )),
        None => Ok(()),
    }
}

/// Consecutive windows covering `0..len`, each at most `max_len` samples. A window that is not
/// the last ends at the quietest 200 ms within its final `search` samples.
pub fn windows(pcm: &[f32], max_len: usize, search: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let max_len = max_len.max(FRAME);
    while start < pcm.len() {
        let remaining = pcm.len() - start;
        if remaining <= max_len {
            out.push(start..pcm.len());
            break;
        }
        let end = start + max_len;
        let from = end - search.min(max_len / 2);
        let cut = quietest_point(&pcm[from..end]).map_or(end, |c| from + c);
        out.push(start..cut);
        start = cut;
    }
    out
}

/// Sample offset (on a frame boundary) at the centre of the quietest 200 ms of `pcm`.
fn quietest_point(pcm: &[f32]) -> Option<usize> {
    const SPAN: usize = 20;
    let levels = frame_levels(pcm);
    if levels.len() < SPAN {
        return None;
    }
    let energy: Vec<f64> = levels
        .iter()
        .map(|&db| 10f64.powf(f64::from(db) / 10.0))
        .collect();
    let mut best: Option<(usize, f64)> = None;
    let mut sum: f64 = energy[..SPAN].iter().sum();
    for i in 0..=energy.len() - SPAN {
        if i > 0 {
            sum += energy[i + SPAN - 1] - energy[i - 1];
        }
        // `<=` prefers the latest of equally quiet spans, keeping windows long.
        if best.is_none_or(|(_, b)| sum <= b) {
            best = Some((i, sum));
        }
    }
    best.map(|(i, _)| ((i + SPAN / 2) * FRAME).min(pcm.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_of_silence_and_full_scale() {
        assert!(peak_level_dbfs(&[0.0; 16_000]) < -150.0);
        let square: Vec<f32> = (0..16_000)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        assert!(peak_level_dbfs(&square).abs() < 0.01);
        assert_eq!(peak_level_dbfs(&[]), -200.0);
    }

    #[test]
    fn windows_cover_everything_without_overlap() {
        let sr = SAMPLE_RATE;
        let mut pcm = vec![0.3f32; 75 * sr];
        // A quiet gap at 27-27.3 s: the first cut lands inside it.
        pcm[27 * sr..27 * sr + sr * 3 / 10].fill(0.0);
        let w = windows(&pcm, 30 * sr, 5 * sr);
        assert_eq!(w.first().map(|r| r.start), Some(0));
        assert_eq!(w.last().map(|r| r.end), Some(pcm.len()));
        assert!(w.windows(2).all(|p| p[0].end == p[1].start));
        assert!(w.iter().all(|r| r.len() <= 30 * sr && !r.is_empty()));
        let first_cut = w[0].end;
        assert!(
            (27 * sr..27 * sr + sr * 3 / 10).contains(&first_cut),
            "{first_cut}"
        );
        assert_eq!(windows(&pcm[..sr], 30 * sr, 5 * sr), vec![0..sr]);
        assert!(windows(&[], 30 * sr, 5 * sr).is_empty());
    }

    #[test]
    fn validate_rejects_nan() {
        assert!(validate(&[0.0, f32::NAN]).is_err());
        assert!(validate(&[0.0, 1.0]).is_ok());
    }
}
