//! Three voxwire nodes on one Postgres and one Redis behind HAProxy (the cluster of
//! `tests/cluster.rs`), loaded through the proxy by `voxwire loadgen`: how the calls spread
//! over the nodes, client voice-to-voice and server turnaround percentiles, and what each turn
//! costs the shared services: Redis commands (from `INFO commandstats`, the scripts' own calls
//! included) and Postgres transactions and rows written (from `pg_stat_database`). An idle
//! window before the load gives the background rate of three nodes with no call.
//!
//! The engines are the fake ones, which answer at once and cost no CPU, like hosted engines
//! whose latency is left out: the figures are voxwire's own cost and the shared services'.
//!
//! `cargo bench --bench cluster -- [--calls N] [--turns N] [--chunk-ms N]`
//! (default: 60 calls of 3 turns, 100 ms chunks). Needs Debian's `postgresql`,
//! `redis-server` and `haproxy` (`scripts/setup` installs them).

#[path = "../tests/cluster_common/mod.rs"]
mod cluster_common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use cluster_common::{Cluster, Options, SECRET};
use serde_json::Value;
use sqlx::Connection;

/// How long the cluster is watched with no call, for the background rates.
const IDLE: Duration = Duration::from_secs(5);
/// Pause after the load before the counters are read: Postgres publishes its statistics
/// about once a second.
const SETTLE: Duration = Duration::from_millis(2500);

struct Args {
    calls: usize,
    turns: usize,
    chunk_ms: u64,
}

fn args() -> Args {
    let mut a = Args {
        calls: 60,
        turns: 3,
        chunk_ms: 100,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--calls" => a.calls = value() as usize,
            "--turns" => a.turns = value() as usize,
            "--chunk-ms" => a.chunk_ms = value(),
            // `cargo bench` passes `--bench`.
            _ => {}
        }
    }
    a
}

/// One second of a tone then half a second of silence: a caller's utterance for the energy
/// detector the nodes run.
fn utterance_wav(path: &std::path::Path) {
    const RATE: u32 = 16_000;
    let mut pcm: Vec<u8> = Vec::new();
    for i in 0..RATE * 3 / 2 {
        let s = if i < RATE {
            let t = i as f32 / RATE as f32;
            (0.3 * (2.0 * std::f32::consts::PI * 440.0 * t).sin() * 32767.0) as i16
        } else {
            0
        };
        pcm.extend_from_slice(&s.to_le_bytes());
    }
    let mut wav = Vec::with_capacity(44 + pcm.len());
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + pcm.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&RATE.to_le_bytes());
    wav.extend_from_slice(&(RATE * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(pcm.len() as u32).to_le_bytes());
    wav.extend_from_slice(&pcm);
    std::fs::write(path, wav).expect("write the utterance");
}

/// Redis's commands so far, by command (`INFO commandstats`).
async fn redis_commands(url: &str) -> BTreeMap<String, u64> {
    let client = redis::Client::open(url).expect("redis url");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut con)
        .await
        .expect("INFO commandstats");
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// Postgres's committed and rolled-back transactions and rows written in the cluster's
/// database so far.
#[derive(Clone, Copy, Default)]
struct PgStats {
    xacts: i64,
    inserted: i64,
    updated: i64,
    deleted: i64,
}

async fn pg_stats(url: &str) -> PgStats {
    let mut con = sqlx::PgConnection::connect(url)
        .await
        .expect("connect to postgres");
    let row: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT xact_commit + xact_rollback, tup_inserted, tup_updated, tup_deleted \
         FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut con)
    .await
    .expect("read pg_stat_database");
    let _ = con.close().await;
    PgStats {
        xacts: row.0,
        inserted: row.1,
        updated: row.2,
        deleted: row.3,
    }
}

/// A node's connections, turns and CPU seconds so far, from its `/metrics`.
async fn node_counters(base: &str) -> (f64, f64, f64) {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap_or_default();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    (
        value("voxwire_connections_total"),
        value("voxwire_turns_total"),
        value("voxwire_process_cpu_seconds_total"),
    )
}

async fn all_nodes(c: &Cluster) -> Vec<(f64, f64, f64)> {
    let mut out = Vec::new();
    for n in 1..=cluster_common::NODES {
        out.push(node_counters(&c.direct(n)).await);
    }
    out
}

fn diff(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        // The readings themselves.
        .filter(|(k, v)| *v > 0 && k != "info")
        .collect()
}

