//! What every hosted engine shares: the API key (never printed), one HTTP client per provider,
//! requests with a response timeout and bounded retries with backoff, provider errors turned
//! into [`EngineError`]s with the key taken out, and streamed bodies with a stall timeout.
//!
//! Retries: a request is sent again after a connection error, a timeout, `408`, `429` or a
//! `5xx`, at most `retries` more times, waiting `backoff` × 2ⁿ (plus jitter) or the provider's
//! `Retry-After` when it says so. A `Retry-After` longer than `max_retry_wait` is not waited
//! for: the engine fails at once so a fallback can answer instead. Every request these engines
//! make is a pure computation (transcribe, generate, synthesize), so sending it again before
//! any of its response was used is safe. A stream that breaks after it started is never
//! retried: part of it was already used.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use reqwest::{RequestBuilder, Response, StatusCode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::EngineError;

/// A provider's API key. Its `Debug` form is redacted and it has no `Display`.
#[derive(Clone)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    pub fn new(key: &str) -> Self {
        Self(key.trim().into())
    }

    /// The key itself, for the one header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the key replaced.
    pub fn scrub(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_string();
        }
        text.replace(&*self.0, "<redacted>")
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Timeouts and retries of one provider.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// To connect and get the response headers (or a socket's first reply).
    pub timeout: Duration,
    /// Longest gap between two pieces of a streamed response.
    pub stream_timeout: Duration,
    /// Extra attempts after the first.
    pub retries: u32,
    /// First wait before a retry; doubled each time.
    pub backoff: Duration,
    /// Longest `Retry-After` worth waiting for.
    pub max_retry_wait: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            stream_timeout: Duration::from_secs(10),
            retries: 2,
            backoff: Duration::from_millis(250),
            max_retry_wait: Duration::from_secs(5),
        }
    }
}

impl Policy {
    /// Wait before attempt `attempt + 1`: exponential, with up to 25% jitter.
    pub fn backoff_for(&self, attempt: u32) -> Duration {
        let base = self.backoff.saturating_mul(1 << attempt.min(10));
        let jitter = rand::random::<f64>() * 0.25;
        base.mul_f64(1.0 + jitter)
    }
}

/// One hosted engine's connection to its provider.
#[derive(Clone)]
pub struct HttpApi {
    /// Names the engine in errors, e.g. `openai language model`.
    engine: String,
    client: reqwest::Client,
    key: Option<ApiKey>,
    pub policy: Policy,
}

