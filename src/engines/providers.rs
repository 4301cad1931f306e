//! Hosted providers by name, read from `providers.toml` (or `VOXWIRE_PROVIDERS`; the file
//! shipped with the source is built in). Engine chains (`VOXWIRE_STT=deepgram,local`, an
//! agent's `llm = ["openai", "local"]`) name them next to the built-in engines. Keys are never in
//! the file: each provider names the environment variable that holds its key.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::http::{ApiKey, Policy};

/// The providers shipped with the source tree.
const BUILTIN: &str = include_str!("../../providers.toml");

/// The three kinds of engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EngineKind {
    Stt,
    Llm,
    Tts,
}

impl EngineKind {
    /// The configuration variable that chooses this kind's chain.
    pub fn var(self) -> &'static str {
        match self {
            Self::Stt => "VOXWIRE_STT",
            Self::Llm => "VOXWIRE_LLM",
            Self::Tts => "VOXWIRE_TTS",
        }
    }

    /// Field of an agent that overrides it.
    pub fn field(self) -> &'static str {
        match self {
            Self::Stt => "stt",
            Self::Llm => "llm",
            Self::Tts => "tts",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::Stt => "speech-to-text",
            Self::Llm => "language model",
            Self::Tts => "text-to-speech",
        }
    }

    /// Engines that need no provider entry.
    pub fn builtins(self) -> &'static [&'static str] {
        match self {
            Self::Stt | Self::Llm => &["local", "fake"],
            Self::Tts => &["local", "espeak", "fake"],
        }
    }
}

/// Which API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// The OpenAI HTTP API: OpenAI, Groq, Ollama, llama.cpp's server, vLLM…
    Openai,
    /// Deepgram's streaming speech-to-text.
    Deepgram,
    /// ElevenLabs' streaming text-to-speech.
    Elevenlabs,
}

/// One provider entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    pub kind: ProviderKind,
    /// API root, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Environment variable holding the key; none for servers that need no key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub stt_model: Option<String>,
    #[serde(default)]
    pub llm_model: Option<String>,
    #[serde(default)]
    pub tts_model: Option<String>,
    /// Voice used when the agent names none (or one this provider does not have).
    #[serde(default)]
    pub tts_voice: Option<String>,
    /// Agent voice names this provider knows, mapped to the provider's voice ids.
    #[serde(default)]
    pub voices: BTreeMap<String, String>,
    /// Rate of the PCM audio asked for (OpenAI pcm is always 24000 Hz).
    #[serde(default)]
    pub tts_sample_rate: Option<u32>,
    /// Language hint for speech-to-text, e.g. `en`.
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub stream_timeout_ms: u64,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    #[serde(default = "default_max_retry_wait_ms")]
    pub max_retry_wait_ms: u64,
    /// The key, read from `api_key_env` at start-up.
    #[serde(skip)]
    pub api_key: Option<ApiKey>,
}

fn default_timeout_ms() -> u64 {
    10_000
}
fn default_retries() -> u32 {
    2
}
fn default_backoff_ms() -> u64 {
    250
}
fn default_max_retry_wait_ms() -> u64 {
    5_000
}

impl ProviderSpec {
    pub fn policy(&self) -> Policy {
        use std::time::Duration;
        Policy {
            timeout: Duration::from_millis(self.timeout_ms),
            stream_timeout: Duration::from_millis(self.stream_timeout_ms),
            retries: self.retries,
            backoff: Duration::from_millis(self.backoff_ms),
            max_retry_wait: Duration::from_millis(self.max_retry_wait_ms),
        }
    }

    /// Whether this provider can serve `kind`, and if not, why.
    pub fn check_kind(&self, kind: EngineKind) -> Result<(), String> {
        let (ok, model) = match (self.kind, kind) {
            (ProviderKind::Openai, EngineKind::Stt) => (true, &self.stt_model),
            (ProviderKind::Openai, EngineKind::Llm) => (true, &self.llm_model),
            (ProviderKind::Openai, EngineKind::Tts) => (true, &self.tts_model),
            (ProviderKind::Deepgram, EngineKind::Stt) => (true, &self.stt_model),
            (ProviderKind::Elevenlabs, EngineKind::Tts) => (true, &self.tts_model),
            _ => (false, &None),
        };
        if !ok {
            let k = format!("{:?}", self.kind).to_lowercase();
            return Err(format!("providers of kind {k} have no {}", kind.describe()));
        }
        if model.is_none() {
            return Err(format!("it sets no {}_model", kind.field()));
        }
        Ok(())
    }

