//! Starting a call: the agent, turn detection and ownership rules, the same for every
//! transport. A started call runs as its own task; the caller of [`start`] gets its handle and
//! the channel of its events.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tracing::{info, info_span, warn, Instrument};

use super::actor::Call;
use super::caller::Caller;
use super::event::CallEvent;
use super::feed::CallMeta;
use super::handle::{CallHandle, LISTEN_BUFFER, SUBSCRIBER_BUFFER};
use super::listen::{energy_scorer, Listener};
use super::record::{Recorder, Totals};
use super::recording::{recording_path, Mixer};
use super::services::CallServices;
use super::store::{Owner, Restored, StoreError};
use super::turn::TurnInput;
use super::usage::{limits_at_start, LimitWatch, Meter};
use crate::audio::vad::SpeechScorer;
use crate::engines::llm::Role;
use crate::flow::FlowState;
use crate::protocol::{DetectionMode, ErrorCode, LimitKind, TurnDetection, TurnDetectionUpdate};

/// Events queued for the call's own transport; past that the call waits for it (its writer
/// gives up on a client that stops reading, which ends the call).
const OWNER_BUFFER: usize = 256;
/// Inputs queued for a call.
const INPUT_BUFFER: usize = 64;

pub struct StartRequest {
    pub owner: Owner,
    /// The agent asked for; else the resumed call's own, else the token's, else the default.
    pub agent: Option<String>,
    pub token_agent: Option<String>,
    /// Continue this call of the same owner.
    pub resume: Option<String>,
    pub variables: HashMap<String, String>,
    pub detection: Option<TurnDetectionUpdate>,
    /// Speak the agent's greeting when a new call starts.
    pub greet: bool,
    /// One push-to-talk turn (recorded as such).
    pub push_to_talk: bool,
    /// `start_call.record`: `Some(false)` keeps the call unrecorded.
    pub record: Option<bool>,
    /// The token's call session (`sid`), if it was minted by `POST /api/sessions`: the call
    /// takes the session's agent and bound variables, and the session is bound to it.
    pub session: Option<String>,
}

/// A started call.
pub struct Started {
    pub handle: CallHandle,
    /// The call's events for its own transport, in order, ending with `Ended`.
    pub events: mpsc::Receiver<CallEvent>,
    pub call_id: String,
    pub agent: String,
    pub resumed: bool,
    pub history_len: usize,
    pub detection: TurnDetection,
    /// The rate of the call's reply audio.
    pub output_rate: u32,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StartError {
    pub code: ErrorCode,
    pub message: String,
    /// `limit_reached`: which limit.
    pub limit: Option<LimitKind>,
}

impl StartError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            limit: None,
        }
    }

    pub fn with_limit(mut self, limit: LimitKind) -> Self {
        self.limit = Some(limit);
        self
    }
}

pub(super) fn refuse(code: ErrorCode, message: impl Into<String>) -> StartError {
    StartError::new(code, message)
}

impl CallServices {
    /// The call's turn detection after `update`, checked against what this server can do.
    pub fn checked_detection(
        &self,
        current: &TurnDetection,
        update: Option<&TurnDetectionUpdate>,
    ) -> Result<TurnDetection, String> {
        let Some(update) = update else {
            return Ok(*current);
        };
        let next = current.apply(update)?;
        if next.mode == DetectionMode::Semantic && self.engines.turn_model.is_none() {
            return Err(
                "turn_detection.mode `semantic` is not available on this server \
                        (VOXWIRE_VAD is not `semantic`); use `silero`, `energy` or `manual`"
                    .into(),
            );
        }
        if next.mode == DetectionMode::Silero && self.engines.vad.is_none() {
            return Err(
                "turn_detection.mode `silero` is not available on this server \
                        (VOXWIRE_VAD=energy); use `energy` or `manual`"
                    .into(),
            );
        }
        Ok(next)
    }

    /// The speech scorer for a mode; `None` in manual mode.
    pub fn scorer(&self, settings: &TurnDetection) -> Option<Box<dyn SpeechScorer>> {
        match settings.mode {
            DetectionMode::Manual => None,
            DetectionMode::Semantic | DetectionMode::Silero => match &self.engines.vad {
                Some(model) => Some(Box::new(model.stream())),
                None => Some(energy_scorer(settings)),
            },
            DetectionMode::Energy => Some(energy_scorer(settings)),
        }
    }

    /// The server's default turn detection.
    pub fn default_detection(&self) -> TurnDetection {
        let mut d = self.turn.detection;
        if self.engines.turn_model.is_none() && d.mode == DetectionMode::Semantic {
            d.mode = DetectionMode::Silero;
        }
        if self.engines.vad.is_none() && d.mode == DetectionMode::Silero {
            d.mode = DetectionMode::Energy;
        }
        d
    }
}

