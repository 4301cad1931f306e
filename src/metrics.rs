//! Prometheus metrics served at `GET /metrics`: connections, live calls, turns, errors by code,
//! and per-stage latency histograms of each turn.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::protocol::{ErrorCode, TurnTimings};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: &'static str,
}

#[derive(Clone)]
struct LatencyBuckets;

impl MetricConstructor<Histogram> for LatencyBuckets {
    fn new_metric(&self) -> Histogram {
        // 5 ms .. ~20 s
        Histogram::new(exponential_buckets(5.0, 2.0, 13))
    }
}

pub struct Metrics {
    registry: Registry,
    pub connections: Counter,
    pub live_calls: Gauge,
    pub turns: Counter,
    errors: Family<CodeLabel, Counter>,
    latency: Family<StageLabel, Histogram, LatencyBuckets>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("voxwire");
        let connections = Counter::default();
        let live_calls = Gauge::default();
        let turns = Counter::default();
        let errors = Family::<CodeLabel, Counter>::default();
        let latency = Family::new_with_constructor(LatencyBuckets);
        registry.register(
            "connections",
            "WebSocket connections accepted",
            connections.clone(),
        );
        registry.register("live_calls", "Calls in progress", live_calls.clone());
        registry.register("turns", "Turns completed", turns.clone());
        registry.register(
            "errors",
            "Error frames and HTTP errors sent, by code",
            errors.clone(),
        );
        registry.register(
            "turn_latency_ms",
            "Per-stage turn latency in milliseconds, from the end of the caller's turn",
            latency.clone(),
        );
        Self {
            registry,
            connections,
            live_calls,
            turns,
            errors,
            latency,
        }
    }
}

impl Metrics {
    pub fn error(&self, code: ErrorCode) {
        self.errors
            .get_or_create(&CodeLabel {
                code: code.as_str(),
            })
            .inc();
    }

    pub fn turn(&self, t: &TurnTimings) {
        self.turns.inc();
        for (stage, v) in [
            ("end_of_speech", t.end_of_speech_ms),
            ("stt", t.stt_ms),
            ("llm_first_token", t.llm_first_token_ms),
            ("tts_first_audio", t.tts_first_audio_ms),
            ("voice_to_voice", t.voice_to_voice_ms),
            ("total", Some(t.total_ms)),
        ] {
            if let Some(v) = v {
                self.latency.get_or_create(&StageLabel { stage }).observe(v);
            }
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