impl HttpApi {
    pub fn new(
        engine: impl Into<String>,
        key: Option<ApiKey>,
        policy: Policy,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(policy.timeout)
            .user_agent(concat!("voxwire/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            engine: engine.into(),
            client,
            key,
            policy,
        })
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn key(&self) -> Option<&ApiKey> {
        self.key.as_ref()
    }

    pub fn engine(&self) -> &str {
        &self.engine
    }

    /// An engine failure with the key scrubbed from the message.
    pub fn fail(&self, message: impl AsRef<str>, retryable: bool) -> EngineError {
        let message = match &self.key {
            Some(k) => k.scrub(message.as_ref()),
            None => message.as_ref().to_string(),
        };
        EngineError::Failed {
            engine: self.engine.clone(),
            message,
            retryable,
        }
    }

    /// Sends the request `build` makes until it gets a success status, retrying as the module
    /// says. Stops at once, with [`EngineError::Cancelled`], when `cancel` fires.
    pub async fn send(
        &self,
        build: impl Fn() -> RequestBuilder,
        cancel: &CancellationToken,
    ) -> Result<Response, EngineError> {
        let mut attempt = 0;
        loop {
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return Err(EngineError::Cancelled),
                r = tokio::time::timeout(self.policy.timeout, build().send()) => r,
            };
            let (error, wait) = match outcome {
                Ok(Ok(resp)) if resp.status().is_success() => return Ok(resp),
                Ok(Ok(resp)) => self.status_error(resp).await,
                Ok(Err(e)) => (self.fail(describe(&e), true), None),
                Err(_) => (
                    self.fail(
                        format!("no response within {} ms", self.policy.timeout.as_millis()),
                        true,
                    ),
                    None,
                ),
            };
            let retryable = matches!(
                error,
                EngineError::Failed {
                    retryable: true,
                    ..
                }
            );
            if !retryable || attempt >= self.policy.retries {
                return Err(error);
            }
            let wait = wait.unwrap_or_else(|| self.policy.backoff_for(attempt));
            if wait > self.policy.max_retry_wait {
                return Err(self.fail(
                    format!(
                        "{error_text}; the provider asks to wait {} ms, longer than the {} ms allowed",
                        wait.as_millis(),
                        self.policy.max_retry_wait.as_millis(),
                        error_text = failure_text(&error),
                    ),
                    true,
                ));
            }
            attempt += 1;
            warn!(
                engine = %self.engine,
                attempt,
                wait_ms = wait.as_millis() as u64,
                error = %failure_text(&error),
                "provider request failed; retrying"
            );
            tokio::select! {
                _ = cancel.cancelled() => return Err(EngineError::Cancelled),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// `request` with the key as a bearer token (`Authorization: Bearer`), when there is one.
    pub fn bearer(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.key {
            Some(k) => request.bearer_auth(k.expose()),
            None => request,
        }
    }

    /// Sends the request `build` makes (retried like [`HttpApi::send`]) and streams its
    /// 16-bit PCM body as samples (see [`pcm16_samples`]).
    pub fn pcm_stream(
        &self,
        build: impl Fn() -> RequestBuilder + Send + 'static,
        cancel: CancellationToken,
    ) -> BoxStream<'static, Result<Vec<f32>, EngineError>> {
        let api = self.clone();
        futures::stream::once(async move {
            match api.send(build, &cancel).await {
                Ok(resp) => pcm16_samples(api.body(resp, cancel)),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            }
        })
        .flatten()
        .boxed()
    }

    /// Turns an error status into an engine error, and the wait the provider asked for.
    async fn status_error(&self, resp: Response) -> (EngineError, Option<Duration>) {
        let status = resp.status();
        let retry_after = retry_after(&resp);
        let body = read_capped(resp, 4096).await;
        debug!(engine = %self.engine, %status, "provider error status");
        let message = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => format!(
                "{status}: the provider rejected the API key (check the key's environment variable)"
            ),
            _ => match provider_message(&body) {
                Some(m) => format!("{status}: {m}"),
                None => status.to_string(),
            },
        };
        let retryable = status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status.is_server_error();
        (self.fail(message, retryable), retry_after)
    }

    /// The response body as a stream of chunks, each of which must come within the stream
    /// timeout; ends early (and closes the connection) when `cancel` fires.
    pub fn body(
        &self,
        resp: Response,
        cancel: CancellationToken,
    ) -> BoxStream<'static, Result<bytes::Bytes, EngineError>> {
        let api = self.clone();
        let stall = self.policy.stream_timeout;
        // The state is `None` once the stream ended: the response (and its connection) is
        // dropped at that moment, not when the consumer lets go of the stream.
        futures::stream::unfold(Some(resp.bytes_stream()), move |chunks| {
            let api = api.clone();
            let cancel = cancel.clone();
            async move {
                let mut chunks = chunks?;
                let next = tokio::select! {
                    _ = cancel.cancelled() => return Some((Err(EngineError::Cancelled), None)),
                    n = tokio::time::timeout(stall, chunks.next()) => n,
                };
                let error = match next {
                    Ok(None) => return None,
                    Ok(Some(Ok(b))) => return Some((Ok(b), Some(chunks))),
                    Ok(Some(Err(e))) => {
                        api.fail(format!("the response broke off: {}", describe(&e)), true)
                    }
                    Err(_) => api.fail(
                        format!("the response stalled: nothing for {} ms", stall.as_millis()),
                        true,
                    ),
                };
                Some((Err(error), None))
            }
        })
        .boxed()
    }
}

