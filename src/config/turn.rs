//! How calls take turns: the speech detector (`VOXWIRE_VAD`), each call's default turn
//! detection (`VOXWIRE_VAD_*`, `VOXWIRE_SEMANTIC_*`, `VOXWIRE_MIN_INTERRUPT_MS`) and the
//! server's own rules (`VOXWIRE_SPECULATE_MS`, `VOXWIRE_PARTIAL_INTERVAL_MS`,
//! `VOXWIRE_ECHO_CANCELLATION`).

use super::{invalid, parse_num, ConfigError, Env};
use crate::protocol::{DetectionMode, TurnDetection};

/// Which models find the end of the caller's turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadChoice {
    /// Silero VAD finds speech and the Smart Turn model judges, at a pause, whether the turn is
    /// complete (the default).
    Semantic,
    /// Silero VAD, a small neural model run by ONNX Runtime; silence alone ends a turn.
    Silero,
    /// A level threshold (`VOXWIRE_VAD_THRESHOLD_DB`); no model.
    Energy,
}

pub(super) fn parse_vad(env: &dyn Env) -> Result<VadChoice, ConfigError> {
    const VAR: &str = "VOXWIRE_VAD";
    match env.get(VAR).as_deref().map(str::trim) {
        None | Some("semantic") => Ok(VadChoice::Semantic),
        Some("silero") => Ok(VadChoice::Silero),
        Some("energy") => Ok(VadChoice::Energy),
        Some(other) => Err(invalid(
            VAR,
            other,
            "expected one of: semantic, silero, energy",
        )),
    }
}

/// How calls take turns, unless a call changes it (`start_call`/`update_call`).
#[derive(Debug, Clone, Copy)]
pub struct TurnSettings {
    /// Defaults for each call; `mode` is semantic when the end-of-turn model is loaded, else
    /// Silero when its model is, else energy.
    pub detection: TurnDetection,
    /// Silence after which the reply starts being prepared, before the turn is known to have
    /// ended (0: never). Nothing is sent unless the turn ends.
    pub speculate_ms: u64,
    /// How often a partial transcript is made while the caller speaks (0: never).
    pub partial_interval_ms: u64,
    /// Take the agent's own voice out of the caller's audio before speech detection
    /// (`VOXWIRE_ECHO_CANCELLATION`, on unless 0, false, no or off).
    pub echo_cancellation: bool,
}

impl TurnSettings {
    pub(super) fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let semantic_pause_ms = parse_num(env, "VOXWIRE_SEMANTIC_PAUSE_MS", 150, 50, 5000)?;
        const MAX_SILENCE: &str = "VOXWIRE_SEMANTIC_MAX_SILENCE_MS";
        let semantic_max_silence_ms = parse_num(env, MAX_SILENCE, 2000, 100, 10_000)?;
        if semantic_max_silence_ms <= semantic_pause_ms {
            return Err(invalid(
                MAX_SILENCE,
                &semantic_max_silence_ms.to_string(),
                format!("must be longer than VOXWIRE_SEMANTIC_PAUSE_MS ({semantic_pause_ms} ms)"),
            ));
        }
        Ok(Self {
            detection: TurnDetection {
                mode: DetectionMode::Semantic,
                threshold: parse_num(env, "VOXWIRE_VAD_THRESHOLD", 0.5, 0.05, 0.95)?,
                energy_threshold_db: parse_num(env, "VOXWIRE_VAD_THRESHOLD_DB", -40.0, -90.0, 0.0)?,
                prefix_padding_ms: parse_num(env, "VOXWIRE_VAD_PREFIX_MS", 300, 0, 2000)?,
                silence_duration_ms: parse_num(env, "VOXWIRE_VAD_SILENCE_MS", 500, 100, 5000)?,
                min_speech_ms: parse_num(env, "VOXWIRE_VAD_MIN_SPEECH_MS", 100, 0, 2000)?,
                min_interrupt_ms: parse_num(env, "VOXWIRE_MIN_INTERRUPT_MS", 400, 0, 5000)?,
                semantic_pause_ms,
                semantic_max_silence_ms,
            },
            speculate_ms: parse_num(env, "VOXWIRE_SPECULATE_MS", 100, 0, 5000)?,
            partial_interval_ms: parse_num(env, "VOXWIRE_PARTIAL_INTERVAL_MS", 1000, 0, 60_000)?,
            echo_cancellation: !matches!(
                env.get("VOXWIRE_ECHO_CANCELLATION")
                    .as_deref()
                    .map(str::trim),
                Some("0" | "false" | "no" | "off")
            ),
        })
    }
}