fn top(commands: &BTreeMap<String, u64>, per: f64) -> String {
    let mut v: Vec<(&String, &u64)> = commands.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1));
    v.iter()
        .take(8)
        .map(|(k, n)| format!("{k} {:.1}", **n as f64 / per))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ms(report: &Value, key: &str) -> String {
    let s = &report[key];
    if s.is_null() {
        return "none".into();
    }
    let f = |k: &str| s[k].as_f64().map_or("?".into(), |v| format!("{v:.0}"));
    format!("{} / {} / {}", f("p50"), f("p95"), f("p99"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!("starting Postgres, Redis, three nodes and HAProxy");
    let c = Cluster::start(Options::default()).await;
    let wav = c.dir.path.join("utterance.wav");
    utterance_wav(&wav);
    let redis_url = c.redis.url();

    // With no call: the background of three nodes.
    let r0 = redis_commands(&redis_url).await;
    let p0 = pg_stats(&c.database_url).await;
    tokio::time::sleep(IDLE).await;
    let r1 = redis_commands(&redis_url).await;
    let p1 = pg_stats(&c.database_url).await;
    let idle_redis = diff(&r1, &r0).values().sum::<u64>() as f64 / IDLE.as_secs_f64();
    let idle_pg = (p1.xacts - p0.xacts) as f64 / IDLE.as_secs_f64();

    let n0 = all_nodes(&c).await;
    let r0 = redis_commands(&redis_url).await;
    let p0 = pg_stats(&c.database_url).await;
    eprintln!(
        "voxwire loadgen: {} calls of {} turns through HAProxy",
        a.calls, a.turns
    );
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_voxwire"))
        .arg("loadgen")
        .args(["--url", &c.lb_ws_url(), "--secret", SECRET, "--json"])
        .args(["--calls", &a.calls.to_string()])
        .args(["--turns", &a.turns.to_string()])
        .args(["--chunk-ms", &a.chunk_ms.to_string()])
        .arg("--wav")
        .arg(&wav)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run voxwire loadgen");
    let wall = started.elapsed();
    assert!(
        out.status.success(),
        "voxwire loadgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("loadgen's JSON report");
    tokio::time::sleep(SETTLE).await;
    let n1 = all_nodes(&c).await;
    let r1 = redis_commands(&redis_url).await;
    let p1 = pg_stats(&c.database_url).await;

    let turns_ok = report["turns_ok"].as_u64().unwrap_or(0);
    let per = turns_ok.max(1) as f64;
    let redis = diff(&r1, &r0);
    let redis_total: u64 = redis.values().sum();
    let secs = wall.as_secs_f64() + SETTLE.as_secs_f64();

    println!("## Cluster benchmark: 3 nodes, HAProxy, Postgres, Redis ({cores} cores)\n");
    println!("| figure | value |\n|---|---|");
    println!(
        "| calls started / requested | {} / {} |",
        report["calls_started"], a.calls
    );
    println!(
        "| turns ok / total | {} / {} |",
        report["turns_ok"], report["turns_total"]
    );
    println!("| errors by code | {} |", report["errors"]);
    println!("| timeouts | {} |", report["timeouts"]);
    println!(
        "| voice to voice p50 / p95 / p99 (ms) | {} |",
        ms(&report, "voice_to_voice_ms")
    );
    println!(
        "| server turnaround p50 / p95 / p99 (ms) | {} |",
        ms(&report, "server_turnaround_ms")
    );
    for (i, (before, after)) in n0.iter().zip(&n1).enumerate() {
        println!(
            "| node{}: calls / turns / CPU | {:.0} / {:.0} / {:.1} s |",
            i + 1,
            after.0 - before.0,
            after.1 - before.1,
            after.2 - before.2
        );
    }
    println!(
        "| Redis commands per turn | {:.1} ({} in all) |",
        redis_total as f64 / per,
        redis_total
    );
    println!(
        "| Redis commands per turn, by command | {} |",
        top(&redis, per)
    );
    println!(
        "| Redis commands per second: idle / under load | {idle_redis:.1} / {:.1} |",
        redis_total as f64 / secs
    );
    println!(
        "| Postgres transactions per turn | {:.1} ({} in all) |",
        (p1.xacts - p0.xacts) as f64 / per,
        p1.xacts - p0.xacts
    );
    println!(
        "| Postgres rows inserted / updated / deleted per turn | {:.1} / {:.1} / {:.1} |",
        (p1.inserted - p0.inserted) as f64 / per,
        (p1.updated - p0.updated) as f64 / per,
        (p1.deleted - p0.deleted) as f64 / per
    );
    println!(
        "| Postgres transactions per second: idle / under load | {idle_pg:.1} / {:.1} |",
        (p1.xacts - p0.xacts) as f64 / secs
    );
    println!("| wall time of the load | {:.1} s |", wall.as_secs_f64());
}
