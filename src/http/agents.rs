//! The agents API: `GET /api/agents` lists the agents a caller may ask for; an org's backend
//! (its API key) or admins create, read, replace and delete the org's own agents (`POST /api/agents`,
//! `GET|PUT|DELETE /api/agents/{name}`), validated like `agents.toml`. Every change is a new
//! version in the store; a running call keeps the version it started with. The agents of
//! `agents.toml` seed every org: an org may replace one (version 1 on) or delete it, for
//! itself only; the replacement keeps the file's engines, webhooks and retention.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::api::{authenticate, TokenQuery};
use super::calls::unavailable;
use super::error::AppError;
use super::principal::principal;
use crate::agents::{from_api, Agent, Source, Versioned, FILE_ONLY_FIELDS};
use crate::auth::token_from_request;
use crate::call::record::now_ms;
use crate::protocol::ErrorCode;
use crate::server::AppState;
use crate::store::{AgentVersionRow, StoreError};

/// The largest agent definition taken, in bytes.
pub const MAX_DEFINITION_BYTES: usize = 64 * 1024;

/// The changes `GET /api/agents/{name}` shows at most, the newest ones.
pub const HISTORY_SHOWN: usize = 50;

/// The store's name of an org (`""`: the default org).
fn org_key(org: Option<&str>) -> &str {
    org.unwrap_or("")
}

/// `GET /api/agents`: the names a call may ask for and the default; with a token, its org's
/// own agents are among them, each with its source and version.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, AppError> {
    let org = match token_from_request(&headers, q.token.as_deref()) {
        Some(_) => authenticate(&state, &headers, &q)?.org,
        None => None,
    };
    let agents = &state.agents;
    let items: Vec<Value> = agents
        .names_in(org.as_deref())
        .into_iter()
        .map(|name| match agents.api_agent(org.as_deref(), &name) {
            Some(v) => json!({"name": name, "source": "api", "version": v.version}),
            None => json!({"name": name, "source": "file", "version": 0}),
        })
        .collect();
    Ok(Json(json!({
        "agents": agents.names_in(org.as_deref()),
        "default": agents.default_name(),
        "items": items,
    })))
}

/// `GET /api/agents/{name}` (admins): the agent, its current version and every change.
pub async fn read(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, AppError> {
    let who = principal(&state, &headers).await?;
    let org = who.org.as_deref();
    match state.agents.source(org, &name) {
        Source::File(agent) => {
            return Ok(Json(json!({
                "name": name,
                "source": "file",
                "version": 0,
                "definition": api_view(&agent),
                "file_settings": file_settings(&agent),
                "history": [],
            })));
        }
        Source::Deleted => return Err(missing(&name)),
        Source::Api(_) | Source::None => {}
    }
    let store = &state.call_services.store;
    // One more than shown: the version before the first shown tells what that one changed.
    let history = store
        .agent_history(org_key(org), &name, HISTORY_SHOWN as i64 + 1)
        .await
        .map_err(unavailable)?;
    let Some(current) = history.last().filter(|r| r.definition.is_some()) else {
        return Err(missing(&name));
    };
    let parse = |r: &AgentVersionRow| -> Option<Value> {
        r.definition
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
    };
    let definition = parse(current).unwrap_or(Value::Null);
    let (before, shown) = history.split_at(history.len().saturating_sub(HISTORY_SHOWN));
    let mut previous: Option<Value> = before.last().and_then(parse);
    let changes: Vec<Value> = shown
        .iter()
        .map(|r| {
            let def = parse(r);
            let changed = changed_fields(previous.as_ref(), def.as_ref());
            previous = def;
            json!({
                "version": r.version,
                "at_ms": r.at_ms,
                "actor": r.actor,
                "deleted": r.definition.is_none(),
                "changed": changed,
            })
        })
        .collect();
    // `get` knows the file's agents only.
    let file_settings = state.agents.get(Some(&name)).map(|a| file_settings(&a));
    Ok(Json(json!({
        "name": name,
        "source": "api",
        "version": current.version,
        "definition": definition,
        "file_settings": file_settings,
        "history": changes,
        "history_truncated": !before.is_empty(),
    })))
}

/// An agent as the API takes it: without the fields set in `agents.toml` only.
fn api_view(agent: &Agent) -> Value {
    let mut v = serde_json::to_value(agent).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        for field in FILE_ONLY_FIELDS {
            obj.remove(field);
        }
    }
    v
}