/// Runs `producer` on its own task and streams what it sends. Dropping the stream aborts the
/// task, which drops whatever provider connection it holds.
pub fn spawn_stream<T, F>(
    capacity: usize,
    producer: impl FnOnce(mpsc::Sender<T>) -> F,
) -> BoxStream<'static, T>
where
    T: Send + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let task = AbortOnDrop(tokio::spawn(producer(tx)));
    futures::stream::unfold((rx, task), |(mut rx, task)| async move {
        rx.recv().await.map(|v| (v, (rx, task)))
    })
    .boxed()
}

/// Fewest samples handed on at once from a PCM stream (except its last piece): network chunks
/// can be tiny, and each piece becomes a frame to the client.
const MIN_PCM_PIECE: usize = 1024;

/// Turns a stream of little-endian 16-bit PCM bytes into samples, in pieces of at least
/// [`MIN_PCM_PIECE`], carrying a sample split across two chunks over to the next.
pub fn pcm16_samples(
    bytes: BoxStream<'static, Result<bytes::Bytes, EngineError>>,
) -> BoxStream<'static, Result<Vec<f32>, EngineError>> {
    struct State {
        bytes: Option<BoxStream<'static, Result<bytes::Bytes, EngineError>>>,
        carry: Option<u8>,
        /// An error to report after the samples read before it.
        error: Option<EngineError>,
    }
    let start = State {
        bytes: Some(bytes),
        carry: None,
        error: None,
    };
    futures::stream::unfold(start, |mut st| async move {
        if let Some(e) = st.error.take() {
            return Some((Err(e), st));
        }
        let bytes = st.bytes.as_mut()?;
        let mut samples = Vec::new();
        while samples.len() < MIN_PCM_PIECE {
            let chunk = match bytes.next().await {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    st.bytes = None;
                    if samples.is_empty() {
                        return Some((Err(e), st));
                    }
                    st.error = Some(e);
                    break;
                }
                None => {
                    st.bytes = None;
                    break;
                }
            };
            let mut rest: &[u8] = &chunk;
            if let (Some(lo), Some(&hi)) = (st.carry, rest.first()) {
                samples.push(f32::from(i16::from_le_bytes([lo, hi])) / 32768.0);
                rest = &rest[1..];
                st.carry = None;
            }
            let mut pairs = rest.chunks_exact(2);
            samples.extend(
                pairs
                    .by_ref()
                    .map(|p| f32::from(i16::from_le_bytes([p[0], p[1]])) / 32768.0),
            );
            if let [odd] = pairs.remainder() {
                st.carry = Some(*odd);
            }
        }
        if samples.is_empty() {
            return None;
        }
        Some((Ok(samples), st))
    })
    .boxed()
}

