//! Valid inputs the fuzzer starts from, made here: WAV files in several sample formats, a tiny
//! but complete Whisper network as a CTranslate2 `model.bin` (each binary version's layout), and
//! a tiny llama model with a byte-level BPE vocabulary as a GGUF file.

use std::io::Cursor;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};

/// A tone at `rate`, `n` samples.
pub fn tone(n: usize, rate: u32, amp: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin() * amp)
        .collect()
}

/// A WAV file of `frames` frames in the given layout, samples from a tone.
pub fn wav(rate: u32, channels: u16, bits: u16, float: bool, frames: usize) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: if float {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        },
    };
    let mut out = Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut out, spec).expect("wav header");
    for s in tone(frames, rate, 0.5) {
        for _ in 0..channels {
            if float {
                w.write_sample(s).expect("sample");
            } else {
                let full = ((1i64 << (bits - 1)) - 1) as f32;
                w.write_sample((s * full) as i32).expect("sample");
            }
        }
    }
    w.finalize().expect("wav");
    out.into_inner()
}

/// Dimensions of the tiny Whisper network.
pub const D: usize = 4;
pub const MELS: usize = 2;
pub const VOCAB: usize = 8;
pub const AUDIO_CTX: usize = 4;
pub const TEXT_CTX: usize = 4;
const FF: usize = 8;

struct Ct2Writer {
    version: u32,
    vars: Vec<Ct2Var>,
    aliases: Vec<(String, String)>,
}

fn ct2_string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&((text.len() + 1) as u16).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.push(0);
}

impl Ct2Writer {
    fn f32s(&mut self, name: &str, shape: &[usize], fill: f32) {
        let n: usize = shape.iter().product();
        let data = (0..n)
            .flat_map(|i| (fill + (i % 7) as f32 * 0.01).to_le_bytes())
            .collect();
        let shape = shape.iter().map(|&d| d as u32).collect();
        self.vars.push((name.to_string(), shape, 0, data));
    }

    /// An int8 matrix with one float scale per row.
    fn int8(&mut self, name: &str, rows: usize, cols: usize) {
        let data = (0..rows * cols).map(|i| (i % 5) as u8).collect();
        self.vars
            .push((name.to_string(), vec![rows as u32, cols as u32], 1, data));
        self.f32s(&format!("{name}_scale"), &[rows], 100.0);
    }

    fn i16_scalar(&mut self, name: &str, v: i16) {
        self.vars
            .push((name.to_string(), Vec::new(), 2, v.to_le_bytes().to_vec()));
    }

    fn linear(&mut self, prefix: &str, out: usize, inp: usize, quantized: bool) {
        if quantized {
            self.int8(&format!("{prefix}/weight"), out, inp);
        } else {
            self.f32s(&format!("{prefix}/weight"), &[out, inp], 0.02);
        }
        self.f32s(&format!("{prefix}/bias"), &[out], 0.0);
    }

    fn norm(&mut self, prefix: &str) {
        self.f32s(&format!("{prefix}/gamma"), &[D], 1.0);
        self.f32s(&format!("{prefix}/beta"), &[D], 0.0);
    }

    fn attention(&mut self, prefix: &str, q: bool) {
        self.norm(&format!("{prefix}/layer_norm"));
        self.linear(&format!("{prefix}/linear_0"), 3 * D, D, q);
        self.linear(&format!("{prefix}/linear_1"), D, D, q);
    }

    fn ffn(&mut self, prefix: &str, q: bool) {
        self.norm(&format!("{prefix}/layer_norm"));
        self.linear(&format!("{prefix}/linear_0"), FF, D, q);
        self.linear(&format!("{prefix}/linear_1"), D, FF, q);
    }

    fn bytes(&self) -> Vec<u8> {
        let mut b = self.version.to_le_bytes().to_vec();
        if self.version >= 2 {
            ct2_string(&mut b, "WhisperSpec");
            b.extend_from_slice(&3u32.to_le_bytes());
        }
        b.extend_from_slice(&(self.vars.len() as u32).to_le_bytes());
        for (name, shape, dtype, data) in &self.vars {
            ct2_string(&mut b, name);
            b.push(shape.len() as u8);
            shape
                .iter()
                .for_each(|d| b.extend_from_slice(&d.to_le_bytes()));
            if self.version >= 4 {
                b.push(*dtype);
                b.extend_from_slice(&(data.len() as u32).to_le_bytes());
            } else {
                let size: u8 = match dtype {
                    0 => 4,
                    1 => 1,
                    _ => 2,
                };
                b.push(size);
                b.extend_from_slice(&((data.len() / usize::from(size)) as u32).to_le_bytes());
            }
            b.extend_from_slice(data);
        }
        if self.version >= 3 {
            b.extend_from_slice(&(self.aliases.len() as u32).to_le_bytes());
            for (alias, target) in &self.aliases {
                ct2_string(&mut b, alias);
                ct2_string(&mut b, target);
            }
        }
        b
    }
}