/// The fields only `agents.toml` sets that a file agent sets (a replacement keeps them).
fn file_settings(agent: &Agent) -> Value {
    let all = serde_json::to_value(agent).unwrap_or(Value::Null);
    let set: serde_json::Map<String, Value> = FILE_ONLY_FIELDS
        .iter()
        .filter_map(|f| {
            let v = all.get(*f).filter(|v| !v.is_null())?;
            Some((f.to_string(), v.clone()))
        })
        .collect();
    Value::Object(set)
}

/// The top-level fields that differ between two versions (all of the new one's at first).
fn changed_fields(before: Option<&Value>, after: Option<&Value>) -> Vec<String> {
    let empty = serde_json::Map::new();
    let b = before.and_then(Value::as_object).unwrap_or(&empty);
    let a = after.and_then(Value::as_object).unwrap_or(&empty);
    let mut keys: Vec<String> = b
        .keys()
        .chain(a.keys())
        .filter(|k| b.get(*k) != a.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn missing(name: &str) -> AppError {
    AppError::not_found(format!(
        "no agent `{}` in this org",
        name.chars().take(64).collect::<String>()
    ))
}

fn invalid(message: impl Into<String>) -> AppError {
    AppError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidAgent, message)
}

/// The agent a request's body defines; its `name`, if given, must be `name` (when known).
fn definition(body: &Bytes, name: Option<&str>) -> Result<Agent, AppError> {
    if body.len() > MAX_DEFINITION_BYTES {
        return Err(AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("an agent is at most {MAX_DEFINITION_BYTES} bytes"),
        ));
    }
    let mut value: Value = serde_json::from_slice(body).map_err(|e| {
        AppError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidJson,
            format!("not valid JSON: {e}"),
        )
    })?;
    let Some(obj) = value.as_object_mut() else {
        return Err(invalid("an agent is a JSON object"));
    };
    if let Some(name) = name {
        match obj.get("name") {
            None => {
                obj.insert("name".into(), json!(name));
            }
            Some(n) if n == name => {}
            Some(_) => return Err(invalid("the body's `name` is not the agent's in the path")),
        }
    }
    from_api(value).map_err(invalid)
}

/// Each phone number of the org's `agent` must be free: not mapped by the server's
/// configuration, not another agent's (of any org). Else 409 `number_taken`.
fn numbers_free(state: &AppState, org: Option<&str>, agent: &Agent) -> Result<(), AppError> {
    for n in &agent.phone_numbers {
        let t = &state.config.telephony;
        let configured = t.route(n).is_some() || t.telnyx_route(n).is_some();
        let other = state
            .agents
            .for_number(n)
            .is_some_and(|(o, a)| !(o.as_deref() == org && a == agent.name));
        if configured || other {
            state.metrics.error(ErrorCode::NumberTaken);
            return Err(AppError::new(
                StatusCode::CONFLICT,
                ErrorCode::NumberTaken,
                format!(
                    "phone number {n} already answers for {}",
                    if configured {
                        "the server's configuration (VOXWIRE_TWILIO_NUMBERS, VOXWIRE_TELNYX_NUMBERS)"
                    } else {
                        "another agent"
                    }
                ),
            ));
        }
    }
    Ok(())
}

/// Stores a new version of the org's agent and makes it current on this server.
async fn save(
    state: &AppState,
    org: Option<&str>,
    name: &str,
    version: i64,
    agent: Option<Agent>,
    actor: &str,
) -> Result<Option<Versioned>, AppError> {
    let definition = match &agent {
        Some(a) => Some(serde_json::to_string(a).map_err(AppError::internal)?),
        None => None,
    };
    let row = AgentVersionRow {
        org: org_key(org).to_string(),
        name: name.to_string(),
        version,
        definition,
        actor: actor.to_string(),
        at_ms: now_ms(),
    };
    let stored = state
        .call_services
        .store
        .insert_agent_version(&row)
        .await
        .map_err(unavailable)?;
    if !stored {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            ErrorCode::AgentConflict,
            format!("agent `{name}` changed meanwhile; read it again and retry"),
        ));
    }
    let current = agent.map(|a| Versioned {
        version,
        agent: Arc::new(a),
    });
    state.agents.set_api(org, name, current.clone());
    tracing::info!(agent = %name, version, deleted = current.is_none(), "an agent was changed over the API");
    Ok(current)
}