    /// The provider's voice id for an agent's voice name (its default for an unknown one).
    pub fn voice_id(&self, voice: Option<&str>) -> Option<String> {
        voice
            .and_then(|v| self.voices.get(v).cloned())
            .or_else(|| self.tts_voice.clone())
    }

    /// The base URL without a trailing slash.
    pub fn base(&self) -> &str {
        self.base_url.trim_end_matches('/')
    }
}

/// Every provider entry by name.
#[derive(Debug, Clone, Default)]
pub struct Providers {
    by_name: BTreeMap<String, ProviderSpec>,
}

impl Providers {
    pub fn builtin() -> Self {
        Self::parse(BUILTIN)
            .unwrap_or_else(|e| unreachable!("the shipped providers.toml is valid: {e}"))
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let by_name: BTreeMap<String, ProviderSpec> =
            toml::from_str(text).map_err(|e| e.to_string())?;
        for (name, p) in &by_name {
            if EngineKind::Tts.builtins().contains(&name.as_str()) {
                return Err(format!(
                    "provider name `{name}` is taken by a built-in engine"
                ));
            }
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                return Err(format!(
                    "provider name `{name}` must be letters, digits, - or _"
                ));
            }
            let scheme_ok = match p.kind {
                ProviderKind::Deepgram => {
                    p.base_url.starts_with("wss://") || p.base_url.starts_with("ws://")
                }
                _ => p.base_url.starts_with("https://") || p.base_url.starts_with("http://"),
            };
            if !scheme_ok {
                return Err(format!(
                    "provider `{name}`: base_url `{}` has the wrong scheme for a {:?} provider",
                    p.base_url, p.kind
                ));
            }
            if !(100..=600_000).contains(&p.timeout_ms)
                || !(100..=600_000).contains(&p.stream_timeout_ms)
            {
                return Err(format!(
                    "provider `{name}`: timeouts must be between 100 and 600000 ms"
                ));
            }
            if p.retries > 10 {
                return Err(format!("provider `{name}`: retries must be at most 10"));
            }
        }
        Ok(Self { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&ProviderSpec> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Reads the key of provider `name` from its variable. `Err` names the missing variable.
    pub fn resolve_key(
        &mut self,
        name: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), String> {
        let Some(p) = self.by_name.get_mut(name) else {
            return Ok(());
        };
        if p.api_key.is_some() {
            return Ok(());
        }
        if let Some(var) = &p.api_key_env {
            match lookup(var) {
                Some(k) if !k.trim().is_empty() => p.api_key = Some(ApiKey::new(&k)),
                _ => return Err(var.clone()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_providers_parse() {
        let p = Providers::builtin();
        for name in ["openai", "groq", "ollama", "deepgram", "elevenlabs"] {
            assert!(p.get(name).is_some(), "{name}");
        }
        assert!(p.get("openai").unwrap().check_kind(EngineKind::Llm).is_ok());
        assert!(p
            .get("deepgram")
            .unwrap()
            .check_kind(EngineKind::Llm)
            .is_err());
        assert!(p.get("ollama").unwrap().api_key_env.is_none());
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(Providers::parse("[local]\nkind = \"openai\"\nbase_url = \"http://x\"").is_err());
        assert!(Providers::parse("[dg]\nkind = \"deepgram\"\nbase_url = \"http://x\"").is_err());
        assert!(
            Providers::parse("[x]\nkind = \"openai\"\nbase_url = \"http://x\"\nretries = 50")
                .is_err()
        );
        assert!(Providers::parse("[x]\nkind = \"smoke\"\nbase_url = \"http://x\"").is_err());
    }

    #[test]
    fn keys_come_from_the_named_variable() {
        let mut p = Providers::builtin();
        assert_eq!(
            p.resolve_key("openai", |_| None),
            Err("OPENAI_API_KEY".to_string())
        );
        p.resolve_key("openai", |v| (v == "OPENAI_API_KEY").then(|| "sk-1".into()))
            .unwrap();
        assert_eq!(
            p.get("openai").unwrap().api_key.as_ref().unwrap().expose(),
            "sk-1"
        );
        p.resolve_key("ollama", |_| None).unwrap();
    }

    #[test]
    fn voices_map_to_provider_ids() {
        let p = Providers::parse(
            "[el]\nkind = \"elevenlabs\"\nbase_url = \"https://x\"\ntts_model = \"m\"\ntts_voice = \"D\"\n[el.voices]\nrachel = \"R1\"\n",
        )
        .unwrap();
        let el = p.get("el").unwrap();
        assert_eq!(el.voice_id(Some("rachel")).as_deref(), Some("R1"));
        assert_eq!(el.voice_id(Some("joe")).as_deref(), Some("D"));
        assert_eq!(el.voice_id(None).as_deref(), Some("D"));
    }
}
