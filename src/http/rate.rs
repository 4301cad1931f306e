//! Rate limits on the HTTP API (`/api/...`): requests per minute per client address and per
//! token subject (`org` and `sub` of a token that verifies), each with a burst of a minute's
//! worth. Past either, 429 `rate_limited` with `Retry-After` (seconds). WebSocket upgrades,
//! the frames of a call, `/health`, `/metrics` and the demo page are not limited.
//! Keys unused for a while are forgotten, so the tables stay bounded.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use super::api::TokenQuery;
use super::error::AppError;
use crate::auth::token_from_request;
use crate::protocol::ErrorCode;
use crate::server::AppState;

/// How often keys that are back to a full burst are forgotten.
const FORGET_EVERY: Duration = Duration::from_secs(60);
/// Keys held before they are forgotten at once rather than on the minute.
const MAX_KEYS: usize = 100_000;

/// The API's rate limiters.
pub struct RateLimits {
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_subject: Option<DefaultKeyedRateLimiter<String>>,
    last_forget: Mutex<Instant>,
}

fn limiter<K>(per_minute: u32) -> Option<DefaultKeyedRateLimiter<K>>
where
    K: std::hash::Hash + Eq + Clone,
{
    NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n)))
}

impl RateLimits {
    /// `0` turns a limit off.
    pub fn new(per_ip_per_minute: u32, per_subject_per_minute: u32) -> Arc<Self> {
        Arc::new(Self {
            per_ip: limiter(per_ip_per_minute),
            per_subject: limiter(per_subject_per_minute),
            last_forget: Mutex::new(Instant::now()),
        })
    }

    /// Counts one request; `Err` with how long to wait when over a limit.
    pub fn check(&self, ip: Option<IpAddr>, subject: Option<&str>) -> Result<(), Duration> {
        self.forget_idle();
        if let (Some(l), Some(ip)) = (&self.per_ip, ip) {
            l.check_key(&ip)
                .map_err(|until| until.wait_time_from(l.clock().now()))?;
        }
        if let (Some(l), Some(sub)) = (&self.per_subject, subject) {
            l.check_key(&sub.to_string())
                .map_err(|until| until.wait_time_from(l.clock().now()))?;
        }
        Ok(())
    }

    fn forget_idle(&self) {
        let crowded = self.per_ip.as_ref().is_some_and(|l| l.len() > MAX_KEYS)
            || self
                .per_subject
                .as_ref()
                .is_some_and(|l| l.len() > MAX_KEYS);
        {
            let mut last = self.last_forget.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() < FORGET_EVERY && !crowded {
                return;
            }
            *last = Instant::now();
        }
        if let Some(l) = &self.per_ip {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.per_subject {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// The 429 answer: `Retry-After` in whole seconds, at least 1.
fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs = secs.max(1);
    let mut resp = AppError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RateLimited,
        format!("too many requests; try again in {secs} s"),
    )
    .with("retry_after", serde_json::json!(secs))
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, v);
    }
    resp
}

/// What a request's token is counted under besides its address: an API key by its id (whether
/// it is valid is the route's to check; the map of keys stays bounded either way), a token that
/// verifies by its org and subject. Anything else is limited by address alone.
fn subject_of(state: &AppState, token: &str) -> Option<String> {
    if let Some(key) = crate::keys::parse(token) {
        return Some(format!("key\u{0}{}", key.id));
    }
    let claims = state.auth.verify(token).ok()?;
    Some(format!(
        "{}\u{0}{}",
        claims.org.unwrap_or_default(),
        claims.sub
    ))
}

/// The middleware: limits `/api/...` requests by address and by API key or token subject.
pub async fn limit(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/api/") {
        return next.run(req).await;
    }
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let query = Query::<TokenQuery>::try_from_uri(req.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    let subject = token_from_request(req.headers(), query.token.as_deref())
        .and_then(|t| subject_of(&state, t));
    match state.rate.check(ip, subject.as_deref()) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            state.metrics.error(ErrorCode::RateLimited);
            too_many(wait)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_per_key_and_say_how_long_to_wait() {
        let limits = RateLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(limits.check(Some(a), None).is_ok());
        }
        let wait = limits.check(Some(a), None).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(limits.check(Some(b), Some("x")).is_ok());
        assert!(limits.check(Some(b), Some("x")).is_ok());
        assert!(limits.check(Some(b), Some("x")).is_err());
        // Address b has had its 3; subject y is counted apart from x.
        assert!(limits.check(Some(b), Some("y")).is_err());
        assert!(limits.check(None, Some("y")).is_ok());
        let off = RateLimits::new(0, 0);
        for _ in 0..100 {
            assert!(off.check(Some(a), Some("x")).is_ok());
        }
        let resp = too_many(Duration::from_millis(1_200));
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()["retry-after"], "2");
    }
}
