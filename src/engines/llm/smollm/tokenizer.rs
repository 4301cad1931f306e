//! Byte-level BPE tokenizer for SmolLM2, built from the GGUF metadata alone.
//!
//! Mirrors llama.cpp's `smollm` pre-tokenizer: digits are split one by one, then the GPT-2
//! regex; byte-level decoding. Control tokens (type 3: `<|im_start|>`, `<|im_end|>`, ...) are
//! single special tokens. Also keeps each token's raw bytes for incremental UTF-8 streaming.

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

use super::error::LlmError;

/// GGUF token type of control tokens.
const TOKEN_TYPE_CONTROL: i32 = 3;

/// Tokenizer plus the special ids the chat loop needs.
#[derive(Clone)]
pub struct SmolTokenizer {
    /// Parses special-token text (`<|im_start|>`) into the special ids.
    with_special: Tokenizer,
    /// Treats special-token text as plain text (for message contents).
    plain: Tokenizer,
    /// Raw bytes of each token id (control tokens: empty).
    token_bytes: Vec<Vec<u8>>,
    /// `<|im_start|>`
    pub im_start: u32,
    /// `<|im_end|>`
    pub im_end: u32,
    /// `<|endoftext|>`
    pub end_of_text: u32,
}

impl std::fmt::Debug for SmolTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmolTokenizer")
            .field("vocab", &self.token_bytes.len())
            .field("im_start", &self.im_start)
            .field("im_end", &self.im_end)
            .finish()
    }
}

fn string_array<'a>(ct: &'a Content, key: &str) -> Result<Vec<&'a String>, String> {
    let arr = ct
        .metadata
        .get(key)
        .ok_or_else(|| format!("missing metadata {key}"))?
        .to_vec()
        .map_err(|e| format!("metadata {key}: {e}"))?;
    arr.iter()
        .map(|v| v.to_string().map_err(|e| format!("metadata {key}: {e}")))
        .collect()
}

fn token_types(ct: &Content, n: usize) -> Result<Vec<i32>, String> {
    let Some(v) = ct.metadata.get("tokenizer.ggml.token_type") else {
        return Ok(vec![1; n]);
    };
    let arr = v
        .to_vec()
        .map_err(|e| format!("metadata tokenizer.ggml.token_type: {e}"))?;
    arr.iter()
        .map(|v| match v {
            Value::I32(x) => Ok(*x),
            Value::U32(x) => Ok(*x as i32),
            Value::I8(x) => Ok(*x as i32),
            Value::U8(x) => Ok(*x as i32),
            other => Err(format!("unexpected token type value {other:?}")),
        })
        .collect()
}

/// GPT-2 byte-level alphabet: the char that stands for each byte, inverted.
fn byte_level_decode_table() -> std::collections::HashMap<char, u8> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut table = std::collections::HashMap::with_capacity(256);
    let mut extra = 0u32;
    for b in 0u32..256 {
        let c = if printable.contains(&b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        if let Some(ch) = char::from_u32(c) {
            table.insert(ch, b as u8);
        }
    }
    table
}

