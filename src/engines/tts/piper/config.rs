//! The voice's `.onnx.json`: sample rate, espeak voice, inference scales and
//! the phoneme-to-id map.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::PiperError;

#[derive(Debug, Clone, Deserialize)]
struct RawAudio {
    sample_rate: u32,
}

#[derive(Debug, Clone, Deserialize)]
struct RawEspeak {
    voice: String,
}

#[derive(Debug, Clone, Deserialize)]
struct RawInference {
    #[serde(default = "default_noise")]
    noise_scale: f32,
    #[serde(default = "default_length")]
    length_scale: f32,
    #[serde(default = "default_noise_w")]
    noise_w: f32,
}

fn default_noise() -> f32 {
    0.667
}
fn default_length() -> f32 {
    1.0
}
fn default_noise_w() -> f32 {
    0.8
}

#[derive(Debug, Clone, Deserialize)]
struct RawConfig {
    audio: RawAudio,
    espeak: RawEspeak,
    inference: Option<RawInference>,
    #[serde(default)]
    phoneme_type: Option<String>,
    phoneme_id_map: HashMap<String, Vec<i64>>,
    #[serde(default)]
    num_speakers: Option<u32>,
}

/// A voice's settings, validated.
#[derive(Debug, Clone)]
pub struct VoiceConfig {
    /// Output sample rate of the model (22050 for "medium" voices).
    pub sample_rate: u32,
    /// espeak-ng voice used for phonemes, e.g. "en-us".
    pub espeak_voice: String,
    /// VITS noise scale (0.667).
    pub noise_scale: f32,
    /// Phoneme length scale: above 1 speaks slower (1.0).
    pub length_scale: f32,
    /// VITS duration noise (0.8).
    pub noise_w: f32,
    /// One phoneme (a Unicode scalar) -> its ids.
    pub phoneme_id_map: HashMap<char, Vec<i64>>,
}

impl VoiceConfig {
    /// Read and validate `path`.
    pub fn load(path: &Path) -> Result<Self, PiperError> {
        let text = std::fs::read_to_string(path).map_err(|source| PiperError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| PiperError::Config {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parse the JSON text of a voice config.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if let Some(kind) = raw.phoneme_type.as_deref() {
            if kind != "espeak" {
                return Err(format!(
                    "phoneme_type {kind:?} is not supported (only \"espeak\")"
                ));
            }
        }
        if raw.num_speakers.unwrap_or(1) > 1 {
            return Err("multi-speaker voices are not supported".into());
        }
        if raw.audio.sample_rate == 0 {
            return Err("audio.sample_rate is 0".into());
        }
        let mut map = HashMap::with_capacity(raw.phoneme_id_map.len());
        for (key, ids) in raw.phoneme_id_map {
            let mut chars = key.chars();
            let (Some(c), None) = (chars.next(), chars.next()) else {
                return Err(format!("phoneme_id_map key {key:?} is not one character"));
            };
            map.insert(c, ids);
        }
        for needed in ['^', '_', '$'] {
            if !map.contains_key(&needed) {
                return Err(format!("phoneme_id_map lacks {needed:?}"));
            }
        }
        let inf = raw.inference.unwrap_or(RawInference {
            noise_scale: default_noise(),
            length_scale: default_length(),
            noise_w: default_noise_w(),
        });
        Ok(VoiceConfig {
            sample_rate: raw.audio.sample_rate,
            espeak_voice: raw.espeak.voice,
            noise_scale: inf.noise_scale,
            length_scale: inf.length_scale,
            noise_w: inf.noise_w,
            phoneme_id_map: map,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::VoiceConfig;

    const MINI: &str = r#"{"audio":{"sample_rate":22050},"espeak":{"voice":"en-us"},
        "inference":{"noise_scale":0.5,"length_scale":1.1,"noise_w":0.7},
        "phoneme_type":"espeak","phoneme_id_map":{"_":[0],"^":[1],"$":[2],"a":[14]}}"#;

    #[test]
    fn parses_a_minimal_config() {
        let c = VoiceConfig::parse(MINI).expect("valid config");
        assert_eq!(c.sample_rate, 22050);
        assert_eq!(c.espeak_voice, "en-us");
        assert_eq!(c.length_scale, 1.1);
        assert_eq!(c.phoneme_id_map.get(&'a'), Some(&vec![14]));
    }

    #[test]
    fn rejects_bad_configs() {
        assert!(VoiceConfig::parse("{").is_err());
        assert!(VoiceConfig::parse(&MINI.replace("\"$\":[2],", "")).is_err());
        assert!(VoiceConfig::parse(&MINI.replace("\"espeak\",", "\"text\",")).is_err());
        assert!(VoiceConfig::parse(&MINI.replace("\"a\":[14]", "\"ab\":[14]")).is_err());
    }
}