/// A complete Whisper network with [`D`]-wide layers (one encoder and one decoder layer) as a
/// CTranslate2 file of binary `version` (1 to 6); `quantized` stores the linear weights as int8
/// with per-row scales. Version 3 and later store the decoder's output norm through an alias.
pub fn ct2_whisper(version: u32, quantized: bool) -> Vec<u8> {
    ct2_whisper_with(version, quantized, |_| {})
}

/// A CTranslate2 variable: name, shape, dtype id, raw bytes.
pub type Ct2Var = (String, Vec<u32>, u8, Vec<u8>);

/// [`ct2_whisper`] with its variables edited by `edit` before writing.
pub fn ct2_whisper_with(
    version: u32,
    quantized: bool,
    edit: impl FnOnce(&mut Vec<Ct2Var>),
) -> Vec<u8> {
    let mut w = Ct2Writer {
        version,
        vars: Vec::new(),
        aliases: Vec::new(),
    };
    let q = quantized;
    w.f32s("decoder/embeddings/weight", &[VOCAB, D], 0.1);
    w.f32s("encoder/conv1/weight", &[D, MELS, 3], 0.05);
    w.f32s("encoder/conv1/bias", &[D], 0.0);
    w.f32s("encoder/conv2/weight", &[D, D, 3], 0.05);
    w.f32s("encoder/conv2/bias", &[D], 0.0);
    w.f32s("encoder/position_encodings/encodings", &[AUDIO_CTX, D], 0.0);
    w.f32s("decoder/position_encodings/encodings", &[TEXT_CTX, D], 0.0);
    w.i16_scalar("encoder/num_heads", 2);
    w.i16_scalar("decoder/num_heads", 2);
    w.attention("encoder/layer_0/self_attention", q);
    w.ffn("encoder/layer_0/ffn", q);
    w.norm("encoder/layer_norm");
    w.attention("decoder/layer_0/self_attention", q);
    w.norm("decoder/layer_0/attention/layer_norm");
    w.linear("decoder/layer_0/attention/linear_0", D, D, q);
    w.linear("decoder/layer_0/attention/linear_1", 2 * D, D, q);
    w.linear("decoder/layer_0/attention/linear_2", D, D, q);
    w.ffn("decoder/layer_0/ffn", q);
    if version >= 3 {
        w.norm("decoder/final_norm");
        w.aliases.push((
            "decoder/layer_norm/gamma".into(),
            "decoder/final_norm/gamma".into(),
        ));
        w.aliases.push((
            "decoder/layer_norm/beta".into(),
            "decoder/final_norm/beta".into(),
        ));
    } else {
        w.norm("decoder/layer_norm");
    }
    edit(&mut w.vars);
    w.bytes()
}

/// Hidden width, heads and feed-forward width of the tiny llama model.
pub const HIDDEN: usize = 8;
const HEADS: u32 = 2;
const KV_HEADS: u32 = 1;
const LLAMA_FF: usize = 16;

/// GPT-2's byte-level alphabet: the char standing for each byte.
fn byte_chars() -> Vec<String> {
    let printable = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    let mut extra = 0;
    (0u32..256)
        .map(|b| {
            let c = if printable(b) {
                b
            } else {
                extra += 1;
                255 + extra
            };
            char::from_u32(c).map(String::from).unwrap_or_default()
        })
        .collect()
}

/// Tokens of the tiny vocabulary: the 256 byte tokens, a few merges' results, then the
/// three control tokens.
pub fn llama_tokens() -> Vec<String> {
    let mut t = byte_chars();
    t.extend(["Hi", "Ġt", "Ġth"].map(String::from));
    t.extend(["<|endoftext|>", "<|im_start|>", "<|im_end|>"].map(String::from));
    t
}

fn qt(shape: &[usize], fill: f32, dtype: GgmlDType) -> QTensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|i| fill + (i % 11) as f32 * 0.01).collect();
    let t = Tensor::from_vec(data, shape, &Device::Cpu).expect("tensor");
    QTensor::quantize(&t, dtype).expect("quantize")
}