fn failure_text(e: &EngineError) -> String {
    match e {
        EngineError::Failed { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// A transport error in words, without the request URL's query (which could hold a key).
pub fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "bad response body"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    match (e.url(), detail.is_empty()) {
        (Some(u), false) => format!(
            "{what} ({}{}): {detail}",
            u.origin().ascii_serialization(),
            u.path()
        ),
        (Some(u), true) => format!("{what} ({}{})", u.origin().ascii_serialization(), u.path()),
        (None, false) => format!("{what}: {detail}"),
        (None, true) => what.to_string(),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by these providers).
fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp.headers().get(reqwest::header::RETRY_AFTER)?;
    let secs: f64 = v.to_str().ok()?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// At most `cap` bytes of a body, as text.
async fn read_capped(mut resp: Response, cap: usize) -> String {
    let mut out = Vec::new();
    while out.len() < cap {
        match tokio::time::timeout(Duration::from_secs(2), resp.chunk()).await {
            Ok(Ok(Some(c))) => out.extend_from_slice(&c[..c.len().min(cap - out.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The human message in a provider's error body: OpenAI `{"error":{"message"}}`, ElevenLabs
/// `{"detail":{"message"}}` or `{"detail":"..."}`, Deepgram `{"err_msg"}`, else the text.
pub fn provider_message(body: &str) -> Option<String> {
    let body = body.trim();
    if body.is_empty() {
        return None;
    }
    let text = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => [
            v.pointer("/error/message"),
            v.pointer("/detail/message"),
            v.pointer("/detail"),
            v.pointer("/err_msg"),
            v.pointer("/message"),
            v.pointer("/error"),
        ]
        .into_iter()
        .flatten()
        .find_map(|m| m.as_str().map(str::to_string))
        .unwrap_or_else(|| body.to_string()),
        Err(_) => body.to_string(),
    };
    let mut text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.len() > 300 {
        let mut cut = 300;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_never_printed() {
        let k = ApiKey::new("sk-test-0123456789");
        assert_eq!(format!("{k:?}"), "ApiKey(<redacted>)");
        assert_eq!(
            k.scrub("Incorrect API key provided: sk-test-0123456789."),
            "Incorrect API key provided: <redacted>."
        );
    }

    #[test]
    fn provider_messages_are_found() {
        assert_eq!(
            provider_message(r#"{"error":{"message":"Rate limit reached","type":"x"}}"#).as_deref(),
            Some("Rate limit reached")
        );
        assert_eq!(
            provider_message(r#"{"detail":{"status":"voice_not_found","message":"no voice"}}"#)
                .as_deref(),
            Some("no voice")
        );
        assert_eq!(
            provider_message(r#"{"err_code":"INVALID_AUTH","err_msg":"bad creds"}"#).as_deref(),
            Some("bad creds")
        );
        assert_eq!(
            provider_message("  upstream\n down ").as_deref(),
            Some("upstream down")
        );
        assert_eq!(provider_message(""), None);
        let long = "é".repeat(400);
        assert!(provider_message(&long).unwrap().len() <= 304);
    }

    #[tokio::test]
    async fn pcm_split_across_chunks_is_kept_whole() {
        let v: [i16; 3] = [1000, -2000, 32767];
        let raw: Vec<u8> = v.iter().flat_map(|s| s.to_le_bytes()).collect();
        let chunks = vec![
            Ok(bytes::Bytes::copy_from_slice(&raw[..1])),
            Ok(bytes::Bytes::copy_from_slice(&raw[1..5])),
            Ok(bytes::Bytes::copy_from_slice(&raw[5..])),
        ];
        let out: Vec<f32> = pcm16_samples(futures::stream::iter(chunks).boxed())
            .map(|c| c.unwrap())
            .concat()
            .await;
        let back: Vec<i16> = out.iter().map(|s| (s * 32768.0).round() as i16).collect();
        assert_eq!(back, v);
    }

    #[tokio::test]
    async fn tiny_chunks_are_gathered_and_an_error_follows_the_audio_before_it() {
        let tiny: Vec<Result<bytes::Bytes, EngineError>> = (0..3000)
            .map(|_| Ok(bytes::Bytes::from_static(&[1, 0])))
            .chain(std::iter::once(Err(EngineError::failed("x", "cut"))))
            .collect();
        let pieces: Vec<_> = pcm16_samples(futures::stream::iter(tiny).boxed())
            .collect()
            .await;
        let lens: Vec<usize> = pieces
            .iter()
            .filter_map(|p| p.as_ref().ok().map(Vec::len))
            .collect();
        assert_eq!(lens, vec![1024, 1024, 952]);
        assert!(pieces.last().unwrap().is_err());
    }

    #[test]
    fn backoff_doubles_with_jitter() {
        let p = Policy {
            backoff: Duration::from_millis(100),
            ..Policy::default()
        };
        let b0 = p.backoff_for(0).as_millis();
        let b2 = p.backoff_for(2).as_millis();
        assert!((100..=125).contains(&b0), "{b0}");
        assert!((400..=500).contains(&b2), "{b2}");
    }
}
