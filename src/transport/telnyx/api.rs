//! Telnyx's Call Control REST API, for the commands the Telnyx door gives a live call
//! (`answer` with its media stream, `hangup`, `transfer`): `POST {api}/v2/calls/{call_control_id}/actions/{action}`
//! with a JSON body, authenticated with `TELNYX_API_KEY` as a bearer token.

use std::time::Duration;

use serde_json::Value;
use tracing::warn;

use crate::config::TelephonySettings;
use crate::transport::phone::client;

/// How long Telnyx has to answer a command.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The most of Telnyx's answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why Telnyx did not take a command.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("Telnyx could not be reached")]
    Unreachable(#[source] reqwest::Error),
    #[error("Telnyx refused the command ({status}): {detail}")]
    Refused { status: u16, detail: String },
    #[error("TELNYX_API_KEY is not set")]
    NoKey,
}

/// Gives the call `call_control_id` the command `action` with `body`.
pub async fn command(
    telephony: &TelephonySettings,
    call_control_id: &str,
    action: &str,
    body: &Value,
) -> Result<(), CommandError> {
    let Some(key) = telephony.telnyx_api_key.as_ref() else {
        return Err(CommandError::NoKey);
    };
    let key = String::from_utf8_lossy(key.expose()).into_owned();
    // The id is one path segment, whatever it holds.
    let mut url =
        reqwest::Url::parse(&telephony.telnyx_api_url).map_err(|_| CommandError::Refused {
            status: 0,
            detail: "VOXWIRE_TELNYX_API_URL is not a URL".into(),
        })?;
    url.path_segments_mut()
        .map_err(|_| CommandError::Refused {
            status: 0,
            detail: "VOXWIRE_TELNYX_API_URL cannot take a path".into(),
        })?
        .pop_if_empty()
        .extend(["v2", "calls", call_control_id, "actions", action]);
    let answer = client()
        .post(url)
        .bearer_auth(key)
        .json(body)
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(|e| {
            let e = e.without_url();
            warn!(action, error = %e, "Telnyx could not be reached");
            CommandError::Unreachable(e)
        })?;
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    let body: Value =
        serde_json::from_slice(&bytes[..bytes.len().min(MAX_ANSWER_BYTES)]).unwrap_or(Value::Null);
    // Telnyx's error answer: `{"errors": [{"code": "90018", "title": "Call has already ended", "detail": "..."}]}`.
    let first = &body["errors"][0];
    let detail = first["detail"]
        .as_str()
        .or_else(|| first["title"].as_str())
        .unwrap_or("no reason given");
    let detail: String = detail.chars().take(300).collect();
    warn!(action, status = status.as_u16(), telnyx_code = %first["code"], "Telnyx refused a call command");
    Err(CommandError::Refused {
        status: status.as_u16(),
        detail,
    })
}