/// A one-layer llama model with the SmolLM tokenizer metadata as GGUF (candle's writer, format
/// version 2; `version` 3 patches the header, the layout being the same). `dtype` is the linear
/// layers' storage (F32, F16 or Q8_0: hidden 8 does not fill a Q8_0 block, so Q8_0 uses 32).
pub fn gguf_llama(version: u32, dtype: GgmlDType) -> Vec<u8> {
    use gguf_file::Value;
    let hidden = if dtype == GgmlDType::Q8_0 { 32 } else { HIDDEN };
    let ff = if dtype == GgmlDType::Q8_0 {
        32
    } else {
        LLAMA_FF
    };
    let tokens = llama_tokens();
    let vocab = tokens.len();
    let types: Vec<Value> = tokens
        .iter()
        .map(|t| Value::I32(if t.starts_with("<|") { 3 } else { 1 }))
        .collect();
    let md: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.attention.head_count", Value::U32(HEADS)),
        ("llama.attention.head_count_kv", Value::U32(KV_HEADS)),
        ("llama.embedding_length", Value::U32(hidden as u32)),
        ("llama.block_count", Value::U32(1)),
        ("llama.context_length", Value::U32(128)),
        ("llama.rope.freq_base", Value::F32(10_000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.iter().cloned().map(Value::String).collect()),
        ),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        (
            "tokenizer.ggml.merges",
            Value::Array(
                ["H i", "Ġ t", "Ġt h"]
                    .map(|m| Value::String(m.into()))
                    .to_vec(),
            ),
        ),
    ];
    let head_dim = hidden / HEADS as usize;
    let kv = KV_HEADS as usize * head_dim;
    let f32t = GgmlDType::F32;
    let tensors: Vec<(String, QTensor)> = vec![
        ("token_embd.weight".into(), qt(&[vocab, hidden], 0.1, f32t)),
        ("output_norm.weight".into(), qt(&[hidden], 1.0, f32t)),
        ("blk.0.attn_norm.weight".into(), qt(&[hidden], 1.0, f32t)),
        ("blk.0.ffn_norm.weight".into(), qt(&[hidden], 1.0, f32t)),
        (
            "blk.0.attn_q.weight".into(),
            qt(&[hidden, hidden], 0.02, dtype),
        ),
        ("blk.0.attn_k.weight".into(), qt(&[kv, hidden], 0.02, dtype)),
        ("blk.0.attn_v.weight".into(), qt(&[kv, hidden], 0.02, dtype)),
        (
            "blk.0.attn_output.weight".into(),
            qt(&[hidden, hidden], 0.02, dtype),
        ),
        (
            "blk.0.ffn_gate.weight".into(),
            qt(&[ff, hidden], 0.02, dtype),
        ),
        ("blk.0.ffn_up.weight".into(), qt(&[ff, hidden], 0.02, dtype)),
        (
            "blk.0.ffn_down.weight".into(),
            qt(&[hidden, ff], 0.02, dtype),
        ),
    ];
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &md_refs, &t_refs).expect("gguf");
    let mut bytes = out.into_inner();
    bytes[4..8].copy_from_slice(&version.to_le_bytes());
    bytes
}

/// Offset just past the first occurrence of `needle` in `bytes`.
fn after(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + needle.len())
        .unwrap_or_else(|| panic!("{:?} not in the file", String::from_utf8_lossy(needle)))
}

/// Sets a GGUF (version 2 or 3) u32 metadata value.
pub fn gguf_set_u32(bytes: &mut [u8], key: &str, value: u32) {
    let at = after(bytes, key.as_bytes()) + 4; // past the value type
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// Sets a GGUF (version 2 or 3) tensor's dimensions, in the file's order (innermost first);
/// `dims` must have as many entries as the tensor has.
pub fn gguf_set_dims(bytes: &mut [u8], tensor: &str, dims: &[u64]) {
    // The tensor info's name: the first occurrence after the metadata, which ends at the
    // last merge.
    let table = after(bytes, b"\xc4\xa0t h");
    let at = table + after(&bytes[table..], tensor.as_bytes());
    let n = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    assert_eq!(n as usize, dims.len(), "{tensor} has {n} dimensions");
    for (i, d) in dims.iter().enumerate() {
        let o = at + 4 + 8 * i;
        bytes[o..o + 8].copy_from_slice(&d.to_le_bytes());
    }
}

/// A 32-bit float WAV (mono) holding the given samples as they are.
pub fn float_wav(rate: u32, samples: &[f32]) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut out = Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut out, spec).expect("wav header");
    for &s in samples {
        w.write_sample(s).expect("sample");
    }
    w.finalize().expect("wav");
    out.into_inner()
}

/// Replaces a variable of a [`Ct2Var`] list by an f32 one of `shape` (zero-filled).
pub fn ct2_set_f32(vars: &mut [Ct2Var], name: &str, shape: &[u32]) {
    let v = vars
        .iter_mut()
        .find(|v| v.0 == name)
        .unwrap_or_else(|| panic!("no variable {name}"));
    let n: usize = shape.iter().map(|&d| d as usize).product();
    *v = (name.to_string(), shape.to_vec(), 0, vec![0; n * 4]);
}
