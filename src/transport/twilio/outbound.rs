//! `POST /api/calls/outbound`: an org's backend (its API key) or admin has Twilio call a
//! number; when it answers, the call connects to the media socket with a pass, like an
//! incoming one, and the org's agent talks. Twilio is asked through its REST API
//! (`Calls.json`, with the TwiML inline), authenticated with `TWILIO_ACCOUNT_SID` and
//! `TWILIO_AUTH_TOKEN`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{info, warn};

use super::{configured, connect_twiml, MEDIA_PATH};
use crate::agents::valid_variable_name;
use crate::config::valid_number;
use crate::http::error::AppError;
use crate::http::principal::principal;
use crate::protocol::ErrorCode;
use crate::server::AppState;
use crate::transport::phone::{client, Carrier, StreamPass};

/// The largest request body taken.
const MAX_BODY_BYTES: usize = 16 * 1024;
/// Variables a placed call may carry, and the longest value.
const MAX_VARIABLES: usize = 32;
const MAX_VALUE_BYTES: usize = 1024;
/// How long Twilio has to answer the request.
const TWILIO_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of Twilio's answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Placed {
    to: String,
    from: String,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    variables: HashMap<String, String>,
}

fn bad(code: ErrorCode, message: impl Into<String>) -> AppError {
    AppError::new(StatusCode::BAD_REQUEST, code, message)
}

/// The request, checked: numbers in E.164, bounded variables.
fn parse(body: &Bytes) -> Result<Placed, AppError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("a request is at most {MAX_BODY_BYTES} bytes"),
        ));
    }
    let placed: Placed = serde_json::from_slice(body)
        .map_err(|e| bad(ErrorCode::InvalidJson, format!("not a valid request: {e}")))?;
    for (field, n) in [("to", &placed.to), ("from", &placed.from)] {
        if !valid_number(n.trim()) {
            return Err(bad(
                ErrorCode::InvalidParameter,
                format!("`{field}` must be a phone number like +15550001111"),
            ));
        }
    }
    let bad_variable = placed
        .variables
        .iter()
        .any(|(k, v)| !valid_variable_name(k) || v.len() > MAX_VALUE_BYTES);
    if placed.variables.len() > MAX_VARIABLES || bad_variable {
        return Err(bad(
            ErrorCode::InvalidParameter,
            format!(
                "`variables`: at most {MAX_VARIABLES}, names of 1 to 64 letters, digits, _, - or ., \
                 values of at most {MAX_VALUE_BYTES} bytes"
            ),
        ));
    }
    Ok(placed)
}

/// `POST /api/calls/outbound`: Twilio calls `to` from `from` (a number of the account) and
/// the org's `agent` talks when it answers.
pub async fn place(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, AppError> {
    let who = principal(&state, &headers).await?;
    let placed = parse(&body)?;
    let (token, _) = configured(&state)?;
    let telephony = &state.config.telephony;
    let Some(sid) = telephony.twilio_account_sid.as_deref() else {
        state.metrics.error(ErrorCode::NotConfigured);
        return Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NotConfigured,
            "outbound calls are not configured: set TWILIO_ACCOUNT_SID",
        ));
    };
    let org = who.org.clone();
    let Some(agent) = state.agents.get_in(org.as_deref(), placed.agent.as_deref()) else {
        let name: String = placed.agent.unwrap_or_default().chars().take(64).collect();
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownAgent,
            format!("unknown agent `{name}`"),
        ));
    };
    let (to, from) = (placed.to.trim(), placed.from.trim());
    let pass = StreamPass::outbound(
        Carrier::Twilio,
        from,
        to,
        org,
        Some(agent.name.clone()),
        placed.variables,
    );
    let pass = pass.sign(&state.auth).map_err(AppError::internal)?;
    let socket = state.config.net.public_socket_url().unwrap_or_default();
    let twiml = connect_twiml(&format!("{socket}{MEDIA_PATH}"), &pass);
    let url = format!(
        "{}/2010-04-01/Accounts/{sid}/Calls.json",
        telephony.twilio_api_url
    );
    let secret = String::from_utf8_lossy(token).into_owned();
    let form = [("To", to), ("From", from), ("Twiml", twiml.as_str())];
    let failed = |message: String| {
        state.metrics.error(ErrorCode::CarrierError);
        AppError::new(StatusCode::BAD_GATEWAY, ErrorCode::CarrierError, message)
    };
    let answer = client()
        .post(&url)
        .basic_auth(sid, Some(secret))
        .form(&form)
        .timeout(TWILIO_TIMEOUT)
        .send()
        .await
        .map_err(|e| {
            warn!(error = %e.without_url(), "Twilio could not be reached to place a call");
            failed("Twilio could not be reached; try again".into())
        })?;
    let status = answer.status();
    let bytes = answer.bytes().await.unwrap_or_default();
    let body: Value =
        serde_json::from_slice(&bytes[..bytes.len().min(MAX_ANSWER_BYTES)]).unwrap_or(Value::Null);
    if !status.is_success() {
        // Twilio's error answer: `{"code": 21211, "message": "The 'To' number ... is not valid"}`.
        let why = body["message"].as_str().unwrap_or("no reason given");
        let why: String = why.chars().take(300).collect();
        warn!(status = status.as_u16(), twilio_code = %body["code"], "Twilio refused to place a call");
        return Err(failed(format!(
            "Twilio refused the call ({}): {why}",
            status.as_u16()
        )));
    }
    let call_sid = body["sid"].as_str().unwrap_or_default().to_string();
    info!(%call_sid, agent = %agent.name, by = %who.label(), "outbound phone call placed");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "call_sid": call_sid,
            "status": body["status"],
            "to": to,
            "from": from,
            "agent": agent.name,
        })),
    ))
}
