//! Splits streamed reply text into sentences that can be spoken while the rest is written.

/// Accumulates text deltas and hands out complete sentences.
#[derive(Default)]
pub struct SentenceSplitter {
    buf: String,
}

const ABBREVIATIONS: [&str; 10] = [
    "dr", "mr", "mrs", "ms", "st", "prof", "e.g", "i.e", "etc", "vs",
];

impl SentenceSplitter {
    /// Adds a delta; returns the sentences it completed.
    pub fn push(&mut self, delta: &str) -> Vec<String> {
        self.buf.push_str(delta);
        let mut out = Vec::new();
        while let Some(end) = self.sentence_end() {
            let rest = self.buf.split_off(end);
            let sentence = std::mem::replace(&mut self.buf, rest);
            let sentence = sentence.trim();
            if !sentence.is_empty() {
                out.push(sentence.to_string());
            }
        }
        out
    }

    /// Whatever is left at the end of the reply.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        let rest = rest.trim();
        (!rest.is_empty()).then(|| rest.to_string())
    }

    /// Byte index just past a sentence end that is followed by whitespace.
    fn sentence_end(&self) -> Option<usize> {
        let bytes = self.buf.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            if !matches!(b, b'.' | b'!' | b'?' | b'\n') {
                continue;
            }
            let &next = bytes.get(i + 1)?;
            if !next.is_ascii_whitespace() {
                continue;
            }
            if b == b'.' {
                let word = self.buf[..i]
                    .rsplit(char::is_whitespace)
                    .next()
                    .unwrap_or("");
                if ABBREVIATIONS.contains(&word.to_ascii_lowercase().as_str()) {
                    continue;
                }
            }
            return Some(i + 1);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_streamed_text_into_sentences() {
        let mut s = SentenceSplitter::default();
        let mut got = Vec::new();
        for piece in [
            "Hello",
            " there",
            ". Dr.",
            " Smith pays",
            " 3.5 dollars! Ok",
            "ay",
        ] {
            got.extend(s.push(piece));
        }
        got.extend(s.finish());
        assert_eq!(
            got,
            vec!["Hello there.", "Dr. Smith pays 3.5 dollars!", "Okay"]
        );
    }
}
