//! Text to Piper phoneme ids, the way Piper does it: espeak-ng IPA per clause
//! with the clause punctuation appended (`,` `;` `:` followed by a space),
//! NFD-normalised, then `^ _ (id _)* $` through the voice's `phoneme_id_map`.
//!
//! Uses the pure-Rust `espeak-ng` crate with its bundled English data, which
//! is unpacked once per process into a cache directory
//! (`$VOXWIRE_ESPEAK_DATA`, or `<tmp>/voxwire-espeak-ng-data-0.2.0-en`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use espeak_ng::Translator;
use unicode_normalization::UnicodeNormalization;

use super::PiperError;

/// Marks that end a clause when followed by whitespace or the end of text.
const CLAUSE_MARKS: [char; 6] = ['.', ',', ';', ':', '!', '?'];

/// Split one sentence into clauses, each with the mark that ended it.
/// The final clause gets `.` when the text has no closing mark.
pub fn split_clauses(sentence: &str) -> Vec<(String, char)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = sentence.chars().peekable();
    while let Some(c) = chars.next() {
        let run_start = current.len();
        current.push(c);
        if !CLAUSE_MARKS.contains(&c) {
            continue;
        }
        // A run of marks ("?!", "...") counts as its first one; closing
        // quotes and brackets belong to the clause that just ended.
        while let Some(n) = chars.next_if(|n| CLAUSE_MARKS.contains(n) || "\"')]".contains(*n)) {
            current.push(n);
        }
        if chars.peek().is_none_or(|n| n.is_whitespace()) {
            push_clause(&mut out, &current[..run_start], c);
            current.clear();
        }
    }
    push_clause(&mut out, &current, '.');
    out
}

fn push_clause(out: &mut Vec<(String, char)>, text: &str, mark: char) {
    let t = text.trim();
    if t.chars().any(char::is_alphanumeric) {
        out.push((t.to_string(), mark));
    }
}

static DATA_DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Unpack the bundled espeak-ng English data (once per process) and return
/// its directory.
pub fn espeak_data_dir() -> Result<PathBuf, PiperError> {
    DATA_DIR
        .get_or_init(|| {
            let dir = std::env::var_os("VOXWIRE_ESPEAK_DATA")
                .map(PathBuf::from)
                .unwrap_or_else(|| std::env::temp_dir().join("voxwire-espeak-ng-data-0.2.0-en"));
            install_data(&dir).map(|()| dir)
        })
        .clone()
        .map_err(PiperError::Phonemize)
}

fn install_data(dir: &Path) -> Result<(), String> {
    if dir.join("en_dict").is_file() && dir.join("phondata").is_file() {
        return Ok(());
    }
    // Unpack beside it and rename, so a half-written directory is never used.
    let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    espeak_ng::install_bundled_language(&tmp, "en")
        .map_err(|e| format!("cannot unpack espeak-ng data into {}: {e}", tmp.display()))?;
    prune_foreign_voices(&tmp.join("lang"))
        .map_err(|e| format!("cannot prune espeak-ng data in {}: {e}", tmp.display()))?;
    if let Err(e) = std::fs::rename(&tmp, dir) {
        let _ = std::fs::remove_dir_all(&tmp);
        // Another process may have won the race.
        if !dir.join("en_dict").is_file() {
            return Err(format!(
                "cannot move espeak-ng data to {}: {e}",
                dir.display()
            ));
        }
    }
    Ok(())
}

/// espeak-ng scans every voice file under `lang/` on each call (~400 files,
/// tens of milliseconds); keep only the English ones (`lang/gmw/en*`).
fn prune_foreign_voices(lang: &Path) -> std::io::Result<()> {
    for family in std::fs::read_dir(lang)? {
        let family = family?;
        if family.file_name() != "gmw" {
            let path = family.path();
            if path.is_dir() {
                std::fs::remove_dir_all(path)?;
            } else {
                std::fs::remove_file(path)?;
            }
            continue;
        }
        for voice in std::fs::read_dir(family.path())? {
            let voice = voice?;
            if !voice.file_name().to_string_lossy().starts_with("en") {
                std::fs::remove_file(voice.path())?;
            }
        }
    }
    Ok(())
}