/// The org's agent `name` as the store has it: its newest version (0 for a file agent the org
/// never changed, or a name never used) and whether the org has it now.
async fn newest(
    state: &AppState,
    org: Option<&str>,
    name: &str,
) -> Result<(i64, bool), StoreError> {
    let history = state
        .call_services
        .store
        .agent_history(org_key(org), name, 1)
        .await?;
    Ok(match history.last() {
        Some(r) => (r.version, r.definition.is_some()),
        None => (0, state.agents.from_file(name)),
    })
}

fn answer(name: &str, v: &Versioned) -> Json<Value> {
    Json(json!({
        "name": name,
        "source": "api",
        "version": v.version,
        "definition": api_view(&v.agent),
    }))
}

/// `POST /api/agents` (admins): a new agent of the org, version 1 (or the next after a
/// deletion).
pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, AppError> {
    let who = principal(&state, &headers).await?;
    let org = who.org.as_deref();
    let agent = definition(&body, None)?;
    numbers_free(&state, org, &agent)?;
    let name = agent.name.clone();
    let (version, exists) = newest(&state, org, &name).await.map_err(unavailable)?;
    if exists {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            ErrorCode::AgentExists,
            format!("agent `{name}` exists; replace it with PUT /api/agents/{name}"),
        ));
    }
    let saved = save(&state, org, &name, version + 1, Some(agent), &who.label()).await?;
    let saved = saved.ok_or_else(|| AppError::internal("a saved agent is missing"))?;
    Ok((StatusCode::CREATED, answer(&name, &saved)))
}

/// `PUT /api/agents/{name}` (admins): the org's agent replaced by a new version.
pub async fn replace(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, AppError> {
    let who = principal(&state, &headers).await?;
    let org = who.org.as_deref();
    let agent = definition(&body, Some(&name))?;
    numbers_free(&state, org, &agent)?;
    let (version, exists) = newest(&state, org, &name).await.map_err(unavailable)?;
    if !exists {
        return Err(missing(&name));
    }
    let saved = save(&state, org, &name, version + 1, Some(agent), &who.label()).await?;
    let saved = saved.ok_or_else(|| AppError::internal("a saved agent is missing"))?;
    Ok(answer(&name, &saved))
}

/// `DELETE /api/agents/{name}` (admins): no new call gets the agent; live ones keep theirs.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, AppError> {
    let who = principal(&state, &headers).await?;
    let org = who.org.as_deref();
    if name == state.agents.default_name() {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            ErrorCode::AgentFromFile,
            format!(
                "agent `{name}` is the default of agents.toml, which calls that name no agent \
                 get; replace it with PUT /api/agents/{name} instead"
            ),
        ));
    }
    let (version, exists) = newest(&state, org, &name).await.map_err(unavailable)?;
    if !exists {
        return Err(missing(&name));
    }
    save(&state, org, &name, version + 1, None, &who.label()).await?;
    Ok(Json(
        json!({"name": name, "deleted": true, "version": version + 1}),
    ))
}

/// Makes the stored current versions of every org's agents those of this server (at start).
pub async fn load(state: &AppState) -> Result<usize, String> {
    let rows = state
        .call_services
        .store
        .current_agents()
        .await
        .map_err(|e| format!("cannot read the agents made over the API: {e}"))?;
    let mut loaded = 0;
    for r in rows {
        let org = (!r.org.is_empty()).then_some(r.org.as_str());
        let Some(def) = r.definition.as_deref() else {
            // A file agent the org deleted stays deleted.
            state.agents.set_api(org, &r.name, None);
            continue;
        };
        let agent = serde_json::from_str(def)
            .map_err(|e| e.to_string())
            .and_then(from_api)
            .map_err(|e| format!("stored agent `{}` (version {}): {e}", r.name, r.version))?;
        state.agents.set_api(
            org,
            &r.name,
            Some(Versioned {
                version: r.version,
                agent: Arc::new(agent),
            }),
        );
        loaded += 1;
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_the_fields_that_differ() {
        let v1 = json!({"name": "a", "system_prompt": "x", "temperature": 0.3});
        let v2 = json!({"name": "a", "system_prompt": "y", "temperature": 0.3, "greeting": "hi"});
        assert_eq!(
            changed_fields(None, Some(&v1)),
            ["name", "system_prompt", "temperature"]
        );
        assert_eq!(
            changed_fields(Some(&v1), Some(&v2)),
            ["greeting", "system_prompt"]
        );
        assert_eq!(changed_fields(Some(&v2), None).len(), 4);
    }
}
