//! `--monitors N`: operators watching the run. Each opens the monitor stream
//! (`/api/monitor/events`) before the calls start and reads it until they end; the figures are
//! how late events arrive (receive time minus the event's `at`) and how many were lost to lag.

use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::report::Summary;
use super::LoadgenError;
use crate::call::record::now_ms;

/// What the monitors saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MonitorFigures {
    pub streams: usize,
    /// Numbered events received, all streams together.
    pub events: u64,
    /// `lagged` events, and the events they say were lost.
    pub lagged: u64,
    pub missed: u64,
    /// Receive time minus the event's `at`, in ms (1 ms resolution).
    pub delay_ms: Option<Summary>,
}

#[derive(Default)]
struct Seen {
    events: u64,
    lagged: u64,
    missed: u64,
    delays: Vec<f64>,
}

/// The open monitor streams.
pub struct Watchers {
    tasks: JoinSet<Seen>,
    stop: CancellationToken,
    streams: usize,
}

impl Watchers {
    /// Opens `n` monitor streams with `token` and waits for each one's `live_calls` snapshot.
    pub async fn open(http: &reqwest::Url, token: &str, n: usize) -> Result<Self, LoadgenError> {
        let url = http
            .join("api/monitor/events")
            .map_err(|e| LoadgenError::Options(e.to_string()))?;
        // No overall timeout: the streams last the whole run.
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| LoadgenError::Options(format!("HTTP client: {e}")))?;
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for _ in 0..n {
            let resp = client
                .get(url.clone())
                .bearer_auth(token)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| LoadgenError::Options(format!("monitor stream {url}: {e}")))?;
            let mut events = eventsource_stream::Eventsource::eventsource(resp.bytes_stream());
            match tokio::time::timeout(Duration::from_secs(10), events.next()).await {
                Ok(Some(Ok(_))) => {}
                _ => {
                    return Err(LoadgenError::Options(
                        "the monitor stream sent no `live_calls` snapshot".into(),
                    ))
                }
            }
            let stop = stop.clone();
            tasks.spawn(async move {
                let mut seen = Seen::default();
                loop {
                    let e = tokio::select! {
                        _ = stop.cancelled() => break,
                        e = events.next() => match e {
                            Some(Ok(e)) => e,
                            _ => break,
                        },
                    };
                    let received = now_ms();
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&e.data) else {
                        continue;
                    };
                    if v["type"] == "lagged" {
                        seen.lagged += 1;
                        seen.missed += v["missed"].as_u64().unwrap_or(0);
                    } else if !e.id.is_empty() {
                        seen.events += 1;
                        if let Some(at) = v["at"].as_i64() {
                            seen.delays.push((received - at) as f64);
                        }
                    }
                }
                seen
            });
        }
        Ok(Self {
            tasks,
            stop,
            streams: n,
        })
    }

    /// Closes the streams and sums up what they saw.
    pub async fn finish(mut self) -> MonitorFigures {
        self.stop.cancel();
        let mut all = Seen::default();
        while let Some(Ok(s)) = self.tasks.join_next().await {
            all.events += s.events;
            all.lagged += s.lagged;
            all.missed += s.missed;
            all.delays.extend(s.delays);
        }
        MonitorFigures {
            streams: self.streams,
            events: all.events,
            lagged: all.lagged,
            missed: all.missed,
            delay_ms: Summary::of(&all.delays),
        }
    }
}
