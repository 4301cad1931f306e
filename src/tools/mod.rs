//! Tools an agent's language model may call: their definitions (the agent's `tools`, checked
//! at load and by the agents API), what the model is shown of them, and running a call
//! ([`run`]). A tool is an HTTP endpoint or a built-in: `end_call`, `transfer`, `take_message`.
//! Only models that call functions use them (the OpenAI-compatible engine); the local model
//! ignores them.

mod http;
pub mod run;

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::engines::llm::ToolDef;

pub use run::{run, Effect, ToolOutcome};

/// The most tools an agent may have.
pub const MAX_TOOLS: usize = 16;
/// The longest description of a tool, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 1024;
/// The largest `parameters` schema of a tool, as JSON, in bytes.
pub const MAX_PARAMETERS_BYTES: usize = 8 * 1024;
/// The timeout of an HTTP tool unless it sets one, and the longest it may set.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
pub const MAX_TIMEOUT_MS: u64 = 30_000;

/// What a tool does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolKind {
    /// Calls `url` with the arguments; the response body is the result.
    Http,
    /// Ends the call once the reply that called it has been said.
    EndCall,
    /// Hands the call on to `to` (argument). Without a phone line the call ends with reason
    /// `transferred` and the target is written to the event log.
    Transfer,
    /// Takes a message (`name`, `callback`, `message`): written to the event log and sent to
    /// the agent's webhook as `message.taken`.
    TakeMessage,
}

impl ToolKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ToolKind::Http => "http",
            ToolKind::EndCall => "end_call",
            ToolKind::Transfer => "transfer",
            ToolKind::TakeMessage => "take_message",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    #[default]
    Post,
}

/// One tool of an agent, as `agents.toml` (`[[agent.tools]]`) and the agents API write it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    /// The function name the model calls: 1 to 64 letters, digits, `_` or `-`.
    pub name: String,
    /// What the tool does, for the model (built-ins have one when this is empty).
    #[serde(default)]
    pub description: String,
    /// A JSON Schema object of the arguments (a TOML table or JSON in a string). Built-ins
    /// have their own and take none.
    #[serde(
        default,
        deserialize_with = "schema",
        skip_serializing_if = "Option::is_none"
    )]
    pub parameters: Option<Value>,
    pub kind: ToolKind,
    /// HTTP tools: an `http://` or `https://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// HTTP tools: `POST` (the arguments as a JSON body, the default) or `GET` (the arguments
    /// as query parameters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
    /// HTTP tools: how long the tool may take, 1 to 30000 ms (default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// HTTP tools: the environment variable whose value is sent as `Authorization` (never
    /// the value itself). Read at each call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_header_env: Option<String>,
}

/// A JSON Schema written as a TOML table, or as JSON in a string.
fn schema<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        Some(Value::String(text)) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("parameters is not JSON: {e}"))),
        v => Ok(v),
    }
}

impl Tool {
    /// What the model is shown of the tool.
    pub fn def(&self) -> ToolDef {
        let (description, parameters) = match self.kind {
            ToolKind::Http => (
                "Calls an external service.",
                self.parameters
                    .clone()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            ),
            ToolKind::EndCall => (
                "Ends the call after your reply. Say goodbye in the same reply.",
                json!({"type": "object", "properties": {}}),
            ),
            ToolKind::Transfer => (
                "Transfers the caller to a person or department, after your reply.",
                json!({"type": "object", "properties": {
                    "to": {"type": "string", "description": "Who or where to transfer to."}
                }, "required": ["to"]}),
            ),
            ToolKind::TakeMessage => (
                "Takes a message for someone to call the caller back.",
                json!({"type": "object", "properties": {
                    "name": {"type": "string", "description": "The caller's name."},
                    "callback": {"type": "string", "description": "How to reach the caller."},
                    "message": {"type": "string", "description": "The message."}
                }, "required": ["name", "message"]}),
            ),
        };
        ToolDef {
            name: self.name.clone(),
            description: if self.description.trim().is_empty() {
                description.to_string()
            } else {
                self.description.clone()
            },
            parameters,
        }
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS))
    }
}

/// What the model is shown of `tools` (none: `None`).
pub fn offered(tools: &[Tool]) -> Option<Arc<[ToolDef]>> {
    (!tools.is_empty()).then(|| tools.iter().map(Tool::def).collect())
}

/// A plausible environment variable name: letters, digits and `_`, not starting with a digit.
pub fn valid_env_name(var: &str) -> bool {
    !var.is_empty()
        && var.len() <= 128
        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !var.starts_with(|c: char| c.is_ascii_digit())
}

fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Checks an agent's tools; the error names the agent and the tool.
pub fn validate(agent: &str, tools: &[Tool]) -> Result<(), String> {
    if tools.len() > MAX_TOOLS {
        return Err(format!("agent `{agent}`: at most {MAX_TOOLS} tools"));
    }
    for (i, t) in tools.iter().enumerate() {
        if !valid_tool_name(&t.name) {
            return Err(format!(
                "agent `{agent}`: tools[{i}]: name `{}` must be 1 to 64 letters, digits, _ or -",
                t.name.chars().take(64).collect::<String>()
            ));
        }
        if tools[..i].iter().any(|o| o.name == t.name) {
            return Err(format!(
                "agent `{agent}`: tool `{}` is defined twice",
                t.name
            ));
        }
        check_tool(t).map_err(|why| format!("agent `{agent}`: tool `{}`: {why}", t.name))?;
    }
    Ok(())
}

fn check_tool(t: &Tool) -> Result<(), String> {
    if t.description.len() > MAX_DESCRIPTION_BYTES {
        return Err(format!(
            "description is longer than {MAX_DESCRIPTION_BYTES} bytes"
        ));
    }
    if t.kind != ToolKind::Http {
        let http_only = [
            ("parameters", t.parameters.is_some()),
            ("url", t.url.is_some()),
            ("method", t.method.is_some()),
            ("timeout_ms", t.timeout_ms.is_some()),
            ("auth_header_env", t.auth_header_env.is_some()),
        ];
        if let Some((field, _)) = http_only.iter().find(|(_, set)| *set) {
            return Err(format!(
                "`{field}` is for http tools; {} is built in",
                t.kind.as_str()
            ));
        }
        return Ok(());
    }
    let url = t.url.as_deref().unwrap_or_default();
    let parsed = reqwest::Url::parse(url.trim()).ok().filter(|u| {
        matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
    });
    if parsed.is_none() {
        return Err("an http tool needs a `url`, http:// or https://".into());
    }
    if let Some(ms) = t.timeout_ms.filter(|ms| !(1..=MAX_TIMEOUT_MS).contains(ms)) {
        return Err(format!(
            "timeout_ms {ms} must be between 1 and {MAX_TIMEOUT_MS}"
        ));
    }
    if let Some(var) = &t.auth_header_env {
        if !valid_env_name(var) {
            return Err(
                "auth_header_env must name an environment variable (letters, digits and _), \
                 not hold the secret"
                    .into(),
            );
        }
    }
    if let Some(p) = &t.parameters {
        let is_object_schema =
            p.is_object() && p.get("type").is_none_or(|ty| ty.as_str() == Some("object"));
        if !is_object_schema {
            return Err("parameters must be a JSON Schema object (`type = \"object\"`)".into());
        }
        if p.to_string().len() > MAX_PARAMETERS_BYTES {
            return Err(format!(
                "parameters is larger than {MAX_PARAMETERS_BYTES} bytes"
            ));
        }
    }
    Ok(())
}

/// The agents API's extra rule: an HTTP tool made there has no `auth_header_env` (the server's
/// environment is not the org's to read) and does not point at this machine or a private
/// network by address (`localhost`, loopback, private, link-local).
pub fn check_api(agent: &str, tools: &[Tool]) -> Result<(), String> {
    for t in tools {
        if t.auth_header_env.is_some() {
            return Err(format!(
                "agent `{agent}`: tool `{}`: `auth_header_env` is set in agents.toml only",
                t.name
            ));
        }
        let host = t
            .url
            .as_deref()
            .and_then(|u| reqwest::Url::parse(u.trim()).ok())
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
        if host.as_deref().is_some_and(internal_host) {
            return Err(format!(
                "agent `{agent}`: tool `{}`: the url points at a local or private address; \
                 such tools are set in agents.toml only",
                t.name
            ));
        }
    }
    Ok(())
}

