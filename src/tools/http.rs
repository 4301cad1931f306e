//! HTTP tools: the arguments go as a JSON body (`POST`) or as query parameters (`GET`), with
//! `Authorization` from the tool's environment variable and `Voxwire-Call-Id`. The answer must
//! be JSON (or empty) and at most [`MAX_RESULT_BYTES`]; everything, connection included, must
//! happen within the tool's timeout. Redirects are not followed.

use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::Tool;

/// The largest answer of an HTTP tool, in bytes.
pub const MAX_RESULT_BYTES: usize = 16 * 1024;

/// Why an HTTP tool gave no result: a stable kind and a sentence for the model.
pub type Failure = (&'static str, String);

fn client() -> Result<&'static reqwest::Client, Failure> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("voxwire-tools/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| {
            tracing::error!(error = %e, "cannot make the tools' HTTP client");
            ("unreachable", "the tool could not be reached".to_string())
        })
}

/// A query parameter's text: strings as they are, anything else as JSON.
fn query_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Calls the tool; the answer's JSON text (a JSON string: its text), or why there is none.
pub async fn call(
    tool: &Tool,
    args: &Map<String, Value>,
    call_id: &str,
) -> Result<String, Failure> {
    let timeout = tool.timeout();
    let ms = timeout.as_millis();
    match tokio::time::timeout(timeout, attempt(tool, args, call_id)).await {
        Ok(r) => r,
        Err(_) => Err(("timeout", format!("the tool did not answer within {ms} ms"))),
    }
}

async fn attempt(tool: &Tool, args: &Map<String, Value>, call_id: &str) -> Result<String, Failure> {
    let client = client()?;
    let url = tool.url.as_deref().unwrap_or_default().trim();
    let mut req = match tool.method.unwrap_or_default() {
        super::HttpMethod::Post => client.post(url).json(args),
        super::HttpMethod::Get => {
            let query: Vec<(&str, String)> = args
                .iter()
                .map(|(k, v)| (k.as_str(), query_value(v)))
                .collect();
            client.get(url).query(&query)
        }
    };
    req = req
        .header("voxwire-call-id", call_id)
        .header(reqwest::header::ACCEPT, "application/json");
    if let Some(var) = &tool.auth_header_env {
        match std::env::var(var) {
            Ok(value) if !value.trim().is_empty() => {
                let mut value = reqwest::header::HeaderValue::from_str(value.trim()).map_err(|_| {
                    tracing::warn!(tool = %tool.name, env = %var, "the tool's auth header is not a valid header value");
                    ("not_configured", "the tool is not configured".to_string())
                })?;
                value.set_sensitive(true);
                req = req.header(reqwest::header::AUTHORIZATION, value);
            }
            _ => {
                tracing::warn!(tool = %tool.name, env = %var, "the tool's auth header variable is not set");
                return Err(("not_configured", "the tool is not configured".into()));
            }
        }
    }
    let mut resp = req.send().await.map_err(|e| {
        tracing::warn!(tool = %tool.name, error = %e.without_url(), "the tool could not be reached");
        ("unreachable", "the tool could not be reached".to_string())
    })?;
    let status = resp.status();
    if !status.is_success() {
        return Err((
            "http_status",
            format!("the tool answered HTTP {}", status.as_u16()),
        ));
    }
    let too_large = || {
        (
            "too_large",
            format!("the tool's answer is larger than {MAX_RESULT_BYTES} bytes"),
        )
    };
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_RESULT_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_RESULT_BYTES {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(_) => return Err(("unreachable", "the tool's answer broke off".to_string())),
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok("{\"ok\":true}".into());
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::String(s)) => Ok(s),
        Ok(v) => Ok(v.to_string()),
        Err(_) => Err(("bad_json", "the tool's answer is not JSON".to_string())),
    }
}
