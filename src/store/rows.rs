//! What the store keeps: a row type per table, the writes that change them, and the query for
//! listing calls. Plain data, the same for every backend.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One call. Its owner is `(sub, org)`: only the same subject of the same organisation (or of
/// none, when `org` is `None`) may list or read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct CallRow {
    pub id: String,
    pub org: Option<String>,
    pub sub: String,
    pub agent: String,
    #[sqlx(json)]
    pub variables: BTreeMap<String, String>,
    pub system_prompt: Option<String>,
    /// Unix time in milliseconds.
    pub started_at_ms: i64,
    /// Set by [`Write::CallEnded`], cleared again when the call is resumed.
    pub ended_at_ms: Option<i64>,
    pub end_reason: Option<String>,
    pub turns: i64,
    pub caller_audio_ms: i64,
    pub agent_audio_ms: i64,
}

/// One message of a call's conversation, numbered by `item_id` within the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ItemRow {
    pub call_id: String,
    pub item_id: i64,
    pub turn_id: Option<i64>,
    /// `"user"` or `"assistant"`.
    pub role: String,
    /// What was said (a transcript) or generated (a reply), in full.
    pub text: String,
    /// For an interrupted reply: the part the caller heard before it stopped.
    pub heard: Option<String>,
    /// `"voice"`, `"text"`, `"greeting"` or `"push_to_talk"`.
    pub source: String,
    pub created_at_ms: i64,
}

/// A turn's latency figures, as the JSON the call reports them in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct TurnMetricsRow {
    pub call_id: String,
    pub turn_id: i64,
    #[sqlx(json)]
    pub metrics: serde_json::Value,
    pub at_ms: i64,
}

/// What a call was about, made by the agent's language model when the call ends (again when a
/// resumed call ends). Masked like the call's items when the agent redacts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct SummaryRow {
    pub call_id: String,
    pub org: Option<String>,
    pub sub: String,
    pub agent: String,
    /// A few sentences (hosted models) or the caller's request in their own words (the local
    /// model).
    pub text: String,
    /// The agent's `summary_fields`, each a value or `null`; `{}` when it has none.
    #[sqlx(json)]
    pub fields: serde_json::Value,
    /// How it was made: `json` (a hosted model's JSON answer), `model` (the local model's
    /// sentence, drawn from the call) or `extract` (the caller's own words, when the model's
    /// sentence was not drawn from the call or the model failed).
    pub method: String,
    /// The language model that made it (`none` for `extract` without one).
    pub engine: String,
    pub at_ms: i64,
}

/// One event of a call's log, numbered 1, 2, 3... per call by `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct EventRow {
    pub call_id: String,
    pub seq: i64,
    pub at_ms: i64,
    pub kind: String,
    #[sqlx(json)]
    pub data: serde_json::Value,
    /// The event's id on the monitor stream, which orders the events of every call of a node
    /// (increasing, unique per node); `None` for events the monitor does not show.
    #[serde(default)]
    pub stream_id: Option<i64>,
}

/// A monitor-stream event read back from the log, with the owner and agent of its call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct StreamEventRow {
    pub call_id: String,
    pub seq: i64,
    pub at_ms: i64,
    pub kind: String,
    #[sqlx(json)]
    pub data: serde_json::Value,
    pub stream_id: i64,
    pub org: Option<String>,
    pub sub: String,
    pub agent: String,
}

/// The monitor-stream events of one org after a stream id, in stream order, with optional
/// filters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamQuery {
    /// Only events with a larger stream id.
    pub after: i64,
    /// The org (`None`: the default org, calls stored without one).
    pub org: Option<String>,
    pub call_id: Option<String>,
    pub agent: Option<String>,
    pub sub: Option<String>,
    /// Events per page, 1..=1000 (values outside are clamped).
    pub limit: u32,
}

impl StreamQuery {
    pub const MAX_LIMIT: u32 = 1000;

    pub(crate) fn clamped_limit(&self) -> i64 {
        i64::from(self.limit.clamp(1, Self::MAX_LIMIT))
    }
}

/// A page of calls, newest first, narrowed by filters that all apply together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Calls per page, 1..=100 (values outside are clamped).
    pub limit: u32,
    /// Only calls that started strictly before this (unix ms): the `started_at_ms` of the last
    /// call of the previous page.
    pub before_ms: Option<i64>,
    /// Only calls of this agent.
    pub agent: Option<String>,
    /// Only calls that started at or after this (unix ms).
    pub from_ms: Option<i64>,
    /// Only calls that started strictly before this (unix ms).
    pub to_ms: Option<i64>,
    /// Only calls with an item whose text holds this, ASCII letters matched without regard
    /// to case (other characters exactly); `%` and `_` are plain characters here.
    pub text: Option<String>,
}

impl ListQuery {
    pub const MAX_LIMIT: u32 = 100;
    /// The most calls an export holds.
    pub const EXPORT_MAX: u32 = 10_000;