/// Brings a finished call back from the durable store when it is not in memory (after a
/// restart). Not finding it is not an error here: starting it then says `call_not_found`.
async fn restore(svc: &CallServices, id: &str, owner: &Owner) -> Result<(), StartError> {
    if svc.calls.get_owned(id, owner).is_ok() {
        return Ok(());
    }
    let unavailable = |e: crate::store::StoreError| {
        warn!(error = %e, "cannot read a call from the store");
        refuse(
            ErrorCode::StoreUnavailable,
            "the call store is unavailable; try again",
        )
    };
    let Some(row) = svc.store.call(id).await.map_err(unavailable)? else {
        return Ok(());
    };
    if row.sub != owner.sub || row.org != owner.org {
        return Ok(());
    }
    let items = svc.store.items(id).await.map_err(unavailable)?;
    let mut last_seq = 0;
    loop {
        let page = svc
            .store
            .events(id, last_seq, 1000)
            .await
            .map_err(unavailable)?;
        match page.last() {
            Some(e) => last_seq = e.seq,
            None => break,
        }
        if page.len() < 1000 {
            break;
        }
    }
    let next_item = items.iter().map(|i| i.item_id).max().unwrap_or(0) + 1;
    let next_turn = items.iter().filter_map(|i| i.turn_id).max().unwrap_or(0) + 1;
    let messages = items
        .into_iter()
        .map(|i| {
            let role = match i.role.as_str() {
                "user" => Role::User,
                // An operator's context note.
                "system" => Role::System,
                _ => Role::Assistant,
            };
            (i.item_id as u64, role, i.heard.unwrap_or(i.text))
        })
        .collect();
    svc.calls.restore(Restored {
        id: row.id,
        owner: owner.clone(),
        agent: row.agent,
        system: row.system_prompt,
        messages,
        next_turn: next_turn as u64,
        next_item: next_item as u64,
        turns: row.turns.max(0) as u64,
        totals: Totals {
            next_seq: last_seq + 1,
            caller_audio_ms: row.caller_audio_ms,
            agent_audio_ms: row.agent_audio_ms,
        },
    });
    Ok(())
}

/// The call's variables, with `previous_summary` and `conversation_context` filled from the
/// caller's earlier calls when the agent's prompt or greeting uses them (the server's values,
/// whatever the client sent under those names). A store that cannot answer leaves them empty.
async fn returning_caller(
    svc: &CallServices,
    agent: &crate::agents::Agent,
    owner: &Owner,
    call_id: &str,
    variables: &HashMap<String, String>,
) -> HashMap<String, String> {
    const PREVIOUS: &str = "previous_summary";
    const CONTEXT: &str = "conversation_context";
    let mut vars = variables.clone();
    let texts = [
        agent.system_prompt.as_str(),
        agent.greeting.as_deref().unwrap_or(""),
    ];
    if !texts
        .iter()
        .any(|t| t.contains(PREVIOUS) || t.contains(CONTEXT))
    {
        return vars;
    }
    let rows = svc
        .store
        .previous_summaries(
            owner.org.as_deref(),
            &owner.sub,
            call_id,
            crate::summary::CONTEXT_CALLS,
        )
        .await
        .unwrap_or_else(|e| {
            warn!(error = %e, "cannot read the caller's earlier summaries; the prompt goes without");
            Vec::new()
        });
    let (previous, context) = crate::summary::returning_caller(&rows);
    vars.insert(PREVIOUS.into(), previous);
    vars.insert(CONTEXT.into(), context);
    vars
}

/// Holds the call for this node across the cluster: refused when another node holds it live
/// or the org's caps on live calls (counted across the nodes) are reached.
async fn claim(
    svc: &CallServices,
    cluster: &crate::live::Cluster,
    call_id: &str,
    owner: &Owner,
    caps: super::store::LiveCaps,
    info: &super::store::LiveInfo,
) -> Result<(), StartError> {
    use crate::live::Refusal;
    let per_user = i64::try_from(svc.limits.max_calls_per_user).unwrap_or(i64::MAX);
    match cluster.claim(call_id, owner, caps, per_user, info).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(Refusal::Live(_))) => Err(refuse(
            ErrorCode::CallAlreadyActive,
            format!("call `{call_id}` is already live on another connection"),
        )),
        Ok(Err(Refusal::TooMany(n))) => Err(refuse(
            ErrorCode::TooManyCalls,
            format!("too many calls for this user (limit {n})"),
        )),
        Ok(Err(Refusal::Limit(kind, cap))) => Err(refuse(
            ErrorCode::LimitReached,
            StoreError::Limit(kind, cap).to_string(),
        )
        .with_limit(kind)),
        Err(e) => {
            warn!(error = %e, "cannot claim the call in Redis");
            Err(refuse(
                ErrorCode::StoreUnavailable,
                "the live-call registry is unavailable; try again",
            ))
        }
    }
}

