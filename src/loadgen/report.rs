//! The numbers of a run: turn outcomes, errors, client-side latency percentiles, the server's own
//! stage medians, and its CPU and memory; as a markdown table or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::call::CallResult;
use super::frame::ServerTimings;
use super::scrape::ServerUsage;

/// Percentiles of a set of values (nearest rank), in ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub min: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| v[((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Self {
            count: v.len(),
            min: v[0],
            p50: rank(50.0),
            p95: rank(95.0),
            p99: rank(99.0),
            max: v[v.len() - 1],
        })
    }
}

/// What the run was, besides its results.
#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    pub mode: &'static str,
    pub url: String,
    pub calls: usize,
    pub turns_per_call: usize,
    pub chunk_ms: u64,
    pub ramp_ms: u64,
    /// The end-of-turn silence assumed (the server's, when it stated one).
    pub silence_ms: u64,
    /// Where the speech of the WAV ends, and its length.
    pub speech_end_ms: Option<u64>,
    pub wav_ms: Option<u64>,
    /// All calls shared the demo user, so `max_calls_per_user` applied.
    pub demo_token: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub setup: Setup,
    pub wall_secs: f64,
    pub calls_connected: usize,
    pub calls_started: usize,
    /// Calls that never got going, by reason (connect, upgrade, lost before `call_started`).
    pub connection_failures: u64,
    pub failures_by_reason: BTreeMap<String, u64>,
    pub turns_total: usize,
    pub turns_ok: usize,
    /// Turn endings: `response_done` reasons, `timeout`, `connection_lost`, `call_ended`.
    pub turn_outcomes: BTreeMap<String, u64>,
    pub timeouts: u64,
    /// Server turns that began before the clip's speech ended (the utterance was cut).
    pub early_server_turns: u64,
    /// `interrupted` frames: replies the server stopped, taking the caller for a barge-in.
    pub interruptions: u64,
    /// `error` frames by code.
    pub errors: BTreeMap<String, u64>,
    pub voice_to_voice_ms: Option<Summary>,
    pub server_turnaround_ms: Option<Summary>,
    /// Medians of the `metrics` frames' fields.
    pub server_stage_median_ms: BTreeMap<&'static str, f64>,
    /// How late the generator sent chunks against the real-time schedule (its own health).
    pub send_lag_ms: Option<Summary>,
    pub server: ServerUsage,
    /// Idle mode: (RSS with every call open - RSS before) / calls, in KB of 1024 bytes.
    pub rss_per_idle_call_kb: Option<f64>,
    /// The load generator's own cost, to judge whether it kept up.
    pub generator: Generator,
    /// With `--monitors`: what the monitor streams saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitors: Option<super::watch::MonitorFigures>,
}

/// The generator process during the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Generator {
    pub cpu_percent: Option<f64>,
    pub peak_rss_bytes: Option<u64>,
}