/// Remove espeak's language-switch flags such as "(en)" or "(fr)".
fn strip_language_flags(ipa: &str) -> String {
    let mut out = String::with_capacity(ipa.len());
    let mut rest = ipa;
    while let Some(open) = rest.find('(') {
        let after = &rest[open + 1..];
        match after.find(')') {
            Some(close)
                if after[..close]
                    .chars()
                    .all(|c| c.is_ascii_alphabetic() || c == '-') =>
            {
                out.push_str(&rest[..open]);
                rest = &after[close + 1..];
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// espeak-ng phonemes for one voice plus the voice's id map.
pub struct Phonemizer {
    translator: Translator,
    id_map: HashMap<char, Vec<i64>>,
}

impl Phonemizer {
    /// Set up espeak-ng for `espeak_voice` (e.g. "en-us").
    pub fn new(espeak_voice: &str, id_map: HashMap<char, Vec<i64>>) -> Result<Self, PiperError> {
        let dir = espeak_data_dir()?;
        let translator = Translator::new(espeak_voice, Some(&dir))
            .map_err(|e| PiperError::Phonemize(format!("voice {espeak_voice:?}: {e}")))?;
        Ok(Phonemizer { translator, id_map })
    }

    /// IPA for one clause (no punctuation), as espeak-ng writes it.
    pub fn clause_ipa(&self, clause: &str) -> Result<String, PiperError> {
        // The Rust port of espeak-ng is young: turn a panic on odd input
        // into an error instead of taking the caller's thread down.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.translator.text_to_ipa(clause)
        }));
        let ipa = match result {
            Ok(Ok(ipa)) => ipa,
            Ok(Err(e)) => return Err(PiperError::Phonemize(format!("{clause:?}: {e}"))),
            Err(_) => {
                return Err(PiperError::Phonemize(format!(
                    "{clause:?}: espeak-ng panicked"
                )))
            }
        };
        let ipa = strip_language_flags(&ipa.replace('\n', " "));
        Ok(ipa.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// Piper's phoneme string for one (normalised) sentence: clauses' IPA with
    /// their punctuation, NFD-normalised.
    pub fn phonemes(&self, sentence: &str) -> Result<String, PiperError> {
        let mut out = String::new();
        for (clause, mark) in split_clauses(sentence) {
            out.push_str(&self.clause_ipa(&clause)?);
            out.push(mark);
            if matches!(mark, ',' | ';' | ':') {
                out.push(' ');
            }
        }
        Ok(out.trim_end().nfd().collect())
    }

    /// Ids for a phoneme string: `^ _ (id _)* $`. Phonemes missing from the
    /// voice's map are skipped, as Piper does.
    pub fn ids(&self, phonemes: &str) -> Vec<i64> {
        let get = |c: char| self.id_map.get(&c).map(Vec::as_slice).unwrap_or(&[]);
        let pad = get('_');
        let mut ids = Vec::with_capacity(phonemes.len() * 2 + 3);
        ids.extend_from_slice(get('^'));
        ids.extend_from_slice(pad);
        for c in phonemes.chars() {
            if let Some(phoneme_ids) = self.id_map.get(&c) {
                ids.extend_from_slice(phoneme_ids);
                ids.extend_from_slice(pad);
            }
        }
        ids.extend_from_slice(get('$'));
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clauses_keep_their_marks() {
        let c = split_clauses("Well, one thing: I agree; really?! Yes 3.5 and e.g.x");
        let marks: Vec<char> = c.iter().map(|(_, m)| *m).collect();
        assert_eq!(marks, vec![',', ':', ';', '?', '.']);
        assert_eq!(c[3].0, "really");
        assert_eq!(c[4].0, "Yes 3.5 and e.g.x");
        assert!(split_clauses(" ... ").is_empty());
    }

    #[test]
    fn language_flags_removed() {
        assert_eq!(strip_language_flags("(en)hˈɛloʊ(en-us) x"), "hˈɛloʊ x");
        assert_eq!(strip_language_flags("a (b c) d"), "a (b c) d");
    }

    fn test_map() -> HashMap<char, Vec<i64>> {
        [('_', 0), ('^', 1), ('$', 2), (' ', 3), ('a', 14), ('b', 15)]
            .into_iter()
            .map(|(c, i)| (c, vec![i]))
            .collect()
    }

    #[test]
    fn ids_are_bos_pad_interleaved_eos() {
        let p = Phonemizer {
            translator: Translator::new("en-us", Some(Path::new("/nonexistent")))
                .expect("translator creation does not touch the disk"),
            id_map: test_map(),
        };
        // 'x' is not in the map and is skipped.
        assert_eq!(p.ids("ab xa"), vec![1, 0, 14, 0, 15, 0, 3, 0, 14, 0, 2]);
    }

    #[test]
    fn odd_text_phonemises_or_errors_without_panicking() {
        let p = Phonemizer::new("en-us", test_map()).expect("espeak-ng data installs");
        for text in [
            "😀 emoji only",
            "日本語のテキスト",
            "ÀÉÎÕÜ çñ ß",
            "x".repeat(500).as_str(),
            "a-b-c--d_e/f\\g|h~i^j",
            "123456789012345678901234567890",
            "(((nested))) [brackets] {braces} <angle>",
        ] {
            let _ = p.phonemes(&crate::engines::tts::text::normalize(text));
        }
    }

    /// Times reach espeak-ng as "ten thirty AM": the letters A and M ("eɪ ɛm"), never the
    /// "I am" (ˈaɪ ˈɛm) that "ay em" gave, nor the verb "am" (æm).
    #[test]
    fn am_and_pm_are_read_as_letters() {
        let p = Phonemizer::new("en-us", test_map()).expect("espeak-ng data installs");
        for (text, letters) in [
            ("at 10:30am.", "eɪˈɛm"),
            ("at 10:30 a.m. today.", "eɪˈɛm"),
            ("by 9 am.", "eɪˈɛm"),
            ("at 2pm.", "iːˈɛm"),
            ("at 3:05 p.m.", "iːˈɛm"),
        ] {
            let spoken = crate::engines::tts::text::normalize(text);
            let ph = p.phonemes(&spoken).expect("phonemes");
            assert!(ph.contains(letters), "{text:?} -> {spoken:?} -> {ph}");
            assert!(!ph.contains("aɪ ˈɛm") && !ph.contains("æm"), "{ph}");
        }
    }

    #[test]
    fn espeak_phonemes_for_english() {
        let p = Phonemizer::new("en-us", test_map()).expect("espeak-ng data installs");
        let ph = p.phonemes("Hello world, how are you?").expect("phonemes");
        assert!(ph.contains("wˈɜːld, "), "{ph}");
        assert!(ph.ends_with('?'), "{ph}");
        assert!(ph.contains('ˈ'), "stress marks kept: {ph}");
    }
}
