//! Bounded mutation fuzzing, on stable Rust, of every parser that takes untrusted bytes (the
//! targets in `voxwire::fuzzing`): client messages, call audio chunks, push-to-talk files,
//! CTranslate2 and GGUF model files. Each test first checks its valid seeds still decode to the
//! expected result, replays the regression inputs of bugs found so far, then mutates the seeds
//! for `VOXWIRE_FUZZ_SECS` seconds (default 8). See `tests/fuzz_common` for the knobs, and
//! `fuzz/` for the coverage-guided cargo-fuzz targets over the same functions.

mod fuzz_common;

use candle_core::quantized::GgmlDType;
use fuzz_common::seeds::{self, ct2_whisper, gguf_llama, wav};
use fuzz_common::{fuzz, must_not_panic};
use voxwire::audio::decode::base64_encode;
use voxwire::audio::encode::{mulaw_bytes, pcm16_bytes, wav_bytes};
use voxwire::fuzzing::{self, audio_chunk_input, audio_file_input, ChunkOutcome};
use voxwire::protocol::{ClientMessage, Encoding, ErrorCode};

/// Debug text of a value with digits dropped: an outcome's kind, not its numbers.
fn kind(text: String) -> String {
    text.chars()
        .filter(|c| !c.is_ascii_digit())
        .take(80)
        .collect()
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/fuzz/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn client_messages() {
    let pcm = base64_encode(&pcm16_bytes(&seeds::tone(160, 16_000, 0.3)));
    let valid = [
        r#"{"type":"start_call","agent":"default","call_id":"c1","audio_format":{"encoding":"pcm16","sample_rate":16000},"output_format":{"encoding":"mulaw","sample_rate":8000},"variables":{"name":"Ada"},"turn_detection":{"mode":"energy","silence_duration_ms":600,"threshold":0.4}}"#.to_string(),
        r#"{"type":"update_call","turn_detection":{"mode":"manual","min_speech_ms":200,"energy_threshold_db":-35.5}}"#.into(),
        format!(r#"{{"type":"audio","audio":"{pcm}","seq":7}}"#),
        r#"{"type":"commit"}"#.into(),
        r#"{"type":"text","text":"h\u00e9llo \"there\""}"#.into(),
        r#"{"type":"playback","item_id":3,"played_ms":1250}"#.into(),
        r#"{"type":"interrupt"}"#.into(),
        r#"{"type":"ping","id":{"n":[1,2.5,null,true]}}"#.into(),
        r#"{"type":"end_call"}"#.into(),
    ];
    let want = [
        "StartCall",
        "UpdateCall",
        "Audio",
        "Commit",
        "Text",
        "Playback",
        "Interrupt",
        "Ping",
        "EndCall",
    ];
    for (text, want) in valid.iter().zip(want) {
        let msg = must_not_panic("seed", &fuzzing::client_message, text.as_bytes());
        let got = format!("{msg:?}");
        assert!(got.starts_with(&format!("Ok({want}")), "{text} -> {got}");
    }
    let refused = [
        ("{nope", ErrorCode::InvalidJson),
        (r#"{"type":"dance"}"#, ErrorCode::UnknownType),
        (r#"{"type":"text"}"#, ErrorCode::InvalidMessage),
        (
            r#"{"type":"audio","audio":"%%%"}"#,
            ErrorCode::InvalidBase64,
        ),
        (
            r#"{"type":"start_call","audio_format":{"encoding":"wav","sample_rate":95003}}"#,
            ErrorCode::UnsupportedFormat,
        ),
        (
            r#"{"type":"update_call","turn_detection":{"threshold":7}}"#,
            ErrorCode::InvalidSetting,
        ),
    ];
    for (text, code) in refused {
        let got = must_not_panic("seed", &fuzzing::client_message, text.as_bytes());
        assert_eq!(got.err(), Some(code), "{text}");
    }
    let seeds = valid.into_iter().map(String::into_bytes).collect();
    let report = fuzz(
        "client_message",
        seeds,
        16 << 10,
        &fuzzing::client_message,
        &|r: &Result<ClientMessage, ErrorCode>| {
            kind(match r {
                Ok(m) => format!("{m:?}").chars().take(12).collect(),
                Err(e) => format!("{e:?}"),
            })
        },
    );
    assert!(report.execs > 0 && report.outcomes > 1, "{report:?}");
}

/// 20 ms chunks of `bytes`, split at odd offsets as a client might.
fn odd_chunks(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut n = 333;
    while !rest.is_empty() {
        let (a, b) = rest.split_at(n.min(rest.len()));
        out.push(a);
        rest = b;
        n = if n == 333 { 1001 } else { 333 };
    }
    out
}

#[test]
fn audio_chunks() {
    let run = |input: &[u8]| must_not_panic("seed", &fuzzing::audio_chunk, input);
    // PCM16 at the engine rate: every sample comes out, whatever the chunk boundaries.
    let pcm = pcm16_bytes(&seeds::tone(1600, 16_000, 0.3));
    let raw = audio_chunk_input(Encoding::Pcm16, 16_000, 0, &odd_chunks(&pcm));
    assert_eq!(run(&raw).map(|o| o.samples), Ok(1600));
    let texts: Vec<String> = odd_chunks(&pcm).into_iter().map(base64_encode).collect();
    let text_refs: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
    let b64 = audio_chunk_input(Encoding::Pcm16, 16_000, 1, &text_refs);
    assert_eq!(run(&b64).map(|o| o.samples), Ok(1600));
    // Mu-law at 8 kHz: silence, a second of tone, silence is one utterance.
    let mut speech = seeds::tone(4000, 8_000, 0.0);
    speech.extend(seeds::tone(8000, 8_000, 0.3));
    speech.extend(seeds::tone(8000, 8_000, 0.0));
    let mulaw = mulaw_bytes(&speech);
    let chunks: Vec<&[u8]> = mulaw.chunks(160).collect();
    let turn = audio_chunk_input(Encoding::Mulaw, 8_000, 0, &chunks);
    let out = run(&turn).expect("mu-law call");
    assert_eq!(out.turns, 1, "{out:?}");
    assert!((39_000..=40_000).contains(&out.samples), "{out:?}");
    // WAV chunks at the call's rate decode; one at another rate is refused.
    let w1 = wav_bytes(&seeds::tone(2400, 24_000, 0.3), 24_000);
    let w2 = wav(24_000, 2, 24, false, 1200);
    let other = wav_bytes(&seeds::tone(800, 8_000, 0.3), 8_000);
    let wavs = audio_chunk_input(Encoding::Wav, 24_000, 2, &[&w1, &w2, &other]);
    let out = run(&wavs).expect("wav call");
    assert_eq!(out.refused, 1, "{out:?}");
    assert!((2_000..=2_400).contains(&out.samples), "{out:?}");
    let f = wav(48_000, 1, 32, true, 960);
    let float = audio_chunk_input(Encoding::Wav, 48_000, 0, &[&f, &f]);
    let seeds = vec![raw, b64, turn, wavs, float];
    let report = fuzz(
        "audio_chunk",
        seeds,
        64 << 10,
        &fuzzing::audio_chunk,
        &|r: &Result<ChunkOutcome, _>| {
            kind(format!(
                "{:?}",
                r.as_ref()
                    .map(|o| (o.samples > 0, o.refused > 0, o.turns > 0))
            ))
        },
    );
    assert!(report.execs > 0 && report.outcomes > 1, "{report:?}");
}

#[test]
fn audio_files() {
    let run = |input: &[u8]| must_not_panic("seed", &fuzzing::audio_file, input);
    let mono = audio_file_input(Some("audio/wav"), &wav(16_000, 1, 16, false, 1600));
    assert_eq!(run(&mono), Ok(1600));
    let stereo = audio_file_input(None, &wav(44_100, 2, 24, false, 4410));
    assert_eq!(run(&stereo), Ok(1600));
    let float = audio_file_input(None, &wav(48_000, 1, 32, true, 4800));
    assert_eq!(run(&float), Ok(1600));
    let byte = audio_file_input(None, &wav(8_000, 1, 8, false, 800));
    assert_eq!(run(&byte), Ok(1600));
    // Half a second each (Vorbis and MP3 carry their encoders' padding).
    let flac = audio_file_input(Some("audio/flac"), &fixture("tone.flac"));
    assert_eq!(run(&flac), Ok(8000));
    let ogg = audio_file_input(Some("audio/ogg"), &fixture("tone.ogg"));
    let mp3 = audio_file_input(Some("audio/mpeg"), &fixture("tone.mp3"));
    for (name, file) in [("ogg", &ogg), ("mp3", &mp3)] {
        let n = run(file).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!((8000..=10_000).contains(&n), "{name}: {n}");
    }
    // Over the limit: refused, not decoded in full.
    let long = audio_file_input(None, &wav(8_000, 1, 16, false, 48_000));
    assert!(matches!(
        run(&long),
        Err(voxwire::audio::AudioError::TooLong { .. })
    ));
    let seeds = vec![mono, stereo, float, byte, flac, ogg, mp3];
    let report = fuzz(
        "audio_file",
        seeds,
        64 << 10,
        &fuzzing::audio_file,
        &|r: &Result<usize, _>| kind(format!("{:?}", r.as_ref().map(|n| *n > 0))),
    );
    assert!(report.execs > 0 && report.outcomes > 1, "{report:?}");
}

#[test]
fn ct2_models() {
    let want = voxwire::engines::stt::whisper::Dims {
        n_mels: seeds::MELS,
        d_model: seeds::D,
        encoder_heads: 2,
        decoder_heads: 2,
        encoder_layers: 1,
        decoder_layers: 1,
        vocab: seeds::VOCAB,
        audio_ctx: seeds::AUDIO_CTX,
        text_ctx: seeds::TEXT_CTX,
    };
    let mut seeds = Vec::new();
    for (version, quantized) in [(6, false), (6, true), (4, true), (3, false), (1, false)] {
        let model = ct2_whisper(version, quantized);
        let got = must_not_panic("seed", &fuzzing::ct2_model, &model);
        assert_eq!(got.ok().flatten(), Some(want), "v{version} q{quantized}");
        seeds.push(model);
    }
    let report = fuzz(
        "ct2_model",
        seeds,
        64 << 10,
        &fuzzing::ct2_model,
        &|r: &Result<_, voxwire::engines::stt::whisper::ct2::Ct2Error>| {
            kind(match r {
                Ok(d) => format!("Ok({})", d.is_some()),
                Err(e) => format!("{e:?}").chars().take(24).collect(),
            })
        },
    );
    assert!(report.execs > 0 && report.outcomes > 1, "{report:?}");
}

#[test]
fn gguf_models() {
    let vocab = seeds::llama_tokens().len();
    let mut seeds = Vec::new();
    for (version, dtype) in [
        (2, GgmlDType::F32),
        (3, GgmlDType::F16),
        (3, GgmlDType::Q8_0),
    ] {
        let model = gguf_llama(version, dtype);
        let got = must_not_panic("seed", &fuzzing::gguf, &model);
        assert_eq!(got.ok(), Some(vocab), "v{version} {dtype:?}");
        seeds.push(model);
    }
    let report = fuzz("gguf", seeds, 64 << 10, &fuzzing::gguf, &|r: &Result<
        usize,
        voxwire::engines::llm::smollm::LlmError,
    >| {
        kind(match r {
            Ok(_) => "Ok".into(),
            Err(e) => e.to_string().chars().skip(28).take(30).collect(),
        })
    });
    assert!(report.execs > 0 && report.outcomes > 1, "{report:?}");
}

// Regression inputs: each found by fuzzing (crashed or aborted before its fix).

fn from_hex(hex: &str) -> Vec<u8> {
    let digits: Vec<u8> = hex.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ascii"), 16).expect("hex"))
        .collect()
}

/// A float WAV chunk holding NaN, infinities and huge values: the call's resampler (rubato)
/// panicked on the NaN ("Imaginary part of first value was non-zero").
#[test]
fn regression_float_wav_chunk_with_nan() {
    let mut samples = seeds::tone(960, 48_000, 0.5);
    samples[10] = f32::NAN;
    samples[20] = f32::INFINITY;
    samples[30] = -3.0e38;
    let w = seeds::float_wav(48_000, &samples);
    let input = audio_chunk_input(Encoding::Wav, 48_000, 0, &[&w, &w]);
    let out = must_not_panic("NaN chunk", &fuzzing::audio_chunk, &input).expect("decodes");
    assert_eq!(out.refused, 0);
    assert!(out.samples > 0);
    // The decoded samples are clean: in range, no NaN.
    let d = voxwire::audio::decode::decode_wav(&w).expect("wav");
    assert!(d.samples.iter().all(|s| (-1.0..=1.0).contains(s)));
}

/// The same samples as a push-to-talk file: the whole-file resampler panicked too.
#[test]
fn regression_float_wav_file_with_nan() {
    let mut samples = seeds::tone(4800, 48_000, 0.5);
    samples[100] = f32::NAN;
    samples[200] = f32::NEG_INFINITY;
    let input = audio_file_input(None, &seeds::float_wav(48_000, &samples));
    let n = must_not_panic("NaN file", &fuzzing::audio_file, &input);
    assert_eq!(n, Ok(1600));
}

/// A WAV that hound refuses and symphonia takes, with a zero sample rate: symphonia panicked
/// ("TimeBase cannot have 0 numerator or denominator"); now an undecodable file.
#[test]
fn regression_wav_with_zero_rate_through_symphonia() {
    let input = from_hex(
        "00524946463c4b000057415645666d742028000000feff0000000000000010020004f220001600\
         2000010000000300000000001000800000aa00389b7164617461004b00000000000042c8eb3c2c64",
    );
    let got = must_not_panic("zero-rate WAV", &fuzzing::audio_file, &input);
    assert!(got.is_err(), "{got:?}");
}

/// An EBML (Matroska) header with all-ones sizes, found by cargo-fuzz: symphonia's MKV reader
/// fails an assertion ("invalid position"); the decoder catches it and refuses the file.
#[test]
fn regression_mkv_header_with_huge_sizes() {
    let input = from_hex("031a45dfa3ffff00ffffffffffffffffff");
    let got = must_not_panic("MKV header", &fuzzing::audio_file, &input);
    assert!(got.is_err(), "{got:?}");
}

fn gguf_refused(what: &str, input: &[u8]) -> String {
    let got = must_not_panic(what, &fuzzing::gguf, input);
    match got {
        Ok(v) => panic!("{what}: loaded ({v} tokens)"),
        Err(e) => e.to_string(),
    }
}

/// A tensor whose byte size overflows to 0 (2^62 f32 elements): candle read no bytes, then
/// allocated the 2^62 elements ("capacity overflow"); a little less would have aborted on
/// allocation failure.
#[test]
fn regression_gguf_tensor_size_wraps() {
    let mut model = gguf_llama(3, GgmlDType::F32);
    seeds::gguf_set_dims(&mut model, "output_norm.weight", &[1 << 62]);
    let err = gguf_refused("huge tensor", &model);
    assert!(err.contains("does not fit"), "{err}");
}

/// Dimensions whose product wraps to a small number (2^33 x 2^31 = 2^64): the tensor looked
/// empty while claiming 2^64 elements.
#[test]
fn regression_gguf_dims_product_wraps() {
    let mut model = gguf_llama(3, GgmlDType::F32);
    seeds::gguf_set_dims(&mut model, "token_embd.weight", &[1 << 33, 1 << 31]);
    let err = gguf_refused("wrapping dims", &model);
    assert!(err.contains("does not fit"), "{err}");
}

/// A header claiming a huge embedding width sized the RoPE tables (context x width) before
/// any tensor was checked against it: an allocation of hundreds of GB.
#[test]
fn regression_gguf_huge_embedding_length() {
    let mut model = gguf_llama(3, GgmlDType::F32);
    seeds::gguf_set_u32(&mut model, "llama.embedding_length", 1 << 30);
    seeds::gguf_set_u32(&mut model, "llama.attention.head_count", 1);
    seeds::gguf_set_u32(&mut model, "llama.attention.head_count_kv", 1);
    let err = gguf_refused("huge width", &model);
    assert!(err.contains("heads") || err.contains("shape"), "{err}");
}

/// A header claiming 2^32 - 1 layers reserved room for all of them before reading the first.
#[test]
fn regression_gguf_huge_block_count() {
    let mut model = gguf_llama(3, GgmlDType::F32);
    seeds::gguf_set_u32(&mut model, "llama.block_count", u32::MAX);
    let err = gguf_refused("huge layer count", &model);
    assert!(err.contains("blk.1."), "{err}");
}

/// Tensors whose shapes disagree with the hyper-parameters: the model loaded, then every reply
/// failed with a shape error; now the load fails and names the tensor.
#[test]
fn regression_gguf_shape_mismatch() {
    let mut model = gguf_llama(3, GgmlDType::F32);
    seeds::gguf_set_dims(&mut model, "blk.0.attn_k.weight", &[4, 8]);
    seeds::gguf_set_dims(&mut model, "blk.0.attn_v.weight", &[8, 4]);
    let err = gguf_refused("mismatched shapes", &model);
    assert!(err.contains("attn_k"), "{err}");
}

/// A convolution of shape `[0, 2^32 - 1, 3]` holds no bytes, yet its middle dimension was
/// taken as the number of mel bins: the loader sized the mel filter bank (and the smoke test
/// its input) from it, tens of GB. Every weight's shape is now checked against the dimensions
/// and none may be zero.
#[test]
fn regression_ct2_empty_conv_claims_huge_mel_count() {
    let model = seeds::ct2_whisper_with(6, false, |vars| {
        seeds::ct2_set_f32(vars, "encoder/conv1/weight", &[0, u32::MAX, 3]);
    });
    let got = must_not_panic("empty conv", &fuzzing::ct2_model, &model);
    assert!(matches!(got, Ok(None)), "{got:?}");
}

/// Weights whose shapes disagree with the dimensions: the model loaded, then every
/// transcription failed with a shape error; now the load fails.
#[test]
fn regression_ct2_shape_mismatch() {
    let model = seeds::ct2_whisper_with(6, false, |vars| {
        seeds::ct2_set_f32(vars, "decoder/layer_0/attention/linear_1/weight", &[4, 4]);
    });
    assert!(matches!(
        must_not_panic("mismatched shapes", &fuzzing::ct2_model, &model),
        Ok(None)
    ));
    use voxwire::engines::stt::whisper::{check_weights, ct2::Ct2Model};
    let parsed = Ct2Model::parse(std::path::Path::new("m.bin"), model).expect("parses");
    let err = check_weights(&parsed, 4).expect_err("loads").to_string();
    assert!(
        err.contains("unsupported") && err.contains("attention/linear_1/weight"),
        "{err}"
    );
}