impl Report {
    pub fn build(
        setup: Setup,
        results: &[CallResult],
        wall_secs: f64,
        server: ServerUsage,
        rss_per_idle_call_kb: Option<f64>,
        generator: Generator,
    ) -> Self {
        let mut failures_by_reason = BTreeMap::new();
        let mut turn_outcomes = BTreeMap::new();
        let mut errors = BTreeMap::new();
        let (mut v2v, mut turnaround, mut lag) = (Vec::new(), Vec::new(), Vec::new());
        let mut stages: [Vec<f64>; 5] = Default::default();
        for r in results {
            if let Some(f) = &r.failure {
                *failures_by_reason.entry(f.clone()).or_default() += 1;
            }
            for (code, n) in &r.errors {
                *errors.entry(code.clone()).or_default() += n;
            }
            lag.extend_from_slice(&r.send_lag_ms);
            for t in &r.turns {
                *turn_outcomes
                    .entry(t.outcome.label().to_string())
                    .or_default() += 1;
                v2v.extend(t.voice_to_voice_ms);
                turnaround.extend(t.turnaround_ms);
                for (values, v) in stages.iter_mut().zip(stage_values(&t.server)) {
                    values.extend(v);
                }
            }
        }
        let server_stage_median_ms = STAGES
            .iter()
            .zip(&stages)
            .filter_map(|(name, values)| Some((*name, Summary::of(values)?.p50)))
            .collect();
        let turns_per_call = if setup.mode == "idle" {
            0
        } else {
            setup.turns_per_call
        };
        Self {
            wall_secs,
            calls_connected: results.iter().filter(|r| r.connected).count(),
            calls_started: results.iter().filter(|r| r.started).count(),
            connection_failures: failures_by_reason.values().sum(),
            failures_by_reason,
            turns_total: setup.calls * turns_per_call,
            turns_ok: turn_outcomes.get("completed").copied().unwrap_or(0) as usize,
            timeouts: turn_outcomes.get("timeout").copied().unwrap_or(0),
            early_server_turns: results.iter().map(|r| r.early_turns).sum(),
            interruptions: results.iter().map(|r| r.interruptions).sum(),
            turn_outcomes,
            errors,
            voice_to_voice_ms: Summary::of(&v2v),
            server_turnaround_ms: Summary::of(&turnaround),
            server_stage_median_ms,
            send_lag_ms: Summary::of(&lag),
            server,
            rss_per_idle_call_kb,
            generator,
            setup,
            monitors: None,
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    pub fn markdown(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        let s = &self.setup;
        rows.push(("mode".into(), format!("{} against {}", s.mode, s.url)));
        rows.push((
            "calls connected / started / requested".into(),
            format!(
                "{} / {} / {}",
                self.calls_connected, self.calls_started, s.calls
            ),
        ));
        rows.push((
            "connection failures".into(),
            if self.failures_by_reason.is_empty() {
                "0".into()
            } else {
                format!(
                    "{} ({})",
                    self.connection_failures,
                    counts(&self.failures_by_reason)
                )
            },
        ));
        rows.push(("errors by code".into(), counts(&self.errors)));
        if s.mode != "idle" {
            rows.push((
                "turns ok / total".into(),
                format!("{} / {}", self.turns_ok, self.turns_total),
            ));
            rows.push(("turn outcomes".into(), counts(&self.turn_outcomes)));
            rows.push(("timeouts".into(), self.timeouts.to_string()));
            if self.interruptions > 0 {
                rows.push((
                    "replies interrupted (barge-in)".into(),
                    self.interruptions.to_string(),
                ));
            }
            if self.early_server_turns > 0 {
                rows.push((
                    "server turns begun before the speech ended".into(),
                    self.early_server_turns.to_string(),
                ));
            }
            rows.push((
                "voice-to-voice p50 / p95 / p99 / max".into(),
                summary(self.voice_to_voice_ms, true),
            ));
            rows.push((
                "server turnaround p50 / p95 / p99".into(),
                summary(self.server_turnaround_ms, false),
            ));
            rows.push((
                "server-reported medians".into(),
                if self.server_stage_median_ms.is_empty() {
                    "none".into()
                } else {
                    self.server_stage_median_ms
                        .iter()
                        .map(|(k, v)| format!("{k} {v:.0} ms"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ));
            rows.push((
                "generator send lag p99 / max".into(),
                self.send_lag_ms
                    .map(|l| format!("{:.1} / {:.1} ms", l.p99, l.max))
                    .unwrap_or_else(|| "n/a".into()),
            ));
        }
        let u = &self.server;
        rows.push((
            "server CPU (100% = one core)".into(),
            u.cpu_percent
                .map(|c| format!("{c:.0}%"))
                .unwrap_or_else(|| "n/a".into()),
        ));
        rows.push((
            "server RSS start / peak / end".into(),
            format!(
                "{} / {} / {} MB",
                mb(u.rss_start_bytes),
                mb(u.rss_peak_bytes),
                mb(u.rss_end_bytes)
            ),
        ));
        if s.mode == "idle" {
            rows.push((
                "server RSS per idle call".into(),
                self.rss_per_idle_call_kb
                    .map(|k| format!("{k:.1} KB"))
                    .unwrap_or_else(|| "n/a".into()),
            ));
        }
        rows.push((
            "generator CPU / peak RSS".into(),
            format!(
                "{} / {} MB",
                self.generator
                    .cpu_percent
                    .map(|c| format!("{c:.0}%"))
                    .unwrap_or_else(|| "n/a".into()),
                mb(self.generator.peak_rss_bytes)
            ),
        ));
        if let Some(m) = &self.monitors {
            rows.push((
                "monitor streams / events / lagged (missed)".into(),
                format!("{} / {} / {} ({})", m.streams, m.events, m.lagged, m.missed),
            ));
            rows.push((
                "monitor event delay p50 / p95 / p99 / max".into(),
                summary(m.delay_ms, true),
            ));
        }
        rows.push(("wall time".into(), format!("{:.1} s", self.wall_secs)));
        let mut out = String::from("| metric | value |\n|---|---|\n");
        for (k, v) in rows {
            let _ = writeln!(out, "| {k} | {v} |");
        }
        out
    }
}

const STAGES: [&str; 5] = [
    "end_of_speech",
    "stt",
    "llm_first_token",
    "tts_first_audio",
    "voice_to_voice",
];

fn stage_values(t: &ServerTimings) -> [Option<f64>; 5] {
    [
        t.end_of_speech_ms,
        t.stt_ms,
        t.llm_first_token_ms,
        t.tts_first_audio_ms,
        t.voice_to_voice_ms,
    ]
}

fn counts(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn summary(s: Option<Summary>, with_max: bool) -> String {
    match s {
        None => "n/a".into(),
        Some(s) if with_max => format!(
            "{:.0} / {:.0} / {:.0} / {:.0} ms (n={})",
            s.p50, s.p95, s.p99, s.max, s.count
        ),
        Some(s) => format!(
            "{:.0} / {:.0} / {:.0} ms (n={})",
            s.p50, s.p95, s.p99, s.count
        ),
    }
}

fn mb(bytes: Option<u64>) -> String {
    bytes
        .map(|b| format!("{:.1}", b as f64 / 1_048_576.0))
        .unwrap_or_else(|| "n/a".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::call::{Outcome, TurnResult};

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&v).unwrap();
        assert_eq!(
            (s.p50, s.p95, s.p99, s.max, s.min),
            (50.0, 95.0, 99.0, 100.0, 1.0)
        );
        let s = Summary::of(&[7.0]).unwrap();
        assert_eq!((s.p50, s.p99), (7.0, 7.0));
        assert!(Summary::of(&[]).is_none());
        assert!(Summary::of(&[f64::NAN]).is_none());
    }

    fn turn(outcome: Outcome, v2v: Option<f64>, stt: Option<f64>) -> TurnResult {
        TurnResult {
            outcome,
            voice_to_voice_ms: v2v,
            turnaround_ms: v2v.map(|v| v - 500.0),
            server: ServerTimings {
                stt_ms: stt,
                ..ServerTimings::default()
            },
        }
    }

    #[test]
    fn results_are_added_up() {
        let setup = Setup {
            mode: "turns",
            url: "ws://127.0.0.1:3001/ws".into(),
            calls: 3,
            turns_per_call: 2,
            chunk_ms: 500,
            ramp_ms: 1000,
            silence_ms: 600,
            speech_end_ms: Some(1000),
            wav_ms: Some(1500),
            demo_token: false,
        };
        let ok = CallResult {
            connected: true,
            started: true,
            turns: vec![
                turn(Outcome::Done("completed".into()), Some(900.0), Some(10.0)),
                turn(Outcome::Done("completed".into()), Some(1100.0), Some(30.0)),
            ],
            errors: BTreeMap::from([("engine_busy".to_string(), 1)]),
            ..CallResult::default()
        };
        let slow = CallResult {
            connected: true,
            started: true,
            turns: vec![turn(Outcome::Timeout, None, None)],
            ..CallResult::default()
        };
        let refused = CallResult {
            failure: Some("connect: refused".into()),
            ..CallResult::default()
        };
        let r = Report::build(
            setup,
            &[ok, slow, refused],
            5.0,
            ServerUsage::default(),
            None,
            Generator::default(),
        );
        assert_eq!((r.turns_ok, r.turns_total, r.timeouts), (2, 6, 1));
        assert_eq!(
            (r.calls_connected, r.calls_started, r.connection_failures),
            (2, 2, 1)
        );
        assert_eq!(r.errors["engine_busy"], 1);
        assert_eq!(r.voice_to_voice_ms.unwrap().count, 2);
        assert_eq!(r.server_stage_median_ms["stt"], 10.0);
        let table = r.markdown();
        assert!(table.contains("| turns ok / total | 2 / 6 |"), "{table}");
        assert!(table.contains("completed 2, timeout 1"), "{table}");
        let json: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(json["turns_ok"], 2);
        assert_eq!(json["calls"], 3);
    }
}