/// Starts (or resumes) a call and spawns its actor.
pub async fn start(svc: &Arc<CallServices>, req: StartRequest) -> Result<Started, StartError> {
    let session = match &req.session {
        Some(sid) => Some(
            super::session::check(
                svc,
                sid,
                &req.owner,
                req.resume.as_deref(),
                req.agent.as_deref(),
            )
            .await?,
        ),
        None => None,
    };
    if let Some(id) = &req.resume {
        restore(svc, id, &req.owner).await?;
    }
    let detection = svc
        .checked_detection(&svc.default_detection(), req.detection.as_ref())
        .map_err(|e| refuse(ErrorCode::InvalidSetting, e))?;
    // A resumed call keeps its own agent unless another is asked for.
    let resumed_agent = match (&req.agent, &req.resume) {
        (None, Some(id)) => svc
            .calls
            .get_owned(id, &req.owner)
            .ok()
            .map(|r| r.agent.clone()),
        _ => None,
    };
    let agent_name = match &session {
        Some(s) => Some(s.agent.clone()),
        None => req
            .agent
            .clone()
            .or(resumed_agent)
            .or_else(|| req.token_agent.clone()),
    };
    let org = req.owner.org.as_deref();
    let Some(agent) = svc.agents.get_in(org, agent_name.as_deref()) else {
        let known = svc.agents.names_in(org).join(", ");
        let name: String = agent_name.unwrap_or_default().chars().take(64).collect();
        return Err(refuse(
            ErrorCode::UnknownAgent,
            format!("unknown agent `{name}` (known: {known})"),
        ));
    };
    if req.record == Some(true) && !agent.record {
        return Err(refuse(
            ErrorCode::InvalidSetting,
            format!("agent `{}` does not record calls", agent.name),
        ));
    }
    let recorded = agent.record && req.record != Some(false) && !req.push_to_talk;
    let listener = Listener::new(
        detection,
        svc.scorer(&detection),
        svc.turn.speculate_ms,
        svc.limits.max_turn_audio_ms,
    )
    .with_echo_cancellation(svc.turn.echo_cancellation);
    let caps = limits_at_start(svc, &req.owner).await?;
    // On a cluster the caps are counted across the nodes when the call is claimed, below.
    let local_caps = match svc.cluster {
        Some(_) => super::store::LiveCaps::default(),
        None => caps,
    };
    let mut live = svc
        .calls
        .start_capped(&req.owner, &agent.name, req.resume.as_deref(), local_caps)
        .map_err(|e| {
            let code = match e {
                StoreError::TooMany(_) => ErrorCode::TooManyCalls,
                StoreError::NotFound(_) => ErrorCode::CallNotFound,
                StoreError::Live(_) => ErrorCode::CallAlreadyActive,
                StoreError::Limit(kind, _) => {
                    return refuse(ErrorCode::LimitReached, e.to_string()).with_limit(kind)
                }
            };
            refuse(code, e.to_string())
        })?;
    let resumed = req.resume.is_some();
    let call_id = live.record.id.clone();
    if let Some(cluster) = &svc.cluster {
        let info = super::store::LiveInfo {
            call_id: call_id.clone(),
            agent: agent.name.clone(),
            sub: req.owner.sub.clone(),
            started_at: live.record.stretch_started_ms(),
            state: super::store::CallState::Listening,
            taken_over_by: None,
        };
        if let Err(e) = claim(svc, cluster, &call_id, &req.owner, caps, &info).await {
            let stretch = live.record.stretch();
            drop(live);
            if !resumed {
                svc.calls.forget(&call_id, stretch);
            }
            return Err(e);
        }
        live.hold(crate::live::LeaseGuard::new(
            cluster.clone(),
            &call_id,
            svc.writer.clone(),
            svc.tasks.clone(),
        ));
    }
    if let Some(s) = &session {
        if let Err(e) = super::session::bind(svc, &s.id, &call_id).await {
            let stretch = live.record.stretch();
            drop(live);
            if !resumed {
                // Never started: nothing of it is kept.
                svc.calls.forget(&call_id, stretch);
            }
            return Err(e);
        }
    }
    let history_len = live.record.history().len();
    info!(call_id = %call_id, agent = %agent.name, resumed, "call started");
    svc.metrics.live_calls.inc();
    // A session's bound variables win over the client's (see `session::merge`).
    let sent_variables = !req.variables.is_empty();
    let call_variables = match &session {
        Some(s) => super::session::merge(&agent, &s.variables, &req.variables),
        None => req.variables.clone(),
    };
    let variables = returning_caller(svc, &agent, &req.owner, &call_id, &call_variables).await;
    let greeting = if resumed || !req.greet {
        None
    } else {
        agent.render_greeting(&variables)
    };
    // A recorded call opens with its notice, so the recording holds it.
    let notice = (recorded && !resumed).then(|| agent.recording_notice.trim().to_string());
    let greeting = match (notice.as_deref(), greeting) {
        (Some(n), Some(g)) => Some(format!("{n} {g}")),
        (Some(n), None) => Some(n.to_string()),
        (None, g) => g,
    };
    // A flow says the call's first words: from its start, on a new call and on a resumed one
    // (the place in the flow is not kept). Push-to-talk requests go to the model.
    let flow = agent.flow.clone().filter(|_| req.greet).map(|f| {
        let mut vars = agent.variables.clone();
        vars.extend(variables.iter().map(|(k, v)| (k.clone(), v.clone())));
        Arc::new(std::sync::Mutex::new(FlowState::new(Arc::new(f), vars)))
    });
    let greeting = match &flow {
        Some(_) => Some(TurnInput::FlowStart {
            notice: notice.clone(),
        }),
        None => greeting.map(TurnInput::Say),
    };
    // A resumed call keeps the prompt its variables gave it, unless new ones are sent.
    let system = match live.record.system_prompt() {
        Some(p) if resumed && !sent_variables => p,
        _ => agent.render_prompt(&variables),
    };
    live.record.set_system_prompt(&system);
    let meta = CallMeta {
        call_id: call_id.clone(),
        org: req.owner.org.clone(),
        sub: req.owner.sub.clone(),
        agent: agent.name.clone(),
    };
    let hook = svc.webhooks.for_call(&meta);
    let mut recorder = Recorder::new(Some(svc.writer.clone()), &call_id, live.record.totals())
        .with_feed(svc.feed.clone(), meta)
        .with_redactor(agent.redactor())
        .with_hook(hook);
    let recording = recorded.then(|| {
        recorder.recording_started(notice.as_deref());
        Mixer::start(recording_path(&svc.recordings, &call_id), &svc.tasks)
    });
    if req.push_to_talk {
        recorder.set_push_to_talk();
    }
    recorder.started(
        &req.owner.sub,
        req.owner.org.as_deref(),
        &agent.name,
        call_variables.into_iter().collect(),
        &system,
        live.record.turns.load(std::sync::atomic::Ordering::SeqCst),
    );
    let part_ms = live.record.stretch_started_ms();
    let meter = Meter::new(
        Some(svc.writer.clone()),
        &call_id,
        part_ms,
        &req.owner,
        &agent.name,
    )
    .with_cluster(svc.cluster.clone());
    let watch = Some(LimitWatch {
        store: svc.store.clone(),
        owner: req.owner.clone(),
        call_id: call_id.clone(),
        part_ms,
        defaults: svc.usage.defaults,
        cluster: svc.cluster.clone(),
    });
    let engines = svc.engines.for_agent(&agent.name);
    let output_rate = engines.tts.sample_rate();
    let (input_tx, input_rx) = mpsc::channel(INPUT_BUFFER);
    let (owner_tx, owner_rx) = mpsc::channel(OWNER_BUFFER);
    let (events, _) = broadcast::channel(SUBSCRIBER_BUFFER);
    let (listen, _) = broadcast::channel(LISTEN_BUFFER);
    let handle = CallHandle::new(call_id.clone(), input_tx, events.clone(), listen.clone());
    svc.calls.attach(&call_id, handle.clone());
    let max_call = Duration::from_secs(svc.limits.max_call_secs);
    let call = Call::new(
        svc.clone(),
        live,
        agent.clone(),
        engines,
        system,
        Caller::new(listener),
        max_call,
        owner_tx,
        events,
        listen,
        recorder,
    )
    .with_recording(recording)
    .with_usage(meter, watch)
    .with_flow(flow);
    let span = info_span!("call", call_id = %call_id, sub = %req.owner.sub);
    svc.tasks
        .spawn(call.run(input_rx, greeting).instrument(span));
    Ok(Started {
        handle,
        events: owner_rx,
        call_id,
        agent: agent.name.clone(),
        resumed,
        history_len,
        detection,
        output_rate,
    })
}
