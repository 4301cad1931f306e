//! Server configuration: one typed struct, read once from the environment (and `.env`), validated
//! at start-up. A bad value is a [`ConfigError`] naming the variable; the CLI exits with code 64.

mod cluster;
mod net;
mod store;
mod telephony;
mod turn;
mod usage;
mod webhooks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::engines::llm::smollm::WeightFormat;
use crate::engines::providers::{EngineKind, Providers};
use crate::protocol::Limits;

pub use cluster::ClusterSettings;
pub use net::NetSettings;
pub use store::StoreSettings;
pub use telephony::{
    valid_number, NumberRoute, Secret, TelephonySettings, TwilioToken, TELNYX_API_URL,
    TWILIO_API_URL,
};
use turn::parse_vad;
pub use turn::{TurnSettings, VadChoice};
pub use usage::{UsageSettings, DEFAULT_LIMIT_MESSAGE};
pub use webhooks::{WebhookSecret, WebhookSettings, WebhookTarget, MIN_SECRET_BYTES};

/// Exit code for a configuration error (EX_USAGE).
pub const EXIT_CONFIG: i32 = 64;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: {reason} (got {value:?})")]
    Invalid {
        var: &'static str,
        value: String,
        reason: String,
    },
    #[error("{place}: {reason}")]
    Chain { place: String, reason: String },
    #[error("{var}: not set, and provider `{provider}` needs its key ({place} uses it)")]
    MissingKey {
        var: String,
        provider: String,
        place: String,
    },
}

/// An engine chain: engine names to try in order (`local`, `espeak`, `fake` or a provider from
/// `providers.toml`), e.g. `["openai", "local"]`.
pub type Chain = Vec<String>;

#[derive(Clone)]
pub struct Config {
    pub bind: SocketAddr,
    /// HS256 secret; `None` means local demo mode (a random secret is made at start).
    pub jwt_secret: Option<String>,
    /// Browser origins allowed to open `/ws`; empty allows any.
    pub allowed_origins: Vec<String>,
    pub web_dir: PathBuf,
    pub limits: Limits,
    /// Timeouts and caps on connections and tokens.
    pub net: NetSettings,
    /// Largest push-to-talk upload, in bytes.
    pub max_upload_bytes: usize,
    /// Turn detection defaults and the server's own turn-taking rules.
    pub turn: TurnSettings,
    /// The speech detector (`VOXWIRE_VAD`).
    pub vad: VadChoice,
    /// Messages kept per call (oldest dropped).
    pub history_limit: usize,
    /// Calls remembered for `call_id` resumption and `/api/calls` (least recently used dropped).
    pub max_stored_calls: usize,
    pub demo_token_ttl: Duration,
    pub shutdown_grace: Duration,
    /// Engine chains per kind (`VOXWIRE_STT`, `VOXWIRE_LLM`, `VOXWIRE_TTS`); agents may override.
    pub stt: Chain,
    pub llm: Chain,
    pub tts: Chain,
    /// Hosted providers by name, with the keys of those in use.
    pub providers: Providers,
    /// How long a failed engine is tried after the others of its chain.
    pub fallback_cooldown: Duration,
    /// Where local models live.
    pub models_dir: PathBuf,
    /// Never download models.
    pub offline: bool,
    /// ONNX Runtime shared library (default: the fetched one).
    pub ort_lib: Option<PathBuf>,
    /// Piper voices as `(name, .onnx path)`; empty means the fetched default voice.
    pub tts_voices: Vec<(String, PathBuf)>,
    /// Concurrent syntheses (ONNX sessions) and threads per synthesis.
    pub tts_sessions: usize,
    pub tts_threads: usize,
    /// Requests allowed to wait for a busy engine before new ones are refused.
    pub engine_queue: usize,
    /// Speech detection runs allowed to wait for a free thread (each call has at most one).
    pub detector_queue: usize,
    /// Whisper model folder in CTranslate2 format (default: the fetched tiny.en).
    pub stt_model: Option<PathBuf>,
    /// Concurrent transcriptions.
    pub stt_concurrency: usize,
    /// GGUF language model file (default: the fetched SmolLM2).
    pub llm_model: Option<PathBuf>,
    /// Calls whose language-model KV cache is kept between turns; concurrent generations.
    pub llm_sessions: usize,
    pub llm_concurrency: usize,
    /// How the local language model holds its weights (`VOXWIRE_LLM_WEIGHTS`: `packed`, the
    /// default; `f32`, `f16` or `quantized` run candle's forward pass) and the threads of each
    /// packed generation (`VOXWIRE_LLM_THREADS`, 0: one per core).
    pub llm_weights: WeightFormat,
    pub llm_threads: usize,
    /// The agents, from `VOXWIRE_AGENTS`, else `./agents.toml`, else the shipped ones.
    pub agents: crate::agents::Agents,
    /// Where calls are kept and how many writes may wait (`VOXWIRE_DATABASE_URL`,
    /// `VOXWIRE_STORE_QUEUE`).
    pub store: StoreSettings,
    /// Each agent's signed webhook and how deliveries are retried.
    pub webhooks: WebhookSettings,
    /// Default usage limits of an org and the message said when a call's minutes run out.
    pub usage: UsageSettings,
    /// Phone calls through Twilio: its auth token and who answers each called number.
    pub telephony: TelephonySettings,
    /// Several nodes as one service: Redis, this node's id, the live calls' lease.
    pub cluster: ClusterSettings,
}