impl SmolTokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.*` metadata. Errors are plain reasons; the
    /// caller adds the file name.
    pub fn from_gguf(ct: &Content) -> Result<Self, String> {
        let model = ct
            .metadata
            .get("tokenizer.ggml.model")
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
            .unwrap_or("gpt2");
        if model != "gpt2" {
            return Err(format!(
                "unsupported tokenizer model {model:?} (need gpt2 BPE)"
            ));
        }
        let tokens = string_array(ct, "tokenizer.ggml.tokens")?;
        let merges = string_array(ct, "tokenizer.ggml.merges")?;
        let types = token_types(ct, tokens.len())?;
        if types.len() != tokens.len() {
            return Err("token_type and tokens differ in length".into());
        }
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| ((*t).clone(), i as u32))
            .collect();
        let merges = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| format!("malformed merge {m:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| format!("BPE: {e}"))?;
        let mut tok = Tokenizer::new(bpe);
        let pre = Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
        ]);
        tok.with_pre_tokenizer(Some(pre));
        tok.with_decoder(Some(ByteLevel::default()));
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &ty)| ty == TOKEN_TYPE_CONTROL)
            .map(|(t, _)| AddedToken::from((*t).clone(), true))
            .collect();
        tok.add_special_tokens(specials)
            .map_err(|e| format!("special tokens: {e}"))?;

        let table = byte_level_decode_table();
        let token_bytes = tokens
            .iter()
            .zip(&types)
            .map(|(t, &ty)| {
                if ty == TOKEN_TYPE_CONTROL {
                    Vec::new()
                } else {
                    // Chars outside the byte alphabet are kept as their UTF-8 text.
                    let mut out = Vec::with_capacity(t.len());
                    for ch in t.chars() {
                        match table.get(&ch) {
                            Some(b) => out.push(*b),
                            None => out.extend_from_slice(ch.to_string().as_bytes()),
                        }
                    }
                    out
                }
            })
            .collect();
        let id = |s: &str| {
            tok.token_to_id(s)
                .ok_or_else(|| format!("vocabulary has no {s} token"))
        };
        let im_start = id("<|im_start|>")?;
        let im_end = id("<|im_end|>")?;
        let end_of_text = id("<|endoftext|>")?;
        let mut plain = tok.clone();
        plain.set_encode_special_tokens(true);
        Ok(Self {
            with_special: tok,
            plain,
            token_bytes,
            im_start,
            im_end,
            end_of_text,
        })
    }

    /// Encodes text; special-token text such as `<|im_end|>` becomes the special id.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        encode_with(&self.with_special, text)
    }

    /// Encodes text with special-token text treated as ordinary characters (for message
    /// contents, so a caller cannot inject turn markers).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        encode_with(&self.plain, text)
    }

    /// Decodes ids to text; special tokens appear as their text.
    pub fn decode(&self, ids: &[u32]) -> Result<String, LlmError> {
        self.with_special
            .decode(ids, false)
            .map_err(|e| LlmError::Tokenizer(e.to_string()))
    }

    /// Raw bytes of one token (empty for control tokens and unknown ids).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Number of entries in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// The underlying `tokenizers` tokenizer (special tokens parsed).
    pub fn inner(&self) -> &Tokenizer {
        &self.with_special
    }
}

fn encode_with(tok: &Tokenizer, text: &str) -> Result<Vec<u32>, LlmError> {
    tok.encode_fast(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| LlmError::Tokenizer(e.to_string()))
}

/// Turns a stream of token bytes into valid UTF-8 text deltas, holding back an incomplete
/// multi-byte character until its last byte arrives.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds bytes; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Safe: from_utf8 said the first `valid` bytes are UTF-8.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // Incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Flushes whatever is left (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_covers_all_bytes() {
        let t = byte_level_decode_table();
        assert_eq!(t.len(), 256);
        assert_eq!(t.get(&'Ġ'), Some(&b' '));
        assert_eq!(t.get(&'Ċ'), Some(&b'\n'));
        assert_eq!(t.get(&'a'), Some(&b'a'));
    }

    #[test]
    fn utf8_stream_holds_partial_chars() {
        let mut s = Utf8Stream::default();
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(s.push(b"a"), "a");
        assert_eq!(s.push(&euro[..1]), "");
        assert_eq!(s.push(&euro[1..2]), "");
        assert_eq!(s.push(&euro[2..]), "€");
        assert_eq!(s.push(&[0xF0, 0x9F]), "");
        assert_eq!(s.push(&[0x98, 0x80, b'!']), "😀!");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn utf8_stream_replaces_invalid_bytes() {
        let mut s = Utf8Stream::default();
        assert_eq!(s.push(&[b'x', 0xFF, b'y']), "x\u{FFFD}y");
        assert_eq!(s.push(&[0xE2]), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }
}
