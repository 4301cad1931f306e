//! Fallback chains: several engines of one kind tried in order (`VOXWIRE_LLM=openai,local`).
//! An engine that failed is tried after the healthy ones for a cooldown, so a provider that is
//! down costs its timeout once, not on every turn; it is tried first again after the cooldown
//! or as soon as it answers. The wrappers for each kind are in `{stt,llm,tts}/fallback.rs`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::StreamExt;
use tracing::warn;

use super::EngineError;

/// Failures of chain members since start, by engine name (see `voxwire_engine_failovers_total`).
static FAILOVERS: Mutex<std::collections::BTreeMap<String, u64>> =
    Mutex::new(std::collections::BTreeMap::new());

/// Each chain member that has failed, with how many times, for the metrics.
pub fn failovers() -> Vec<(String, u64)> {
    let map = FAILOVERS.lock().unwrap_or_else(|e| e.into_inner());
    map.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

/// The usage label (see `usage_label` of the engine traits) of the member `health` tries
/// first; `local` for an empty chain.
pub fn lead_label<T: ?Sized>(
    health: &Health,
    members: &[Arc<T>],
    label: impl Fn(&T) -> String,
) -> String {
    health
        .order()
        .first()
        .and_then(|&i| members.get(i))
        .map_or_else(|| "local".into(), |m| label(m))
}

/// How long a failed engine goes to the back of its chain.
pub const COOLDOWN: Duration = Duration::from_secs(30);

/// The order in which a chain's members are tried.
pub struct Health {
    names: Vec<String>,
    /// Per member: failed, and to be tried last, until then.
    benched: Mutex<Vec<Option<Instant>>>,
    cooldown: Duration,
}

impl Health {
    pub fn new(names: Vec<String>, cooldown: Duration) -> Self {
        let n = names.len();
        Self {
            names,
            benched: Mutex::new(vec![None; n]),
            cooldown,
        }
    }

    /// Member indices, healthy ones first, each group in configured order.
    pub fn order(&self) -> Vec<usize> {
        let now = Instant::now();
        let benched = self.benched.lock().unwrap_or_else(|e| e.into_inner());
        let is_benched = |i: usize| benched[i].is_some_and(|t| t > now);
        let mut order: Vec<usize> = (0..benched.len()).filter(|&i| !is_benched(i)).collect();
        order.extend((0..benched.len()).filter(|&i| is_benched(i)));
        order
    }

    /// Member `i` failed with `error`; `next` is the member tried instead, if any.
    pub fn failed(&self, i: usize, error: &EngineError, next: Option<usize>) {
        let mut benched = self.benched.lock().unwrap_or_else(|e| e.into_inner());
        benched[i] = Some(Instant::now() + self.cooldown);
        drop(benched);
        *FAILOVERS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(self.names[i].clone())
            .or_default() += 1;
        match next {
            Some(n) => warn!(
                failed = %self.names[i],
                next = %self.names[n],
                %error,
                "engine failed; falling back"
            ),
            None => warn!(failed = %self.names[i], %error, "engine failed; no fallback left"),
        }
    }

    /// Member `i` answered.
    pub fn succeeded(&self, i: usize) {
        let mut benched = self.benched.lock().unwrap_or_else(|e| e.into_inner());
        benched[i] = None;
    }

    /// The chain's name: its members in configured order.
    pub fn name(&self) -> String {
        self.names.join(" > ")
    }

    /// The error a client sees when every member failed: each member's failure.
    pub fn all_failed(&self, errors: Vec<(usize, EngineError)>) -> EngineError {
        let mut busy = None;
        let mut parts = Vec::new();
        for (i, e) in errors {
            if let EngineError::Busy { .. } = e {
                busy.get_or_insert(e.clone());
            }
            parts.push(match e {
                EngineError::Failed { message, .. } => format!("{}: {message}", self.names[i]),
                other => format!("{}: {other}", self.names[i]),
            });
        }
        if parts.len() == 1 {
            if let Some(b) = busy {
                return b;
            }
        }
        EngineError::Failed {
            engine: self.name(),
            message: parts.join("; "),
            retryable: true,
        }
    }
}

type Items<T> = BoxStream<'static, Result<T, EngineError>>;

/// Opens the members' streams in health order until one yields its first non-empty item, and
/// continues with that stream. A failure after that point is the stream's own error.
pub fn first_that_streams<T: Send + 'static>(
    health: Arc<Health>,
    open: impl Fn(usize) -> Items<T> + Send + 'static,
    is_empty: fn(&T) -> bool,
) -> Items<T> {
    futures::stream::once(async move {
        let order = health.order();
        let mut errors = Vec::new();
        for (k, &i) in order.iter().enumerate() {
            let mut s = open(i);
            let error = loop {
                match s.next().await {
                    None => {
                        health.succeeded(i);
                        return futures::stream::empty().boxed();
                    }
                    Some(Ok(item)) if is_empty(&item) => continue,
                    Some(Ok(item)) => {
                        health.succeeded(i);
                        return futures::stream::once(async move { Ok(item) })
                            .chain(s)
                            .boxed();
                    }
                    Some(Err(e)) => break e,
                }
            };
            if error == EngineError::Cancelled {
                return futures::stream::once(async { Err(EngineError::Cancelled) }).boxed();
            }
            health.failed(i, &error, order.get(k + 1).copied());
            errors.push((i, error));
        }
        let e = health.all_failed(errors);
        futures::stream::once(async move { Err(e) }).boxed()
    })
    .flatten()
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_members_go_last_until_the_cooldown_ends() {
        let h = Health::new(vec!["a".into(), "b".into(), "c".into()], COOLDOWN);
        assert_eq!(h.order(), vec![0, 1, 2]);
        h.failed(0, &EngineError::failed("a", "down"), Some(1));
        assert_eq!(h.order(), vec![1, 2, 0]);
        h.succeeded(0);
        assert_eq!(h.order(), vec![0, 1, 2]);
        let quick = Health::new(vec!["a".into(), "b".into()], Duration::ZERO);
        quick.failed(0, &EngineError::failed("a", "down"), Some(1));
        assert_eq!(quick.order(), vec![0, 1]);
    }

    #[test]
    fn the_final_error_names_every_member() {
        let h = Health::new(vec!["openai".into(), "local".into()], COOLDOWN);
        let e = h.all_failed(vec![
            (0, EngineError::failed("x", "500 Internal Server Error")),
            (1, EngineError::failed("y", "model missing")),
        ]);
        let text = e.to_string();
        assert!(text.contains("openai: 500"), "{text}");
        assert!(text.contains("local: model missing"), "{text}");
    }
}
