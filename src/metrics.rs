//! Prometheus metrics served at `GET /metrics`: connections, live calls, turns, errors by code,
//! per-stage latency histograms of each turn, the end-of-turn model's answers, and (on Linux) the process's CPU time and resident
//! memory, read from `/proc/self` at scrape time; the store writer's writes, drops, errors
//! and queue; the webhooks' drops, attempts and outcomes; and the call summaries made.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::protocol::{ErrorCode, TurnTimings};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabel {
    pub verdict: &'static str,
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
    /// Caller audio the busy speech detector never heard, in milliseconds.
    pub detector_dropped_ms: Counter,
    errors: Family<CodeLabel, Counter>,
    latency: Family<StageLabel, Histogram, LatencyBuckets>,
    verdicts: Family<VerdictLabel, Counter>,
    /// The store writer's counters (clones share the values).
    pub store: StoreMetrics,
    /// The webhook deliveries' counters (clones share the values).
    pub webhooks: WebhookMetrics,
    /// The call summaries' counters (clones share the values).
    pub summaries: SummaryMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// `voxwire_summaries_total{outcome}`: summaries made (`json`, `model`, `extract`) and calls
/// left without one (`skipped`: queue full or shutdown; `timed_out`).
#[derive(Clone, Debug, Default)]
pub struct SummaryMetrics {
    outcomes: Family<OutcomeLabel, Counter>,
}

impl SummaryMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "summaries",
            "Call summaries made, by how, and calls left without one",
            self.outcomes.clone(),
        );
    }

    pub fn add(&self, outcome: &'static str) {
        self.outcomes.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// The count of one outcome so far.
    pub fn count(&self, outcome: &'static str) -> u64 {
        self.outcomes.get_or_create(&OutcomeLabel { outcome }).get()
    }
}

/// What webhooks do: `voxwire_webhook_dropped_total` (call events dropped before they were
/// stored as deliveries: queue full, or left at shutdown), `voxwire_webhook_attempts_total`
/// (requests made), `voxwire_webhook_delivered_total` and `voxwire_webhook_failed_total`
/// (deliveries given up: a permanent refusal, or retried past `VOXWIRE_WEBHOOK_RETRY_FOR`).
#[derive(Clone, Debug, Default)]
pub struct WebhookMetrics {
    dropped: Counter,
    attempts: Counter,
    delivered: Counter,
    failed: Counter,
}

impl WebhookMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "webhook_dropped",
            "Call events dropped before they were stored as webhook deliveries",
            self.dropped.clone(),
        );
        registry.register(
            "webhook_attempts",
            "Webhook requests made",
            self.attempts.clone(),
        );
        registry.register(
            "webhook_delivered",
            "Webhook deliveries answered with a 2xx",
            self.delivered.clone(),
        );
        registry.register(
            "webhook_failed",
            "Webhook deliveries given up",
            self.failed.clone(),
        );
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }
    pub fn attempts(&self) -> u64 {
        self.attempts.get()
    }
    pub fn delivered(&self) -> u64 {
        self.delivered.get()
    }
    pub fn failed(&self) -> u64 {
        self.failed.get()
    }

    pub(crate) fn add_dropped(&self, n: u64) {
        self.dropped.inc_by(n);
    }
    pub(crate) fn add_attempt(&self) {
        self.attempts.inc();
    }
    pub(crate) fn add_delivered(&self) {
        self.delivered.inc();
    }
    pub(crate) fn add_failed(&self) {
        self.failed.inc();
    }
}

/// What the store writer does: `voxwire_store_writes_total` (writes applied),
/// `voxwire_store_dropped_total` (writes given up: queue full, refused by the database, or
/// left at shutdown), `voxwire_store_errors_total` (failed write attempts, including each retry
/// while the database is away) and `voxwire_store_queue` (writes waiting, including a batch
/// being retried). Clones share the values; a default one stands alone (tests).
#[derive(Clone, Debug, Default)]
pub struct StoreMetrics {
    writes: Counter,
    dropped: Counter,
    errors: Counter,
    queue: Gauge,
}

