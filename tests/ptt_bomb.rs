//! A decompression bomb on push-to-talk: a small FLAC holding an hour of silence must be refused
//! at the turn-audio limit without decoding the hour. Alone in its test binary so that the
//! process's peak memory is this test's.

mod common;

use common::*;
use serde_json::Value;

/// Peak resident memory of this process (VmHWM), in KiB.
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn an_hour_of_flac_is_refused_at_the_limit_with_bounded_memory() {
    let dir = std::env::temp_dir().join(format!("voxwire-bomb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hour.flac");
    let made = std::process::Command::new("sox")
        .args(["-D", "-n", "-r", "48000", "-c", "1", "-b", "16"])
        .arg(&path)
        .args(["trim", "0", "3600"])
        .status()
        .expect("sox is installed by scripts/setup");
    assert!(made.success());
    let flac = std::fs::read(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(flac.len() < 2 << 20, "{} bytes", flac.len());

    // The decoder alone stops at the limit.
    let before = peak_kib();
    let e = voxwire::audio::decode::decode_file(&flac, Some("audio/flac"), 60_000).unwrap_err();
    assert!(
        matches!(
            e,
            voxwire::audio::AudioError::TooLong { max_ms: 60_000, .. }
        ),
        "{e}"
    );

    // And over HTTP: 413 `turn_audio_limit`.
    let server = start().await;
    let r = reqwest::Client::new()
        .post(server.url("/api/voice/turn"))
        .bearer_auth(server.token("alice"))
        .header("content-type", "audio/flac")
        .body(flac)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "turn_audio_limit", "{body}");
    // Decoding the whole hour took 650 MB more; a minute of 48 kHz samples is 11.5 MB.
    let grown_mib = peak_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 150, "peak memory grew by {grown_mib} MiB");
    println!("peak memory grew by {grown_mib} MiB");
}
