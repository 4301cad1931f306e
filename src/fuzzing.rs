//! Fuzzing entry points: one function per parser that takes untrusted bytes, driving the real
//! code path on arbitrary input. None may panic, hang or allocate beyond what the input's size
//! justifies; errors are ordinary outcomes and are returned so tests can check that valid input
//! still gets through. Used by the bounded mutation fuzzer in `tests/fuzz.rs` (stable) and by
//! the cargo-fuzz targets in `fuzz/` (nightly, coverage-guided), which share the input layouts
//! written by the `*_input` helpers here.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use crate::audio::decode::{base64_decode, decode_file};
use crate::audio::input::InputDecoder;
use crate::audio::resample::resample;
use crate::audio::{check_rate, AudioError, ENGINE_RATE, SAMPLE_RATES};
use crate::call::listen::{energy_scorer, Heard, Listener};
use crate::engines::llm::smollm::{ChatMessage, GenerateParams, LlmError, LoadOptions, SmolLm};
use crate::engines::stt::whisper::{self, ct2::Ct2Error, ct2::Ct2Model, Dims, WhisperError};
use crate::protocol::{
    parse_client_message, AudioFormat, ClientMessage, DetectionMode, Encoding, ErrorCode,
    TurnDetection,
};

/// Encodings an [`audio_chunk`] input can pick, by its first byte.
pub const ENCODINGS: [Encoding; 3] = [Encoding::Pcm16, Encoding::Mulaw, Encoding::Wav];

/// Content types an [`audio_file`] input can pick, by its first byte (`None`: no hint).
pub const MIMES: [Option<&str>; 6] = [
    None,
    Some("audio/wav"),
    Some("audio/flac"),
    Some("audio/mpeg"),
    Some("audio/ogg"),
    Some("application/octet-stream"),
];

/// Push-to-talk decoding limit used by [`audio_file`] (the server's default is far longer).
pub const AUDIO_FILE_MAX_MS: u64 = 5_000;

/// Turn-audio limit of the [`audio_chunk`] listener.
const CHUNK_MAX_TURN_MS: u64 = 10_000;

/// The server's default turn detection, in energy mode (no model needed).
fn detection() -> TurnDetection {
    TurnDetection {
        mode: DetectionMode::Energy,
        threshold: 0.5,
        energy_threshold_db: -40.0,
        prefix_padding_ms: 300,
        silence_duration_ms: 500,
        min_speech_ms: 100,
        min_interrupt_ms: 400,
        semantic_pause_ms: 200,
        semantic_max_silence_ms: 2000,
    }
}

/// One WebSocket text frame (bytes taken as UTF-8, invalid sequences replaced) through the
/// client message parser, then what a session checks on the parsed message before acting:
/// audio formats, turn-detection settings and the audio payload's base64.
pub fn client_message(data: &[u8]) -> Result<ClientMessage, ErrorCode> {
    let text = String::from_utf8_lossy(data);
    let msg = parse_client_message(&text).map_err(|(code, _)| code)?;
    match &msg {
        ClientMessage::StartCall {
            audio_format,
            output_format,
            turn_detection,
            ..
        } => {
            for f in [audio_format, output_format].into_iter().flatten() {
                check_rate(f.sample_rate).map_err(|_| ErrorCode::UnsupportedFormat)?;
            }
            if let Some(u) = turn_detection {
                detection()
                    .apply(u)
                    .map_err(|_| ErrorCode::InvalidSetting)?;
            }
        }
        ClientMessage::UpdateCall { turn_detection } => {
            detection()
                .apply(turn_detection)
                .map_err(|_| ErrorCode::InvalidSetting)?;
        }
        ClientMessage::Audio { audio, .. } => {
            base64_decode(audio).map_err(|_| ErrorCode::InvalidBase64)?;
        }
        _ => {}
    }
    Ok(msg)
}

/// What [`audio_chunk`] saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOutcome {
    /// 16 kHz samples the call's decoder produced.
    pub samples: usize,
    /// Chunks refused (bad base64, undecodable WAV, a WAV at another rate).
    pub refused: usize,
    /// Utterances the turn detector ended, plus turns cut at the audio limit.
    pub turns: usize,
}

/// Lays out an [`audio_chunk`] input: encoding index, rate index, flags (bit 0: chunks are
/// base64 text; bit 1: manual turn detection), then each chunk behind a little-endian u16
/// length.
pub fn audio_chunk_input(encoding: Encoding, rate: u32, flags: u8, chunks: &[&[u8]]) -> Vec<u8> {
    let e = ENCODINGS.iter().position(|&x| x == encoding).unwrap_or(0);
    let r = SAMPLE_RATES.iter().position(|&x| x == rate).unwrap_or(0);
    let mut out = vec![e as u8, r as u8, flags];
    for c in chunks {
        let n = c.len().min(usize::from(u16::MAX));
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.extend_from_slice(&c[..n]);
    }
    out
}