impl StoreMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "store_writes",
            "Writes applied to the store",
            self.writes.clone(),
        );
        registry.register(
            "store_dropped",
            "Writes given up: queue full, refused by the database, or left at shutdown",
            self.dropped.clone(),
        );
        registry.register(
            "store_errors",
            "Failed store write attempts, including each retry while the database is away",
            self.errors.clone(),
        );
        registry.register(
            "store_queue",
            "Writes waiting to be stored",
            self.queue.clone(),
        );
    }

    pub fn writes(&self) -> u64 {
        self.writes.get()
    }
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }
    pub fn errors(&self) -> u64 {
        self.errors.get()
    }
    pub fn queue(&self) -> i64 {
        self.queue.get()
    }

    pub(crate) fn add_written(&self, n: usize) {
        self.writes.inc_by(n as u64);
    }
    pub(crate) fn add_dropped(&self, n: usize) {
        self.dropped.inc_by(n as u64);
    }
    pub(crate) fn add_error(&self) {
        self.errors.inc();
    }
    pub(crate) fn queue_add(&self, n: i64) {
        self.queue.inc_by(n);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("voxwire");
        let connections = Counter::default();
        let live_calls = Gauge::default();
        let turns = Counter::default();
        let detector_dropped_ms = Counter::default();
        let errors = Family::<CodeLabel, Counter>::default();
        let latency = Family::new_with_constructor(LatencyBuckets);
        let verdicts = Family::<VerdictLabel, Counter>::default();
        registry.register(
            "connections",
            "WebSocket connections accepted",
            connections.clone(),
        );
        registry.register("live_calls", "Calls in progress", live_calls.clone());
        registry.register("turns", "Turns completed", turns.clone());
        registry.register(
            "detector_dropped_ms",
            "Caller audio dropped because speech detection was busy, in milliseconds",
            detector_dropped_ms.clone(),
        );
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
        registry.register(
            "end_of_turn_verdicts",
            "Answers of the end-of-turn model at the caller's pauses: complete, incomplete, failed",
            verdicts.clone(),
        );
        let store = StoreMetrics::default();
        store.register(&mut registry);
        let webhooks = WebhookMetrics::default();
        webhooks.register(&mut registry);
        let summaries = SummaryMetrics::default();
        summaries.register(&mut registry);
        registry.register_collector(Box::new(ProcessCollector));
        Self {
            registry,
            connections,
            live_calls,
            turns,
            detector_dropped_ms,
            errors,
            latency,
            verdicts,
            store,
            webhooks,
            summaries,
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
            ("end_of_turn_model", t.end_of_turn.and_then(|e| e.model_ms)),
            ("total", Some(t.total_ms)),
        ] {
            if let Some(v) = v {
                self.latency.get_or_create(&StageLabel { stage }).observe(v);
            }
        }
    }

    /// An answer of the end-of-turn model: complete or not, or `None` when it failed.
    pub fn end_of_turn_verdict(&self, complete: Option<bool>) {
        let verdict = match complete {
            Some(true) => "complete",
            Some(false) => "incomplete",
            None => "failed",
        };
        self.verdicts.get_or_create(&VerdictLabel { verdict }).inc();
    }

    /// The text exposition format. The process figures are read now, so each scrape is current.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// `voxwire_process_cpu_seconds_total` (user + system time of all threads, living and exited) and
