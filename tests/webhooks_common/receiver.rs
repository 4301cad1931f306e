//! A webhook receiver on a loopback port, as `protocol.md` tells receivers to write one: it
//! verifies `Voxwire-Signature` (HMAC-SHA256 of "<t>.<body>", compared in constant time, `t`
//! within 5 minutes) and refuses nothing it has seen before, acknowledging a delivery id it
//! already has without acting on it again. It records every request.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Got {
    pub id: String,
    pub event: String,
    pub signature: String,
    pub content_type: String,
    pub body: Vec<u8>,
    pub verified: Result<(), &'static str>,
    /// Its delivery id was seen (and verified) before.
    pub duplicate: bool,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct Inner {
    secret: Vec<u8>,
    /// 0: answer 200 to what verifies and 400 to the rest; else this status to everything.
    answer: AtomicU16,
    /// How long to wait before answering, in ms.
    delay_ms: AtomicU64,
    got: Mutex<Vec<Got>>,
    seen: Mutex<HashSet<String>>,
}

pub struct Receiver {
    port: u16,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn url_on(port: u16) -> String {
    format!("http://127.0.0.1:{port}/hooks/voxwire")
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// The documented check: `t` within 300 s of now, and some `v1` equal, in constant time, to
/// the HMAC-SHA256 of "<t>.<body>" with the secret.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64) -> Result<(), &'static str> {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1.push(v),
            _ => {}
        }
    }
    let t = t.ok_or("no timestamp")?;
    if (now - t).abs() > 300 {
        return Err("timestamp outside the tolerance");
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let matches = v1
        .iter()
        .filter_map(|s| unhex(s))
        .any(|sig| mac.clone().verify_slice(&sig).is_ok());
    if matches {
        Ok(())
    } else {
        Err("no signature matches")
    }
}

async fn hook(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let got = Got {
        id: header("voxwire-delivery-id"),
        event: header("voxwire-event"),
        signature: header("voxwire-signature"),
        content_type: header("content-type"),
        verified: verify(&inner.secret, &header("voxwire-signature"), &body, now()),
        body: body.to_vec(),
        duplicate: false,
    };
    let ok = got.verified.is_ok();
    let duplicate = ok && !inner.seen.lock().unwrap().insert(got.id.clone());
    inner.got.lock().unwrap().push(Got { duplicate, ..got });
    let delay = inner.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    match inner.answer.load(Ordering::SeqCst) {
        0 if ok => StatusCode::OK,
        0 => StatusCode::BAD_REQUEST,
        status => StatusCode::from_u16(status).unwrap(),
    }
}

impl Receiver {
    pub async fn start(secret: &str) -> Receiver {
        Self::start_on(0, secret).await
    }

    /// On `port` (0: a free one).
    pub async fn start_on(port: u16, secret: &str) -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let inner = Arc::new(Inner {
            secret: secret.as_bytes().to_vec(),
            ..Inner::default()
        });
        let app = Router::new()
            .route("/hooks/voxwire", post(hook))
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { port, inner, task }
    }

    pub fn url(&self) -> String {
        url_on(self.port)
    }

    /// Answer every request with `status` (0: by the verification).
    pub fn answer(&self, status: u16) {
        self.inner.answer.store(status, Ordering::SeqCst);
    }

    /// Answer each request after `delay`.
    pub fn delay(&self, delay: Duration) {
        self.inner
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn got(&self) -> Vec<Got> {
        self.inner.got.lock().unwrap().clone()
    }

    /// Waits until `n` requests came.
    pub async fn until(&self, n: usize, within: Duration) -> Vec<Got> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the receiver got {} of {n} requests: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `g` again as it came (or with another body), as someone replaying it would.
    pub async fn replay(&self, g: &Got, body: Option<&[u8]>) -> u16 {
        reqwest::Client::new()
            .post(self.url())
            .header("content-type", "application/json")
            .header("voxwire-signature", &g.signature)
            .header("voxwire-delivery-id", &g.id)
            .header("voxwire-event", &g.event)
            .body(body.unwrap_or(&g.body).to_vec())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