/// `./web` when the server runs from a checkout, else the `web/` of the source tree it was built
/// from.
/// Threads per speech synthesis: two, or one on a single core.
fn default_tts_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
}

fn default_web_dir() -> PathBuf {
    let here = PathBuf::from("web");
    if here.join("index.html").is_file() {
        return here;
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/web"))
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("allowed_origins", &self.allowed_origins)
            .field("limits", &self.limits)
            .field("stt", &self.stt)
            .field("llm", &self.llm)
            .field("tts", &self.tts)
            .field("vad", &self.vad)
            .field("store", &self.store)
            .field("webhooks", &self.webhooks)
            .field("telephony", &self.telephony)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// Source of variables: the process environment in production, a map in tests.
pub trait Env {
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.trim().is_empty())
    }
}

impl<S: std::hash::BuildHasher> Env for std::collections::HashMap<String, String, S> {
    fn get(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}

fn invalid(var: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn parse_num<T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display>(
    env: &dyn Env,
    var: &'static str,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    let Some(raw) = env.get(var) else {
        return Ok(default);
    };
    let v: T = raw
        .trim()
        .parse()
        .map_err(|_| invalid(var, &raw, "not a number"))?;
    if v < min || v > max {
        return Err(invalid(
            var,
            &raw,
            format!("must be between {min} and {max}"),
        ));
    }
    Ok(v)
}

/// Reads a chain variable: comma-separated engine names.
fn parse_chain(env: &dyn Env, kind: EngineKind) -> Result<Chain, ConfigError> {
    let var = kind.var();
    let Some(raw) = env.get(var) else {
        return Ok(vec!["local".to_string()]);
    };
    let chain: Chain = raw
        .split(',')
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    if chain.is_empty() {
        return Err(invalid(var, &raw, "expected engine names, comma-separated"));
    }
    Ok(chain)
}

/// Checks every name of `chain` against the built-ins and the providers, and reads the keys of
/// the providers it uses. `place` says where the chain was set, for the message.
fn check_chain(
    env: &dyn Env,
    providers: &mut Providers,
    kind: EngineKind,
    chain: &Chain,
    place: &str,
) -> Result<(), ConfigError> {
    let reject = |reason: String| ConfigError::Chain {
        place: place.to_string(),
        reason,
    };
    if chain.is_empty() {
        return Err(reject("the engine chain is empty".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for name in chain {
        if !seen.insert(name.as_str()) {
            return Err(reject(format!("`{name}` is listed twice")));
        }
        if kind.builtins().contains(&name.as_str()) {
            continue;
        }
        let Some(spec) = providers.get(name) else {
            let known: Vec<&str> = kind
                .builtins()
                .iter()
                .copied()
                .chain(providers.names())
                .collect();
            return Err(reject(format!(
                "unknown {} engine `{name}`; expected one of: {}",
                kind.describe(),
                known.join(", ")
            )));
        };
        spec.check_kind(kind).map_err(|why| {
            reject(format!(
                "provider `{name}` cannot be the {}: {why}",
                kind.describe()
            ))
        })?;
        providers
            .resolve_key(name, |var| env.get(var))
            .map_err(|var| ConfigError::MissingKey {
                var,
                provider: name.clone(),
                place: place.to_string(),
            })?;
    }
    Ok(())
}

fn load_providers(env: &dyn Env) -> Result<Providers, ConfigError> {
    match env.get("VOXWIRE_PROVIDERS") {
        Some(path) => Providers::load(std::path::Path::new(path.trim()))
            .map_err(|reason| invalid("VOXWIRE_PROVIDERS", &path, reason)),
        None if std::path::Path::new("providers.toml").is_file() => {
            Providers::load(std::path::Path::new("providers.toml"))
                .map_err(|reason| invalid("VOXWIRE_PROVIDERS", "providers.toml", reason))
        }
        None => Ok(Providers::builtin()),
    }
}

fn load_agents(env: &dyn Env) -> Result<crate::agents::Agents, ConfigError> {
    use crate::agents::Agents;
    match env.get("VOXWIRE_AGENTS") {
        Some(path) => Agents::load(std::path::Path::new(path.trim()))
            .map_err(|reason| invalid("VOXWIRE_AGENTS", &path, reason)),
        None if std::path::Path::new("agents.toml").is_file() => {
            Agents::load(std::path::Path::new("agents.toml"))
                .map_err(|reason| invalid("VOXWIRE_AGENTS", "agents.toml", reason))
        }
        None => Ok(Agents::builtin()),
    }
}

fn parse_voices(env: &dyn Env) -> Result<Vec<(String, PathBuf)>, ConfigError> {
    const VAR: &str = "VOXWIRE_TTS_VOICES";
    let Some(raw) = env.get(VAR) else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|item| {
            let (name, path) = item.split_once('=').ok_or_else(|| {
                invalid(VAR, &raw, "expected name=/path/voice.onnx, comma-separated")
            })?;
            if name.trim().is_empty() || !path.trim().ends_with(".onnx") {
                return Err(invalid(
                    VAR,
                    &raw,
                    "expected name=/path/voice.onnx, comma-separated",
                ));
            }
            Ok((name.trim().to_string(), PathBuf::from(path.trim())))
        })
        .collect()
}

impl Config {
    /// Reads and validates every variable.
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let bind_raw = env
            .get("VOXWIRE_BIND")
            .unwrap_or_else(|| "127.0.0.1:3001".into());
        let bind = bind_raw.trim().parse().map_err(|_| {
            invalid(
                "VOXWIRE_BIND",
                &bind_raw,
                "expected HOST:PORT, e.g. 127.0.0.1:3001",
            )
        })?;
        let jwt_secret = env.get("JWT_SECRET");
        if let Some(s) = &jwt_secret {
            if s.len() < 16 {
                return Err(invalid(
                    "JWT_SECRET",
                    "<redacted>",
                    "must be at least 16 bytes",
                ));
            }
        }
        let allowed_origins = env
            .get("VOXWIRE_ALLOWED_ORIGINS")
            .map(|v| {
                v.split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_string())
                    .filter(|o| !o.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let web_dir = env
            .get("VOXWIRE_WEB_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(default_web_dir);
        let limits = Limits {
            max_message_bytes: parse_num(
                env,
                "VOXWIRE_MAX_MESSAGE_BYTES",
                1 << 20,
                1024,
                64 << 20,
            )?,
            max_turn_audio_ms: parse_num(env, "VOXWIRE_MAX_TURN_AUDIO_MS", 60_000, 1_000, 600_000)?,
            max_call_secs: parse_num(env, "VOXWIRE_MAX_CALL_SECS", 3_600, 10, 86_400)?,
            max_calls_per_user: parse_num(env, "VOXWIRE_MAX_CALLS_PER_USER", 4, 1, 10_000)?,
            max_text_chars: parse_num(env, "VOXWIRE_MAX_TEXT_CHARS", 2_000, 10, 100_000)?,
        };
        let mut providers = load_providers(env)?;
        let agents = load_agents(env)?;
        let [stt, llm, tts] = [EngineKind::Stt, EngineKind::Llm, EngineKind::Tts].map(|kind| {
            let chain = parse_chain(env, kind)?;
            check_chain(env, &mut providers, kind, &chain, kind.var())?;
            for agent in agents.iter() {
                if let Some(c) = agent.chain(kind) {
                    let place = format!("agent `{}` ({})", agent.name, kind.field());
                    check_chain(env, &mut providers, kind, c, &place)?;
                }
            }
            Ok::<_, ConfigError>(chain)
        });
        let (stt, llm, tts) = (stt?, llm?, tts?);
        Ok(Self {
            bind,
            jwt_secret,
            allowed_origins,
            web_dir,
            limits,
            net: NetSettings::from_env(env)?,
            max_upload_bytes: parse_num(
                env,
                "VOXWIRE_MAX_UPLOAD_BYTES",
                10 << 20,
                1024,
                512 << 20,
            )?,
            turn: TurnSettings::from_env(env)?,
            vad: parse_vad(env)?,
            history_limit: parse_num(env, "VOXWIRE_HISTORY_LIMIT", 50, 2, 10_000)?,
            max_stored_calls: parse_num(env, "VOXWIRE_MAX_STORED_CALLS", 10_000, 1, 10_000_000)?,
            demo_token_ttl: Duration::from_secs(parse_num(
                env,
                "VOXWIRE_DEMO_TOKEN_TTL_SECS",
                3_600,
                60,
                86_400,
            )?),
            shutdown_grace: Duration::from_secs(parse_num(
                env,
                "VOXWIRE_SHUTDOWN_GRACE_SECS",
                5,
                0,
                600,
            )?),
            stt,
            llm,
            tts,
            providers,
            fallback_cooldown: Duration::from_secs(parse_num(
                env,
                "VOXWIRE_FALLBACK_COOLDOWN_SECS",
                30,
                0,
                3_600,
            )?),
            models_dir: env
                .get("VOXWIRE_MODELS_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(crate::models::default_dir),
            offline: matches!(
                env.get("VOXWIRE_OFFLINE").as_deref().map(str::trim),
                Some("1" | "true" | "yes")
            ),
            ort_lib: env.get("VOXWIRE_ORT_LIB").map(PathBuf::from),
            tts_voices: parse_voices(env)?,
            tts_sessions: parse_num(env, "VOXWIRE_TTS_SESSIONS", 1, 1, 64)?,
            // Two threads voice the first words in about half the time (`cargo bench --bench
            // tts`), and work that can wait steps aside meanwhile (`engines::cpu`).
            tts_threads: parse_num(env, "VOXWIRE_TTS_THREADS", default_tts_threads(), 1, 64)?,
            engine_queue: parse_num(env, "VOXWIRE_ENGINE_QUEUE", 32, 0, 100_000)?,
            detector_queue: parse_num(
                env,
                "VOXWIRE_DETECTOR_QUEUE",
                crate::engines::DEFAULT_DETECTOR_QUEUE,
                0,
                100_000,
            )?,
            stt_model: env.get("VOXWIRE_STT_MODEL").map(PathBuf::from),
            stt_concurrency: parse_num(env, "VOXWIRE_STT_CONCURRENCY", 1, 1, 64)?,
            llm_model: env.get("VOXWIRE_LLM_MODEL").map(PathBuf::from),
            llm_sessions: parse_num(env, "VOXWIRE_LLM_SESSIONS", 8, 1, 10_000)?,
            llm_concurrency: parse_num(env, "VOXWIRE_LLM_CONCURRENCY", 1, 1, 64)?,
            llm_weights: match env.get("VOXWIRE_LLM_WEIGHTS") {
                Some(raw) => raw
                    .parse()
                    .map_err(|reason| invalid("VOXWIRE_LLM_WEIGHTS", &raw, reason))?,
                None => WeightFormat::Packed,
            },
            llm_threads: parse_num(env, "VOXWIRE_LLM_THREADS", 0, 0, 256)?,
            webhooks: WebhookSettings::from_env(env, &agents)?,
            agents,
            store: StoreSettings::from_env(env)?,
            usage: UsageSettings::from_env(env)?,
            telephony: TelephonySettings::from_env(env)?,
            cluster: ClusterSettings::from_env(env)?,
        })
    }

    /// Defaults with the fake test engines: what protocol tests start from.
    pub fn for_tests() -> Self {
        let env: std::collections::HashMap<String, String> = [
            ("VOXWIRE_BIND", "127.0.0.1:0"),
            ("JWT_SECRET", "test-secret-0123456789abcdef"),
            ("VOXWIRE_STT", "fake"),
            ("VOXWIRE_LLM", "fake"),
            ("VOXWIRE_TTS", "fake"),
            ("VOXWIRE_VAD", "energy"),
            ("VOXWIRE_DATABASE_URL", "memory"),
            (
                "VOXWIRE_AGENTS",
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/agents.toml"),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Self::from_env(&env).unwrap_or_else(|e| unreachable!("test defaults are valid: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_env(&env(&[])).unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:3001");
        assert!(c.jwt_secret.is_none());
        assert_eq!(c.history_limit, 50);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = Config::from_env(&env(&[("VOXWIRE_BIND", "nowhere")])).unwrap_err();
        assert!(e.to_string().starts_with("VOXWIRE_BIND:"), "{e}");
        let e = Config::from_env(&env(&[("VOXWIRE_HISTORY_LIMIT", "0")])).unwrap_err();
        assert!(e.to_string().contains("VOXWIRE_HISTORY_LIMIT"), "{e}");
        let e = Config::from_env(&env(&[("JWT_SECRET", "short")])).unwrap_err();
        assert!(!e.to_string().contains("short"), "secret leaked: {e}");
    }

    #[test]
    fn engines_and_voices() {
        let c = Config::from_env(&env(&[])).unwrap();
        assert_eq!(c.tts, vec!["local"]);
        let e = Config::from_env(&env(&[("VOXWIRE_TTS", "loud")])).unwrap_err();
        assert!(e.to_string().contains("local, espeak, fake"), "{e}");
        let c = Config::from_env(&env(&[(
            "VOXWIRE_TTS_VOICES",
            "joe=/v/joe.onnx, amy=/v/amy.onnx",
        )]))
        .unwrap();
        assert_eq!(
            c.tts_voices[1],
            ("amy".to_string(), PathBuf::from("/v/amy.onnx"))
        );
        assert!(Config::from_env(&env(&[("VOXWIRE_TTS_VOICES", "joe")])).is_err());
    }

    #[test]
    fn chains_name_known_engines_and_need_their_keys() {
        let c = Config::from_env(&env(&[
            ("VOXWIRE_LLM", "openai, local"),
            ("OPENAI_API_KEY", "sk-live-secret-1"),
        ]))
        .unwrap();
        assert_eq!(c.llm, vec!["openai", "local"]);
        let key = c.providers.get("openai").unwrap().api_key.as_ref().unwrap();
        assert_eq!(key.expose(), "sk-live-secret-1");
        assert!(!format!("{c:?}").contains("sk-live"), "key in Debug output");
        let e = Config::from_env(&env(&[("VOXWIRE_LLM", "openai,local")])).unwrap_err();
        assert!(e.to_string().starts_with("OPENAI_API_KEY: not set"), "{e}");
        let e = Config::from_env(&env(&[("VOXWIRE_LLM", "deepgram")])).unwrap_err();
        assert!(
            e.to_string().contains("cannot be the language model"),
            "{e}"
        );
        let e = Config::from_env(&env(&[("VOXWIRE_STT", "local,local")])).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let e = Config::from_env(&env(&[("VOXWIRE_STT", "whisperx")])).unwrap_err();
        assert!(e.to_string().contains("deepgram"), "{e}");
        // A server without a key (Ollama) needs none.
        assert!(Config::from_env(&env(&[("VOXWIRE_LLM", "ollama,local")])).is_ok());
    }

    #[test]
    fn speech_detector_choice() {
        assert_eq!(
            Config::from_env(&env(&[])).unwrap().vad,
            VadChoice::Semantic
        );
        let c = Config::from_env(&env(&[("VOXWIRE_VAD", "silero")])).unwrap();
        assert_eq!(c.vad, VadChoice::Silero);
        let c = Config::from_env(&env(&[("VOXWIRE_VAD", "energy")])).unwrap();
        assert_eq!(c.vad, VadChoice::Energy);
        let e = Config::from_env(&env(&[("VOXWIRE_VAD", "webrtc")])).unwrap_err();
        assert!(e.to_string().starts_with("VOXWIRE_VAD:"), "{e}");
        assert!(e.to_string().contains("semantic, silero, energy"), "{e}");
        assert_eq!(Config::for_tests().vad, VadChoice::Energy);
    }

    #[test]
    fn semantic_timing() {
        let d = Config::from_env(&env(&[])).unwrap().turn.detection;
        assert_eq!(d.mode, crate::protocol::DetectionMode::Semantic);
        assert_eq!(
            (d.semantic_pause_ms, d.semantic_max_silence_ms),
            (150, 2000)
        );
        let c = Config::from_env(&env(&[
            ("VOXWIRE_SEMANTIC_PAUSE_MS", "300"),
            ("VOXWIRE_SEMANTIC_MAX_SILENCE_MS", "1500"),
        ]))
        .unwrap();
        let d = c.turn.detection;
        assert_eq!(
            (d.semantic_pause_ms, d.semantic_max_silence_ms),
            (300, 1500)
        );
        let e = Config::from_env(&env(&[("VOXWIRE_SEMANTIC_MAX_SILENCE_MS", "150")])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("VOXWIRE_SEMANTIC_MAX_SILENCE_MS:"),
            "{e}"
        );
    }

    #[test]
    fn language_model_weights_and_threads() {
        let c = Config::from_env(&env(&[])).unwrap();
        assert_eq!((c.llm_weights, c.llm_threads), (WeightFormat::Packed, 0));
        let c = Config::from_env(&env(&[
            ("VOXWIRE_LLM_WEIGHTS", " F32"),
            ("VOXWIRE_LLM_THREADS", "1"),
        ]))
        .unwrap();
        assert_eq!((c.llm_weights, c.llm_threads), (WeightFormat::F32, 1));
        let e = Config::from_env(&env(&[("VOXWIRE_LLM_WEIGHTS", "q4")])).unwrap_err();
        assert!(e.to_string().starts_with("VOXWIRE_LLM_WEIGHTS:"), "{e}");
        assert!(
            e.to_string().contains("packed, quantized, f32 or f16"),
            "{e}"
        );
    }

    #[test]
    fn origins_are_split_and_trimmed() {
        let c = Config::from_env(&env(&[(
            "VOXWIRE_ALLOWED_ORIGINS",
            "https://a.example/, http://localhost:3001",
        )]))
        .unwrap();
        assert_eq!(
            c.allowed_origins,
            vec!["https://a.example", "http://localhost:3001"]
        );
    }
}
