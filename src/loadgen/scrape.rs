//! The server's own CPU time and resident memory, from its `GET /metrics`: sampled before the
//! run, every second during it (keeping the peak), and after it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Url;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::call::Progress;

const CPU: &str = "voxwire_process_cpu_seconds_total";
const RSS: &str = "voxwire_process_resident_memory_bytes";
const EVERY: Duration = Duration::from_secs(1);
/// A progress line every this many samples.
const PROGRESS_EVERY: u32 = 5;

/// The HTTP origin of a `ws://` or `wss://` URL.
pub fn http_base(ws_url: &str) -> Result<Url, String> {
    let mut url = Url::parse(ws_url).map_err(|e| format!("--url {ws_url}: {e}"))?;
    let scheme = match url.scheme() {
        "ws" | "http" => "http",
        "wss" | "https" => "https",
        other => return Err(format!("--url {ws_url}: scheme `{other}` is not ws or wss")),
    };
    url.set_scheme(scheme)
        .map_err(|()| format!("--url {ws_url}: cannot derive the HTTP address"))?;
    url.set_path("/");
    url.set_query(None);
    Ok(url)
}

/// One reading of the server.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub cpu_secs: Option<f64>,
    pub rss_bytes: Option<f64>,
}

/// The two figures from a Prometheus text body.
pub fn parse(text: &str, at: Instant) -> Sample {
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    };
    Sample {
        at,
        cpu_secs: value(CPU),
        rss_bytes: value(RSS),
    }
}

/// What the report says about the server process.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerUsage {
    /// CPU time over wall time during the run; 100 is one core busy.
    pub cpu_percent: Option<f64>,
    pub rss_start_bytes: Option<u64>,
    pub rss_peak_bytes: Option<u64>,
    pub rss_end_bytes: Option<u64>,
}

#[derive(Default)]
struct Readings {
    first: Option<Sample>,
    last: Option<Sample>,
    peak_rss: Option<f64>,
}

impl Readings {
    fn add(&mut self, s: Sample) {
        if self.first.is_none() {
            self.first = Some(s);
        }
        self.last = Some(s);
        if let Some(rss) = s.rss_bytes {
            self.peak_rss = Some(self.peak_rss.map_or(rss, |p| p.max(rss)));
        }
    }
}

/// Samples the server in the background until [`Monitor::finish`].
pub struct Monitor {
    client: reqwest::Client,
    url: Url,
    readings: Arc<Mutex<Readings>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    /// Takes the first sample now, then one a second (and a progress line now and then).
    pub async fn start(client: reqwest::Client, base: &Url, progress: Arc<Progress>) -> Self {
        let url = base.join("metrics").unwrap_or_else(|_| base.clone());
        let readings = Arc::new(Mutex::new(Readings::default()));
        let first = fetch(&client, &url).await;
        match &first {
            Ok(s) if s.cpu_secs.is_some() && s.rss_bytes.is_some() => {}
            Ok(_) => warn!("{url} has no process figures (not Linux?): no server CPU or memory"),
            Err(e) => warn!("cannot read {url}: {e}: no server CPU or memory"),
        }
        if let Ok(s) = first {
            lock(&readings).add(s);
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(sample_loop(
            client.clone(),
            url.clone(),
            readings.clone(),
            stop.clone(),
            progress,
        ));
        Self {
            client,
            url,
            readings,
            stop,
            task,
        }
    }

    /// A sample now (also counted for the peak).
    pub async fn sample(&self) -> Option<Sample> {
        let s = fetch(&self.client, &self.url).await.ok()?;
        lock(&self.readings).add(s);
        Some(s)
    }

    /// The first sample, if there was one.
    pub fn first(&self) -> Option<Sample> {
        lock(&self.readings).first
    }

    /// Stops sampling, takes the last sample, and sums up.
    pub async fn finish(mut self) -> ServerUsage {
        self.stop.cancel();
        let _ = (&mut self.task).await;
        self.sample().await;
        let r = lock(&self.readings);
        let (Some(first), Some(last)) = (r.first, r.last) else {
            return ServerUsage::default();
        };
        let wall = (last.at - first.at).as_secs_f64();
        let cpu_percent = match (first.cpu_secs, last.cpu_secs) {
            (Some(a), Some(b)) if wall > 0.0 => Some((b - a) / wall * 100.0),
            _ => None,
        };
        ServerUsage {
            cpu_percent,
            rss_start_bytes: first.rss_bytes.map(|v| v as u64),
            rss_peak_bytes: r.peak_rss.map(|v| v as u64),
            rss_end_bytes: last.rss_bytes.map(|v| v as u64),
        }
    }
}

fn lock(m: &Mutex<Readings>) -> std::sync::MutexGuard<'_, Readings> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn fetch(client: &reqwest::Client, url: &Url) -> Result<Sample, String> {
    let response = client
        .get(url.clone())
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| e.to_string())?;
    let text = response.text().await.map_err(|e| e.to_string())?;
    Ok(parse(&text, Instant::now()))
}

async fn sample_loop(
    client: reqwest::Client,
    url: Url,
    readings: Arc<Mutex<Readings>>,
    stop: CancellationToken,
    progress: Arc<Progress>,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut n = 0u32;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Ok(s) = fetch(&client, &url).await {
            lock(&readings).add(s);
        }
        n += 1;
        if n.is_multiple_of(PROGRESS_EVERY) {
            info!(
                connected = progress.connected.load(Ordering::Relaxed),
                turns_done = progress.turns_done.load(Ordering::Relaxed),
                "loadgen running"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_base_follows_the_ws_url() {
        let u = http_base("ws://127.0.0.1:3001/ws").unwrap();
        assert_eq!(
            u.join("metrics").unwrap().as_str(),
            "http://127.0.0.1:3001/metrics"
        );
        let u = http_base("wss://example.test/voice/ws?token=x").unwrap();
        assert_eq!(u.as_str(), "https://example.test/");
        assert!(http_base("ftp://x/ws").is_err());
        assert!(http_base("not a url").is_err());
    }

    #[test]
    fn process_figures_are_read_from_the_text() {
        let text = "# TYPE voxwire_process_cpu_seconds counter\n\
                    voxwire_process_cpu_seconds_total 12.5\n\
                    voxwire_process_resident_memory_bytes 104857600\n\
                    voxwire_process_resident_memory_bytes_other 1\n# EOF\n";
        let s = parse(text, Instant::now());
        assert_eq!(s.cpu_secs, Some(12.5));
        assert_eq!(s.rss_bytes, Some(104_857_600.0));
        assert!(parse("# EOF\n", Instant::now()).cpu_secs.is_none());
    }
}