    pub(crate) fn clamped_limit(&self) -> i64 {
        i64::from(self.limit.clamp(1, Self::MAX_LIMIT))
    }

    /// The `LIKE` pattern for [`Self::text`]: lower-cased ASCII letters, `\`, `%` and `_`
    /// escaped with `\` (the statements say `ESCAPE '\'`), between two `%`.
    pub(crate) fn text_pattern(&self) -> Option<String> {
        let text = self.text.as_deref()?;
        let mut p = String::with_capacity(text.len() + 2);
        p.push('%');
        for c in text.chars() {
            if matches!(c, '\\' | '%' | '_') {
                p.push('\\');
            }
            p.push(c.to_ascii_lowercase());
        }
        p.push('%');
        Some(p)
    }

    /// Whether `text` matches [`Self::text`] (no text filter: every text does), as the
    /// statements decide it: a substring, ASCII letters without regard to case.
    pub(crate) fn text_matches(&self, text: &str) -> bool {
        self.text
            .as_deref()
            .is_none_or(|t| text.to_ascii_lowercase().contains(&t.to_ascii_lowercase()))
    }

    /// Whether a call that started at `started_at_ms` is in the time range and before the
    /// page's end.
    pub(crate) fn in_range(&self, started_at_ms: i64) -> bool {
        self.before_ms.is_none_or(|b| started_at_ms < b)
            && self.from_ms.is_none_or(|f| started_at_ms >= f)
            && self.to_ms.is_none_or(|t| started_at_ms < t)
    }
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            limit: 20,
            before_ms: None,
            agent: None,
            from_ms: None,
            to_ms: None,
            text: None,
        }
    }
}

/// What the figures of an org over a time range are computed from: every call that started
/// in `[from_ms, to_ms)`, with their turns and replies.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatsRows {
    /// Calls started in the range.
    pub calls: i64,
    /// `ended_at_ms - started_at_ms` of the finished ones, newest first, at most
    /// [`StatsRows::MAX_VALUES`].
    pub durations_ms: Vec<i64>,
    /// The turns' `voice_to_voice_ms`, of the newest calls first, at most
    /// [`StatsRows::MAX_VALUES`].
    pub voice_to_voice_ms: Vec<f64>,
    /// The agent's replies (assistant items that are not an operator's line).
    pub replies: i64,
    /// Those the caller did not hear in full (they carry `heard`).
    pub replies_interrupted: i64,
}

impl StatsRows {
    /// The most values a median is computed over.
    pub const MAX_VALUES: u32 = 100_000;
}

/// One change to the store. Every write is idempotent: applying a batch twice leaves the same
/// rows as applying it once, so a batch whose outcome is unknown can simply be sent again.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Inserts the call; for an id already stored (a resumed call) replaces its agent,
    /// variables and system prompt and clears its end. Owner, start time and totals are kept.
    CallStarted(CallRow),
    /// Inserts or replaces the item `(call_id, item_id)`. A `heard` of `None` keeps the stored
    /// one, and the first `created_at_ms` is kept.
    Item(ItemRow),
    /// Records what the caller heard of an interrupted reply.
    ItemHeard {
        call_id: String,
        item_id: i64,
        heard: String,
    },
    /// Inserts or replaces the metrics of `(call_id, turn_id)`.
    TurnMetrics(TurnMetricsRow),
    /// Inserts the event; one already stored with the same `(call_id, seq)` is kept as it is.
    Event(EventRow),
    /// Ends the call with its totals.
    CallEnded {
        call_id: String,
        ended_at_ms: i64,
        reason: String,
        turns: i64,
        caller_audio_ms: i64,
        agent_audio_ms: i64,
    },
    /// Inserts or replaces the call's summary; nothing when the call is not (or no longer)
    /// stored, so a summary finished after an erasure leaves nothing behind.
    Summary(SummaryRow),
    /// Raises a call stretch's running total of one metric on one day (never lowers it).
    Usage(super::usage::UsageRow),
}

impl Write {
    /// The call this write belongs to.
    pub fn call_id(&self) -> &str {
        match self {
            Write::CallStarted(c) => &c.id,
            Write::Item(i) => &i.call_id,
            Write::Summary(r) => &r.call_id,
            Write::Usage(r) => &r.call_id,
            Write::ItemHeard { call_id, .. }
            | Write::CallEnded { call_id, .. }
            | Write::TurnMetrics(TurnMetricsRow { call_id, .. })
            | Write::Event(EventRow { call_id, .. }) => call_id,
        }
    }

    /// The variant's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Write::CallStarted(_) => "call_started",
            Write::Item(_) => "item",
            Write::ItemHeard { .. } => "item_heard",
            Write::TurnMetrics(_) => "turn_metrics",
            Write::Event(_) => "event",
            Write::CallEnded { .. } => "call_ended",
            Write::Summary(_) => "summary",
            Write::Usage(_) => "usage",
        }
    }
}