/// `voxwire_process_resident_memory_bytes`, read on each scrape. Absent where `/proc` is not.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(cpu) = process::cpu_seconds() {
            let counter = ConstCounter::new(cpu);
            let metric = encoder.encode_descriptor(
                "process_cpu",
                "User and system CPU time of the server process, all threads",
                Some(&Unit::Seconds),
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        let failovers = crate::engines::chain::failovers();
        if !failovers.is_empty() {
            let mut family = encoder.encode_descriptor(
                "engine_failovers",
                "Times an engine of a fallback chain failed and the chain moved on (or had nothing left)",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (engine, n) in failovers {
                let labels = [("engine", engine)];
                let metric = family.encode_family(&labels)?;
                ConstCounter::new(n).encode(metric)?;
            }
        }
        let gate = crate::engines::cpu::gate();
        let urgent = ConstGauge::new(gate.urgent_turns() as i64);
        let metric = encoder.encode_descriptor(
            "urgent_turns",
            "Turns on their way to their first audio now (work that can wait steps aside)",
            None,
            urgent.metric_type(),
        )?;
        urgent.encode(metric)?;
        let (yields, waited) = gate.yielded();
        let counter = ConstCounter::new(yields as u64);
        let metric = encoder.encode_descriptor(
            "first_words_yields",
            "Times a reply's tail, a warm-up or a later piece stepped aside for urgent turns",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)?;
        let counter = ConstCounter::new(waited.as_secs_f64());
        let metric = encoder.encode_descriptor(
            "first_words_yield",
            "Time work spent stepping aside for urgent turns, in all",
            Some(&Unit::Seconds),
            counter.metric_type(),
        )?;
        counter.encode(metric)?;
        if let Some(rss) = process::resident_bytes() {
            let gauge = ConstGauge::new(rss);
            let metric = encoder.encode_descriptor(
                "process_resident_memory",
                "Resident set size of the server process",
                Some(&Unit::Bytes),
                gauge.metric_type(),
            )?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

/// Readers of `/proc/self`; every function answers `None` where that is not available.
pub mod process {
    /// `/proc/self/stat` counts in USER_HZ ticks, which Linux fixes at 100 on every mainstream
    /// architecture; reading the exact value would need `sysconf` (unsafe FFI).
    /// (`/proc/self/schedstat` has nanoseconds but covers only the main thread.)
    const TICKS_PER_SEC: f64 = 100.0;

    pub fn cpu_seconds() -> Option<f64> {
        if !cfg!(target_os = "linux") {
            return None;
        }
        parse_stat_cpu(&std::fs::read_to_string("/proc/self/stat").ok()?)
    }

    pub fn resident_bytes() -> Option<i64> {
        status_bytes("VmRSS:")
    }

    /// The largest resident set size so far.
    pub fn peak_resident_bytes() -> Option<i64> {
        status_bytes("VmHWM:")
    }

    fn status_bytes(field: &str) -> Option<i64> {
        if !cfg!(target_os = "linux") {
            return None;
        }
        parse_status_bytes(&std::fs::read_to_string("/proc/self/status").ok()?, field)
    }

    /// utime + stime (fields 14 and 15) in seconds. The command name (field 2) may hold spaces
    /// and parentheses, so fields are counted from the last `)`.
    pub(super) fn parse_stat_cpu(stat: &str) -> Option<f64> {
        let (_, rest) = stat.rsplit_once(')')?;
        let mut fields = rest.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some((utime + stime) as f64 / TICKS_PER_SEC)
    }

    /// A line such as `VmRSS:   12345 kB`, in bytes.
    pub(super) fn parse_status_bytes(status: &str, field: &str) -> Option<i64> {
        let line = status.lines().find_map(|l| l.strip_prefix(field))?;
        let mut parts = line.split_whitespace();
        let value: i64 = parts.next()?.parse().ok()?;
        match parts.next() {
            Some("kB") => Some(value * 1024),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 2000 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(process::parse_stat_cpu(stat), Some(3.25));
        assert_eq!(process::parse_stat_cpu("4242 (short) S 1"), None);
    }

    #[test]
    fn status_sizes_are_read_in_bytes() {
        let status = "Name:\tvoxwire\nVmHWM:\t  9000 kB\nVmRSS:\t  2048 kB\nThreads:\t9\n";
        assert_eq!(
            process::parse_status_bytes(status, "VmRSS:"),
            Some(2048 * 1024)
        );
        assert_eq!(
            process::parse_status_bytes(status, "VmHWM:"),
            Some(9000 * 1024)
        );
        assert_eq!(process::parse_status_bytes("Name: x\n", "VmRSS:"), None);
    }

    #[test]
    fn process_figures_are_exposed_on_linux() {
        let text = Metrics::default().render();
        if cfg!(target_os = "linux") {
            let cpu = sample(&text, "voxwire_process_cpu_seconds_total");
            let rss = sample(&text, "voxwire_process_resident_memory_bytes");
            assert!(cpu.is_some_and(|v| v >= 0.0), "{text}");
            assert!(rss.is_some_and(|v| v > 1e6), "{text}");
        }
    }

    #[test]
    fn store_counters_are_exposed() {
        let m = Metrics::default();
        let store = m.store.clone();
        store.add_written(3);
        store.add_dropped(2);
        store.add_error();
        store.queue_add(5);
        let text = m.render();
        assert_eq!(
            sample(&text, "voxwire_store_writes_total"),
            Some(3.0),
            "{text}"
        );
        assert_eq!(sample(&text, "voxwire_store_dropped_total"), Some(2.0));
        assert_eq!(sample(&text, "voxwire_store_errors_total"), Some(1.0));
        assert_eq!(sample(&text, "voxwire_store_queue"), Some(5.0));
    }

    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }
}