fn internal_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => {
            ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
        }
        Ok(IpAddr::V6(ip)) => {
            let seg = ip.segments()[0];
            ip.is_loopback()
                || ip.is_unspecified()
                || (seg & 0xfe00) == 0xfc00
                || (seg & 0xffc0) == 0xfe80
                || ip
                    .to_ipv4_mapped()
                    .is_some_and(|v4| internal_host(&v4.to_string()))
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_tools: &str) -> Result<Vec<Tool>, String> {
        #[derive(Deserialize)]
        struct T {
            tools: Vec<Tool>,
        }
        let t: T = toml::from_str(toml_tools).map_err(|e| e.to_string())?;
        validate("a", &t.tools)?;
        Ok(t.tools)
    }

    #[test]
    fn tools_load_with_their_defaults() {
        let tools = parse(
            "[[tools]]\nname = \"weather\"\nkind = \"http\"\nurl = \"https://w.example/now\"\n\
             [tools.parameters]\ntype = \"object\"\n\
             [tools.parameters.properties.city]\ntype = \"string\"\n\
             [[tools]]\nname = \"bye\"\nkind = \"end_call\"\n\
             [[tools]]\nname = \"lookup\"\nkind = \"http\"\nmethod = \"GET\"\n\
             url = \"http://x.example/q\"\ntimeout_ms = 30000\nauth_header_env = \"LOOKUP_TOKEN\"\n\
             parameters = '{\"properties\": {\"q\": {\"type\": \"string\"}}}'\n",
        )
        .unwrap();
        assert_eq!(tools[0].method.unwrap_or_default(), HttpMethod::Post);
        assert_eq!(tools[0].timeout().as_millis(), 5000);
        assert_eq!(
            tools[0].def().parameters["properties"]["city"]["type"],
            "string"
        );
        let bye = tools[1].def();
        assert!(bye.description.contains("Ends the call"));
        assert_eq!(tools[2].method, Some(HttpMethod::Get));
        assert_eq!(
            tools[2].def().parameters["properties"]["q"]["type"],
            "string"
        );
        assert_eq!(offered(&tools).unwrap().len(), 3);
        assert!(offered(&[]).is_none());
    }

    #[test]
    fn bad_tools_are_refused_with_a_reason() {
        let http = "kind = \"http\"\nurl = \"https://x.example/t\"\n";
        let cases = [
            (format!("[[tools]]\nname = \"a b\"\n{http}"), "name `a b`"),
            (format!("[[tools]]\nname = \"\"\n{http}"), "1 to 64"),
            (
                format!("[[tools]]\nname = \"t\"\n{http}[[tools]]\nname = \"t\"\n{http}"),
                "twice",
            ),
            (
                "[[tools]]\nname = \"t\"\nkind = \"http\"\n".into(),
                "needs a `url`",
            ),
            (
                "[[tools]]\nname = \"t\"\nkind = \"http\"\nurl = \"ftp://x/y\"\n".into(),
                "http://",
            ),
            (
                format!("[[tools]]\nname = \"t\"\n{http}timeout_ms = 0\n"),
                "timeout_ms 0",
            ),
            (
                format!("[[tools]]\nname = \"t\"\n{http}timeout_ms = 30001\n"),
                "30000",
            ),
            (
                format!("[[tools]]\nname = \"t\"\n{http}auth_header_env = \"Bearer abc\"\n"),
                "not hold the secret",
            ),
            (
                format!("[[tools]]\nname = \"t\"\n{http}parameters = '[1]'\n"),
                "JSON Schema object",
            ),
            (
                format!("[[tools]]\nname = \"t\"\n{http}parameters = '{{\"type\": \"string\"}}'\n"),
                "JSON Schema object",
            ),
            (
                format!("[[tools]]\nname = \"t\"\n{http}parameters = 'nope'\n"),
                "not JSON",
            ),
            (
                format!("[[tools]]\nname = \"t\"\n{http}method = \"PUT\"\n"),
                "unknown variant",
            ),
            (
                "[[tools]]\nname = \"t\"\nkind = \"end_call\"\nurl = \"https://x.example\"\n"
                    .into(),
                "`url` is for http tools",
            ),
            (
                "[[tools]]\nname = \"t\"\nkind = \"teleport\"\n".into(),
                "unknown variant",
            ),
            (
                format!("[[tools]]\nname = \"t\"\n{http}colour = 1\n"),
                "unknown field",
            ),
            (
                format!(
                    "[[tools]]\nname = \"t\"\n{http}description = \"{}\"\n",
                    "x".repeat(1025)
                ),
                "description",
            ),
        ];
        for (text, want) in cases {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let many: String = (0..17)
            .map(|i| format!("[[tools]]\nname = \"t{i}\"\nkind = \"end_call\"\n"))
            .collect();
        assert!(parse(&many).unwrap_err().contains("at most 16"));
    }

    #[test]
    fn the_api_refuses_server_secrets_and_internal_addresses() {
        let tool = |url: &str, env: Option<&str>| Tool {
            name: "t".into(),
            description: String::new(),
            parameters: None,
            kind: ToolKind::Http,
            url: Some(url.into()),
            method: None,
            timeout_ms: None,
            auth_header_env: env.map(str::to_string),
        };
        assert!(check_api("a", &[tool("https://api.example/x", None)]).is_ok());
        let e = check_api("a", &[tool("https://api.example/x", Some("K"))]).unwrap_err();
        assert!(e.contains("auth_header_env"), "{e}");
        for url in [
            "http://localhost:8080/x",
            "http://127.0.0.1/x",
            "http://10.1.2.3/x",
            "http://192.168.0.1/x",
            "http://169.254.169.254/latest",
            "http://[::1]/x",
            "http://[fd00::1]/x",
            "http://[::ffff:127.0.0.1]/x",
        ] {
            assert!(check_api("a", &[tool(url, None)]).is_err(), "{url}");
        }
    }
}