/// A call's input path: chunks (base64 text or raw bytes, see [`audio_chunk_input`]) in the
/// call's format through the same [`InputDecoder`] and [`Listener`] a call uses (PCM16 with its
/// odd-byte carry, mu-law, one WAV file per chunk; the call's resampler to 16 kHz; the turn
/// detector and the turn buffer with its limit).
pub fn audio_chunk(data: &[u8]) -> Result<ChunkOutcome, AudioError> {
    let [e, r, flags, rest @ ..] = data else {
        return Ok(ChunkOutcome::default());
    };
    let format = AudioFormat {
        encoding: ENCODINGS[usize::from(*e) % ENCODINGS.len()],
        sample_rate: SAMPLE_RATES[usize::from(*r) % SAMPLE_RATES.len()],
    };
    let settings = detection();
    let scorer = (flags & 2 == 0).then(|| energy_scorer(&settings));
    let mut decoder = InputDecoder::new(format)?;
    let mut listener = Listener::new(settings, scorer, 150, CHUNK_MAX_TURN_MS);
    let mut outcome = ChunkOutcome::default();
    let mut rest = rest;
    while let [lo, hi, tail @ ..] = rest {
        let n = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        rest = next;
        let bytes = if flags & 1 == 1 {
            match base64_decode(&String::from_utf8_lossy(chunk)) {
                Ok(b) => b,
                Err(_) => {
                    outcome.refused += 1;
                    continue;
                }
            }
        } else {
            chunk.to_vec()
        };
        let samples = match decoder.decode(&bytes) {
            Ok(s) => s,
            Err(_) => {
                outcome.refused += 1;
                continue;
            }
        };
        outcome.samples += samples.len();
        let (heard, _) = listener.push(&samples);
        outcome.turns += heard
            .iter()
            .filter(|h| matches!(h, Heard::Stopped { .. }))
            .count();
        if listener.over_limit() {
            listener.take_all();
            outcome.turns += 1;
        }
    }
    Ok(outcome)
}

/// Lays out an [`audio_file`] input: the content type's index in [`MIMES`], then the file.
pub fn audio_file_input(mime: Option<&str>, file: &[u8]) -> Vec<u8> {
    let m = MIMES.iter().position(|&x| x == mime).unwrap_or(0);
    let mut out = vec![m as u8];
    out.extend_from_slice(file);
    out
}

/// The push-to-talk decoder: a whole file (WAV through hound, FLAC/MP3/OGG and the rest through
/// symphonia) decoded within [`AUDIO_FILE_MAX_MS`], then resampled to 16 kHz as the route does.
/// Returns the number of 16 kHz samples.
pub fn audio_file(data: &[u8]) -> Result<usize, AudioError> {
    let Some((m, file)) = data.split_first() else {
        return Err(AudioError::Decode("empty input".into()));
    };
    let mime = MIMES[usize::from(*m) % MIMES.len()];
    let decoded = decode_file(file, mime, AUDIO_FILE_MAX_MS)?;
    Ok(resample(&decoded.samples, decoded.sample_rate, ENGINE_RATE)?.len())
}

/// Mel frames [`ct2_model`] runs a loaded Whisper network on.
const CT2_FRAMES: usize = 4;

/// A CTranslate2 `model.bin`: the variable table, every variable's values (with
/// dequantisation) and flags, then the Whisper loader's checks and one tiny inference when the
/// file describes a Whisper network. `Ok(None)`: it parsed but is not a Whisper model.
pub fn ct2_model(data: &[u8]) -> Result<Option<Dims>, Ct2Error> {
    let model = Ct2Model::parse(Path::new("fuzz/model.bin"), data.to_vec())?;
    let mut names: Vec<String> = model.names().map(str::to_string).collect();
    names.sort();
    for name in &names {
        let _ = model.shape(name);
        let _ = model.to_f32(name);
        let _ = model.scalar_i64(name);
    }
    match whisper::check_weights(&model, CT2_FRAMES) {
        Ok(dims) => Ok(Some(dims)),
        Err(WhisperError::Model(e)) => Err(e),
        Err(_) => Ok(None),
    }
}

/// A GGUF file through the SmolLM loader (candle's GGUF reader, the tokenizer built from the
/// metadata, the llama weights), then, when it loads, a short greedy reply. Returns the vocabulary size.
pub fn gguf(data: &[u8]) -> Result<usize, LlmError> {
    let options = LoadOptions {
        max_context: 64,
        ..LoadOptions::default()
    };
    let lm = SmolLm::from_reader(&mut Cursor::new(data), Path::new("fuzz.gguf"), &options)?;
    let lm = Arc::new(lm);
    let tok = lm.tokenizer();
    let ids = tok.encode("Hi 42 <|im_end|> caf\u{e9}")?;
    tok.decode(&ids)?;
    let params = GenerateParams {
        max_tokens: 2,
        temperature: 0.0,
        ..GenerateParams::default()
    };
    lm.new_session()
        .generate(&[ChatMessage::user("Hi")], &params, &|| false, &mut |_| {
            true
        })?;
    Ok(tok.vocab_size())
}
