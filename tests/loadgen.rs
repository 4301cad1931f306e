//! The load generator against the real server with fake engines: every turn completes and is
//! timed; a greeted caller hears the greeting out, and neither the greeting nor the reply to a
//! cut-off part of the utterance is taken for the caller's reply; the demo token works for one
//! call; an idle run reports the server's memory per call.

mod common;

use clap::Parser;
use voxwire::loadgen::{self, Options, Report};

/// A WAV in the temp directory, removed when dropped.
struct TempWav(std::path::PathBuf);

const RATE: u32 = 16_000;

/// A tone burst at -10 dBFS (RMS).
fn burst(ms: u32) -> Vec<f32> {
    common::tone(
        ms,
        RATE,
        10f32.powf(-10.0 / 20.0) * std::f32::consts::SQRT_2,
    )
}

fn silence(ms: u32) -> Vec<f32> {
    vec![0.0; (RATE * ms / 1000) as usize]
}

impl TempWav {
    /// 1 s of tone, then 0.5 s of silence.
    fn utterance(name: &str) -> Self {
        Self::new(name, &[burst(1000), silence(500)].concat())
    }

    fn new(name: &str, samples: &[f32]) -> Self {
        let file = format!("voxwire-loadgen-{}-{name}.wav", std::process::id());
        let path = std::env::temp_dir().join(file);
        std::fs::write(&path, common::wav_file(samples, RATE)).unwrap();
        Self(path)
    }

    fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempWav {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn options(server: &common::TestServer, args: &[&str]) -> Options {
    let url = server.ws_url();
    let mut all = vec![
        "loadgen",
        "--url",
        &url,
        "--secret",
        "test-secret-0123456789abcdef",
    ];
    all.extend_from_slice(args);
    Options::try_parse_from(all).unwrap()
}

async fn run(opts: Options) -> Report {
    let report = loadgen::run(opts).await.unwrap();
    println!("{}", report.markdown());
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_calls_of_two_turns_all_complete_and_are_timed() {
    let server = common::start().await;
    let wav = TempWav::utterance("turns");
    let report = run(options(
        &server,
        &[
            "--calls",
            "3",
            "--turns",
            "2",
            "--wav",
            &wav.arg(),
            "--chunk-ms",
            "200",
        ],
    ))
    .await;
    assert_eq!(report.setup.speech_end_ms, Some(1000));
    assert_eq!((report.turns_ok, report.turns_total), (6, 6), "{report:?}");
    assert_eq!(report.turn_outcomes.get("completed"), Some(&6));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.connection_failures, 0);
    assert_eq!(report.timeouts, 0);
    // Each caller hears the reply out before speaking again.
    assert_eq!(report.interruptions, 0);
    let v2v = report.voice_to_voice_ms.expect("voice-to-voice measured");
    assert_eq!(v2v.count, 6);
    // Speech ends at 1 s; the server needs 600 ms of silence before it can answer.
    assert!(v2v.min > 0.0, "{v2v:?}");
    let turnaround = report.server_turnaround_ms.expect("turnaround measured");
    assert_eq!(turnaround.count, 6);
    assert!(turnaround.p50 < v2v.p50, "{turnaround:?} {v2v:?}");
    assert!(report.server_stage_median_ms.contains_key("stt"));
    assert!(report.server_stage_median_ms.contains_key("voice_to_voice"));
    if cfg!(target_os = "linux") {
        assert!(report.server.cpu_percent.is_some());
        assert!(report.server.rss_peak_bytes >= report.server.rss_start_bytes);
    }
    let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
    assert_eq!(json["turns_ok"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_greeted_caller_hears_the_greeting_out_and_it_is_not_taken_for_the_reply() {
    let mut config = voxwire::Config::for_tests();
    // Twenty words: 1.2 s of fake speech, longer than a barge-in needs.
    config.agents = voxwire::agents::Agents::parse(
        r#"
        default = "talker"
        [[agent]]
        name = "talker"
        system_prompt = "You talk."
        greeting = "one two three four five six seven eight nine ten one two three four five six seven eight nine ten"
        "#,
    )
    .unwrap();
    let server = common::start_with(config, voxwire::engines::Engines::fake()).await;
    let wav = TempWav::utterance("greeting");
    let report = run(options(
        &server,
        &["--turns", "1", "--wav", &wav.arg(), "--chunk-ms", "200"],
    ))
    .await;
    assert_eq!(report.turns_ok, 1, "{report:?}");
    // The caller listened (sending silence) until the greeting had played: nothing interrupted.
    assert_eq!(report.interruptions, 0, "{report:?}");
    assert_eq!(report.turn_outcomes.get("interrupted"), None);
    // The greeting's audio comes at once; the caller's reply only after speech and silence.
    assert!(report.voice_to_voice_ms.unwrap().min > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_utterance_the_server_cuts_in_two_is_timed_on_its_last_part() {
    let server = common::start().await;
    // A pause longer than the server's 600 ms end-of-turn silence, inside the utterance.
    let samples = [burst(500), silence(1000), burst(500), silence(500)].concat();
    let wav = TempWav::new("pause", &samples);
    let report = run(options(
        &server,
        &["--turns", "2", "--wav", &wav.arg(), "--chunk-ms", "200"],
    ))
    .await;
    assert_eq!(report.setup.speech_end_ms, Some(2000));
    assert_eq!(report.turns_ok, 2, "{report:?}");
    assert_eq!(report.early_server_turns, 2, "{report:?}");
    assert!(report.voice_to_voice_ms.unwrap().min > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_the_demo_token_is_used() {
    let mut config = voxwire::Config::for_tests();
    config.jwt_secret = None;
    let server = common::start_with(config, voxwire::engines::Engines::fake()).await;
    let wav = TempWav::utterance("demo");
    let mut opts = options(&server, &["--turns", "1", "--wav", &wav.arg()]);
    opts.secret = None;
    let report = run(opts).await;
    assert!(report.setup.demo_token);
    assert_eq!(report.turns_ok, 1, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_run_reports_memory_per_call() {
    let server = common::start().await;
    let report = run(options(
        &server,
        &["--idle", "--calls", "5", "--hold-secs", "1"],
    ))
    .await;
    assert_eq!(report.calls_started, 5, "{report:?}");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.turns_total, 0);
    if cfg!(target_os = "linux") {
        assert!(report.rss_per_idle_call_kb.is_some(), "{report:?}");
        assert!(report.markdown().contains("RSS per idle call"));
    }
}
