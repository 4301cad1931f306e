//! Agents: who the assistant is on a call (system prompt, greeting, voice, sampling), loaded
//! from `agents.toml` (or `VOXWIRE_AGENTS`) and validated at start-up.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

/// The agents shipped with the source tree, used when no file is found.
const BUILTIN: &str = include_str!("../agents.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    pub name: String,
    /// System prompt; `{{variable}}` placeholders are filled from the variables.
    pub system_prompt: String,
    /// Spoken when a new call starts.
    #[serde(default)]
    pub greeting: Option<String>,
    #[serde(default)]
    pub voice: Option<String>,
    #[serde(default = "default_temperature")]
    pub temperature: f32,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// Default values of the placeholders; `start_call.variables` override them.
    #[serde(default)]
    pub variables: HashMap<String, String>,
    /// Variables a client's `start_call` may set even when a session token binds them (see
    /// `POST /api/sessions`); the others a session binds are the backend's alone.
    #[serde(default)]
    pub client_variables: Vec<String>,
    /// Engine chains for this agent instead of the server's (`["openai", "local"]`).
    #[serde(default)]
    pub stt: Option<Vec<String>>,
    #[serde(default)]
    pub llm: Option<Vec<String>>,
    #[serde(default)]
    pub tts: Option<Vec<String>>,
    /// What is masked in everything the call leaves behind: `card`, `phone`, `email`.
    #[serde(default)]
    pub redact: Vec<crate::redact::Sensitive>,
    /// Where the call's signed webhooks are sent (`http://` or `https://`).
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// The environment variable that holds the webhook's signing secret (never the secret).
    #[serde(default)]
    pub webhook_secret_env: Option<String>,
    /// Record this agent's calls (unless a call's `start_call.record` is false).
    #[serde(default)]
    pub record: bool,
    /// Spoken first on a recorded call; the recording holds it.
    #[serde(default = "default_recording_notice")]
    pub recording_notice: String,
    /// Words that, said (or typed) by the caller, stop the recording and delete it.
    #[serde(default = "default_opt_out")]
    pub recording_opt_out: Vec<String>,
    /// Keys (DTMF, e.g. `*9`) that, pressed by the caller, stop the recording and delete it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_opt_out_digits: Option<String>,
    /// Days this agent's ended calls are kept, instead of `VOXWIRE_RETENTION_DAYS` (0: kept
    /// forever).
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// Make a summary of each call when it ends (push-to-talk requests excepted).
    #[serde(default = "default_summary")]
    pub summary: bool,
    /// The structured fields each summary fills: a JSON Schema object, as a TOML table or a
    /// JSON string (see `summary::fields`).
    #[serde(default, deserialize_with = "schema")]
    pub summary_fields: Option<serde_json::Value>,
    /// Functions the language model may call (`[[agent.tools]]`, see `tools`); models that
    /// do not call functions ignore them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<crate::tools::Tool>,
    /// Phone numbers (E.164) whose incoming calls this agent answers (of its org, for an
    /// agent made over the API; of the default org, for the file's). `VOXWIRE_TWILIO_NUMBERS`
    /// wins over them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phone_numbers: Vec<String>,
    /// The call's script (`[agent.flow]`, see `flow`): menus, business hours, answers
    /// captured, transfers. Without one, the language model leads the whole call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<crate::flow::Flow>,
}

fn default_summary() -> bool {
    true
}

/// A JSON Schema written as a TOML table, or as JSON in a string.
fn schema<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    match v {
        Some(serde_json::Value::String(text)) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("summary_fields is not JSON: {e}"))),
        v => Ok(v),
    }
}

/// A variable's name: 1 to 64 letters, digits, `_`, `-` or `.`.
pub fn valid_variable_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The longest retention that can be set, in days (100 years).
pub const MAX_RETENTION_DAYS: u32 = 36_500;

fn default_recording_notice() -> String {
    "This call is recorded.".into()
}

fn default_opt_out() -> Vec<String> {
    vec!["do not record".into(), "don't record".into()]
}

fn default_temperature() -> f32 {
    0.3
}

fn default_max_tokens() -> usize {
    80
}

/// Replaces each `{{name}}` (spaces inside the braces allowed) with `vars[name]`. Unknown
/// names are left as written so that a missing variable is visible in logs.
pub fn substitute_variables(template: &str, vars: &HashMap<String, String>) -> String {
    if vars.is_empty() || !template.contains("{{") {
        return template.to_string();
    }
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let name = after[..end].trim();
                match vars.get(name) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&rest[start..start + 2 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Fills placeholders in one pass: call variables win over the agent's defaults, and a value
/// that itself contains `{{...}}` is inserted as written, never expanded again.
fn fill(
    template: &str,
    defaults: &HashMap<String, String>,
    overrides: &HashMap<String, String>,
) -> String {
    let mut vars = defaults.clone();
    vars.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
    substitute_variables(template, &vars)
}

/// `webhook_url` and `webhook_secret_env` come together; the URL is `http(s)://` with a host,
/// the variable a plausible name.
fn check_webhook(a: &Agent) -> Result<(), String> {
    match (&a.webhook_url, &a.webhook_secret_env) {
        (None, None) => Ok(()),
        (Some(_), None) => Err(format!(
            "agent `{}`: webhook_url needs webhook_secret_env, the environment variable that \
             holds the signing secret",
            a.name
        )),
        (None, Some(_)) => Err(format!(
            "agent `{}`: webhook_secret_env is set without a webhook_url",
            a.name
        )),
        (Some(url), Some(var)) => {
            let parsed = reqwest::Url::parse(url.trim()).ok().filter(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty())
            });
            if parsed.is_none() {
                return Err(format!(
                    "agent `{}`: webhook_url must be an http:// or https:// URL",
                    a.name
                ));
            }
            let valid_var = !var.is_empty()
                && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !var.starts_with(|c: char| c.is_ascii_digit());
            if !valid_var {
                return Err(format!(
                    "agent `{}`: webhook_secret_env must name an environment variable \
                     (letters, digits and _), not hold the secret",
                    a.name
                ));
            }
            Ok(())
        }
    }
}

/// The most phone numbers an agent answers.
pub const MAX_PHONE_NUMBERS: usize = 20;

fn check_numbers(a: &Agent) -> Result<(), String> {
    if a.phone_numbers.len() > MAX_PHONE_NUMBERS {
        return Err(format!(
            "agent `{}`: at most {MAX_PHONE_NUMBERS} phone_numbers",
            a.name
        ));
    }
    for (i, n) in a.phone_numbers.iter().enumerate() {
        if !crate::flow::is_phone_number(n) {
            return Err(format!(
                "agent `{}`: phone_numbers: `{}` is not a number in E.164 (+ and 7 to 15 \
                 digits)",
                a.name,
                n.chars().take(20).collect::<String>()
            ));
        }
        if a.phone_numbers[..i].contains(n) {
            return Err(format!(
                "agent `{}`: phone number {n} is listed twice",
                a.name
            ));
        }
    }
    Ok(())
}

/// Checks one agent as `agents.toml` and the agents API take it.
pub fn validate(a: &Agent) -> Result<(), String> {
    let valid_name = !a.name.is_empty()
        && a.name.len() <= 64
        && a.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid_name {
        return Err(format!(
            "agent name `{}` must be 1 to 64 letters, digits, - or _",
            a.name.chars().take(64).collect::<String>()
        ));
    }
    if !(0.0..=2.0).contains(&a.temperature) {
        return Err(format!(
            "agent `{}`: temperature must be between 0 and 2",
            a.name
        ));
    }
    if !(1..=1024).contains(&a.max_tokens) {
        return Err(format!(
            "agent `{}`: max_tokens must be between 1 and 1024",
            a.name
        ));
    }
    if a.retention_days.is_some_and(|d| d > MAX_RETENTION_DAYS) {
        return Err(format!(
            "agent `{}`: retention_days must be between 0 (keep forever) and {MAX_RETENTION_DAYS}",
            a.name
        ));
    }
    if a.system_prompt.trim().is_empty() {
        return Err(format!("agent `{}`: system_prompt is empty", a.name));
    }
    check_webhook(a)?;
    if let Some(d) = &a.recording_opt_out_digits {
        if !crate::call::keys::valid_digits(d) {
            return Err(format!(
                "agent `{}`: recording_opt_out_digits must be 1 to {} keys of 0-9, *, # and A-D",
                a.name,
                crate::call::keys::MAX_DIGITS
            ));
        }
    }
    if let Some(bad) = a.client_variables.iter().find(|v| !valid_variable_name(v)) {
        return Err(format!(
            "agent `{}`: client_variables: `{}` is not a variable name (1 to 64 \
             letters, digits, _, - or .)",
            a.name,
            bad.chars().take(64).collect::<String>()
        ));
    }
    if let Some(schema) = &a.summary_fields {
        crate::summary::fields::parse_schema(schema)
            .map_err(|e| format!("agent `{}`: {e}", a.name))?;
    }
    crate::tools::validate(&a.name, &a.tools)?;
    check_numbers(a)?;
    if let Some(flow) = &a.flow {
        flow.validate()
            .map_err(|e| format!("agent `{}`: {e}", a.name))?;
    }
    Ok(())
}

impl Agent {
    /// Whether `text` (a caller's words) asks not to be recorded.
    pub fn opts_out(&self, text: &str) -> bool {
        let text = text.to_lowercase().replace(['\u{2019}'], "'");
        self.recording_opt_out
            .iter()
            .any(|p| !p.trim().is_empty() && text.contains(&p.trim().to_lowercase()))
    }

    /// The fields of `summary_fields` (none without it). The schema was checked at load.
    pub fn summary_field_specs(&self) -> Vec<crate::summary::fields::FieldSpec> {
        self.summary_fields
            .as_ref()
            .and_then(|s| crate::summary::fields::parse_schema(s).ok())
            .unwrap_or_default()
    }

    /// Masks what the agent's `redact` names.
    pub fn redactor(&self) -> crate::redact::Redactor {
        crate::redact::Redactor::new(&self.redact)
    }

    /// The agent's own engine chain for `kind`, if it sets one.
    pub fn chain(&self, kind: crate::engines::providers::EngineKind) -> Option<&Vec<String>> {
        use crate::engines::providers::EngineKind;
        match kind {
            EngineKind::Stt => self.stt.as_ref(),
            EngineKind::Llm => self.llm.as_ref(),
            EngineKind::Tts => self.tts.as_ref(),
        }
    }

    /// The system prompt with `{{name}}` placeholders filled (call variables win over defaults).
    pub fn render_prompt(&self, variables: &HashMap<String, String>) -> String {
        fill(&self.system_prompt, &self.variables, variables)
    }

    /// The greeting, filled the same way.
    pub fn render_greeting(&self, variables: &HashMap<String, String>) -> Option<String> {
        self.greeting
            .as_deref()
            .map(|g| fill(g, &self.variables, variables))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentsFile {
    default: Option<String>,
    #[serde(rename = "agent", default)]
    agents: Vec<Agent>,
}

/// The agents this server knows: those of `agents.toml`, by name, with one default, which
/// seed every org; and what each org made over the API (current versions, as the store has
/// them): its own agents, its replacements of the file's (which keep the file's engines,
/// webhooks and retention) and the file's agents it deleted. Clones share the API agents.
#[derive(Debug, Clone)]
pub struct Agents {
    by_name: HashMap<String, Arc<Agent>>,
    default: String,
    api: Arc<RwLock<ApiAgents>>,
}

/// The agents made over the API, by org (`None`: the default org) and name; `None` is a file
/// agent the org deleted.
type ApiAgents = HashMap<(Option<String>, String), Option<Versioned>>;

/// The fields an agent made over the API cannot set: they need the server's configuration.
/// A replacement of a file agent keeps the file's.
pub const FILE_ONLY_FIELDS: [&str; 6] = [
    "stt",
    "llm",
    "tts",
    "webhook_url",
    "webhook_secret_env",
    "retention_days",
];

/// `agent` with the fields only `agents.toml` sets taken from `file`.
fn inherit(file: &Agent, agent: &Agent) -> Agent {
    Agent {
        stt: file.stt.clone(),
        llm: file.llm.clone(),
        tts: file.tts.clone(),
        webhook_url: file.webhook_url.clone(),
        webhook_secret_env: file.webhook_secret_env.clone(),
        retention_days: file.retention_days,
        ..agent.clone()
    }
}

/// Where an org's agent of some name comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// `agents.toml`, unchanged by the org.
    File(Arc<Agent>),
    /// The org's own version (a replacement of the file's when the file has the name).
    Api(Versioned),
    /// A file agent the org deleted.
    Deleted,
    /// No such agent.
    None,
}

/// An agent made over the API, at its current version.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub version: i64,
    pub agent: Arc<Agent>,
}

/// The longest system prompt or greeting an agent made over the API may have, in bytes.
pub const MAX_API_PROMPT_BYTES: usize = 16 * 1024;
/// The most default variables an agent made over the API may have.
pub const MAX_API_VARIABLES: usize = 64;

/// An agent as the agents API takes it: the fields of `agents.toml` (as JSON) except those
/// that need the server's configuration (engine chains, webhooks, retention), checked like
/// the file.
pub fn from_api(definition: serde_json::Value) -> Result<Agent, String> {
    let a: Agent = serde_json::from_value(definition).map_err(|e| e.to_string())?;
    let set = [
        a.stt.is_some(),
        a.llm.is_some(),
        a.tts.is_some(),
        a.webhook_url.is_some(),
        a.webhook_secret_env.is_some(),
        a.retention_days.is_some(),
    ];
    if let Some((field, _)) = FILE_ONLY_FIELDS.iter().zip(set).find(|(_, set)| *set) {
        return Err(format!(
            "agent `{}`: `{field}` is set in agents.toml only",
            a.name
        ));
    }
    let long = |t: &str| t.len() > MAX_API_PROMPT_BYTES;
    if long(&a.system_prompt) || a.greeting.as_deref().is_some_and(long) {
        return Err(format!(
            "agent `{}`: system_prompt and greeting are at most {MAX_API_PROMPT_BYTES} bytes",
            a.name
        ));
    }
    let long_variable = a
        .variables
        .iter()
        .any(|(k, v)| k.len() > 64 || v.len() > 4096);
    if a.variables.len() > MAX_API_VARIABLES || long_variable {
        return Err(format!(
            "agent `{}`: at most {MAX_API_VARIABLES} variables, names of at most 64 bytes and \
             values of at most 4096",
            a.name
        ));
    }
    validate(&a)?;
    crate::tools::check_api(&a.name, &a.tools)?;
    Ok(a)
}

impl Agents {
    /// The agents shipped with voxwire.
    pub fn builtin() -> Self {
        Self::parse(BUILTIN)
            .unwrap_or_else(|e| unreachable!("the shipped agents.toml is valid: {e}"))
    }

    /// Reads an agents file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses and validates the TOML text of an agents file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: AgentsFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut by_name = HashMap::new();
        for a in file.agents {
            validate(&a)?;
            let name = a.name.clone();
            if by_name.insert(name.clone(), Arc::new(a)).is_some() {
                return Err(format!("agent `{name}` is defined twice"));
            }
        }
        let default = match file.default {
            Some(d) => d,
            None if by_name.len() == 1 => by_name.keys().next().cloned().unwrap_or_default(),
            None => return Err("several agents: say which is the `default`".into()),
        };
        if !by_name.contains_key(&default) {
            return Err(format!("default agent `{default}` is not defined"));
        }
        Ok(Self {
            by_name,
            default,
            api: Arc::default(),
        })
    }

    fn api(&self) -> std::sync::RwLockReadGuard<'_, ApiAgents> {
        // Each change is one insert or remove: a panic mid-way leaves the map whole.
        self.api.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The agent a call of `org` gets by `name` (the default for `None`): the org's own
    /// version of that name, else the file's (unless the org deleted it).
    pub fn get_in(&self, org: Option<&str>, name: Option<&str>) -> Option<Arc<Agent>> {
        match self.source(org, name.unwrap_or(&self.default)) {
            Source::File(a) => Some(a),
            Source::Api(v) => Some(v.agent),
            Source::Deleted | Source::None => None,
        }
    }

    /// Where `org`'s agent `name` comes from.
    pub fn source(&self, org: Option<&str>, name: &str) -> Source {
        let key = (org.map(str::to_string), name.to_string());
        match self.api().get(&key) {
            Some(Some(v)) => Source::Api(v.clone()),
            Some(None) => Source::Deleted,
            None => match self.by_name.get(name) {
                Some(a) => Source::File(a.clone()),
                None => Source::None,
            },
        }
    }

    /// Whether `name` is one of `agents.toml`'s.
    pub fn from_file(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The org's agent `name` made over the API, at its current version.
    pub fn api_agent(&self, org: Option<&str>, name: &str) -> Option<Versioned> {
        match self.source(org, name) {
            Source::Api(v) => Some(v),
            _ => None,
        }
    }

    /// Sets the org's agent `name` made over the API (`None`: it was deleted). A version of a
    /// file agent's name keeps the file's engines, webhooks and retention.
    pub fn set_api(&self, org: Option<&str>, name: &str, current: Option<Versioned>) {
        let current = current.map(|v| match self.by_name.get(name) {
            Some(file) => Versioned {
                version: v.version,
                agent: Arc::new(inherit(file, &v.agent)),
            },
            None => v,
        });
        let mut api = self.api.write().unwrap_or_else(|p| p.into_inner());
        let key = (org.map(str::to_string), name.to_string());
        match current {
            Some(v) => api.insert(key, Some(v)),
            // A deleted file agent stays deleted for the org; an agent of its own is gone.
            None if self.by_name.contains_key(name) => api.insert(key, None),
            None => api.remove(&key),
        };
    }

    /// Who answers calls to `number` by the agents' `phone_numbers`: an org's agent made over
    /// the API, else a file agent (the default org's, unless that org deleted it).
    pub fn for_number(&self, number: &str) -> Option<(Option<String>, String)> {
        let number = number.trim();
        let api = self.api();
        let mut owners: Vec<(Option<String>, String)> = api
            .iter()
            .filter_map(|((org, name), v)| {
                let v = v.as_ref()?;
                v.agent
                    .phone_numbers
                    .iter()
                    .any(|n| n == number)
                    .then(|| (org.clone(), name.clone()))
            })
            .collect();
        // The agents API keeps numbers unique; should two claim one anyway, the choice is
        // the same on every request.
        owners.sort();
        if let Some(owner) = owners.into_iter().next() {
            return Some(owner);
        }
        let mut file: Vec<&String> = self
            .by_name
            .iter()
            .filter(|(name, a)| {
                a.phone_numbers.iter().any(|n| n == number)
                    && !api.contains_key(&(None, name.to_string()))
            })
            .map(|(name, _)| name)
            .collect();
        file.sort();
        file.first().map(|name| (None, name.to_string()))
    }

    /// The names a call of `org` may ask for: the file's it did not delete and its own,
    /// sorted.
    pub fn names_in(&self, org: Option<&str>) -> Vec<String> {
        let api = self.api();
        let mine = |(o, _): &&(Option<String>, String)| o.as_deref() == org;
        let deleted: Vec<&String> = api
            .iter()
            .filter(|(k, v)| mine(k) && v.is_none())
            .map(|((_, n), _)| n)
            .collect();
        let mut v: Vec<String> = self
            .by_name
            .keys()
            .filter(|n| !deleted.contains(n))
            .cloned()
            .collect();
        v.extend(
            api.iter()
                .filter(|(k, v)| mine(k) && v.is_some())
                .map(|((_, n), _)| n.clone()),
        );
        v.sort();
        v.dedup();
        v
    }

    /// The named agent, or the default for `None`.
    pub fn get(&self, name: Option<&str>) -> Option<Arc<Agent>> {
        self.by_name.get(name.unwrap_or(&self.default)).cloned()
    }

    pub fn default_name(&self) -> &str {
        &self.default
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Agent>> {
        self.by_name.values()
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.by_name.keys().cloned().collect();
        v.sort();
        v
    }

    /// Agents whose voice the text-to-speech engine does not have.
    pub fn unknown_voices(&self, has_voice: impl Fn(&str, &str) -> bool) -> Vec<(String, String)> {
        self.by_name
            .values()
            .filter_map(|a| {
                a.voice
                    .as_ref()
                    .filter(|v| !has_voice(&a.name, v))
                    .map(|v| (a.name.clone(), v.clone()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_fields_are_a_toml_table_or_json_and_are_checked_at_load() {
        let table = Agents::parse(
            "[[agent]]\nname = \"a\"\nsystem_prompt = \"x\"\n\
             [agent.summary_fields]\ntype = \"object\"\n\
             [agent.summary_fields.properties.name]\ntype = \"string\"\n",
        )
        .unwrap();
        let a = table.get(None).unwrap();
        assert!(a.summary, "summaries are on by default");
        assert_eq!(a.summary_field_specs()[0].name, "name");
        let json = Agents::parse(
            "[[agent]]\nname = \"a\"\nsystem_prompt = \"x\"\nsummary = false\n\
             summary_fields = '{\"properties\": {\"size\": {\"type\": \"integer\"}}}'\n",
        )
        .unwrap();
        let a = json.get(None).unwrap();
        assert!(!a.summary);
        assert_eq!(a.summary_field_specs()[0].name, "size");
        for (fields, why) in [
            (
                "summary_fields = '{\"properties\": {\"x\": {\"type\": \"date\"}}}'",
                "summary_fields.x",
            ),
            ("summary_fields = 'not json'", "not JSON"),
        ] {
            let err = Agents::parse(&format!(
                "[[agent]]\nname = \"a\"\nsystem_prompt = \"x\"\n{fields}\n"
            ))
            .unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn shipped_agents_load_and_fill_variables() {
        let agents = Agents::builtin();
        let a = agents.get(None).unwrap();
        assert_eq!(a.name, "receptionist");
        let prompt = a.render_prompt(&HashMap::new());
        assert!(
            prompt.contains("Bright Smile Dental") && !prompt.contains("{{"),
            "{prompt}"
        );
        let vars = HashMap::from([("business".to_string(), "Acme".to_string())]);
        assert!(a.render_greeting(&vars).unwrap().contains("calling Acme."));
        assert!(agents.get(Some("nobody")).is_none());
        assert!(agents.get(Some("assistant")).is_some());
    }

    #[test]
    fn variable_values_are_not_expanded_again() {
        let agents = Agents::builtin();
        let a = agents.get(None).unwrap();
        let vars = HashMap::from([("business".to_string(), "{{hours}}".to_string())]);
        let prompt = a.render_prompt(&vars);
        assert!(prompt.contains("receptionist at {{hours}}."), "{prompt}");
        assert!(prompt.contains("open Monday to Friday"), "{prompt}");
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let cases = [
            ("default = \"x\"\n[[agent]]\nname = \"a\"\nsystem_prompt = \"p\"", "not defined"),
            ("[[agent]]\nname = \"a b\"\nsystem_prompt = \"p\"", "letters"),
            ("[[agent]]\nname = \"a\"\nsystem_prompt = \"p\"\ntemperature = 5.0", "temperature"),
            ("[[agent]]\nname = \"a\"\nsystem_prompt = \"p\"\nmax_tokens = 0", "max_tokens"),
            ("[[agent]]\nname = \"a\"\nsystem_prompt = \"p\"\nvoise = \"x\"", "unknown field"),
            ("[[agent]]\nname = \"a\"\nsystem_prompt = \"p\"\nwebhook_url = \"https://x.example/h\"", "webhook_secret_env"),
            ("[[agent]]\nname = \"a\"\nsystem_prompt = \"p\"\nwebhook_secret_env = \"S\"", "without a webhook_url"),
            ("[[agent]]\nname = \"a\"\nsystem_prompt = \"p\"\nwebhook_url = \"ftp://x/h\"\nwebhook_secret_env = \"S\"", "http://"),
            ("[[agent]]\nname = \"a\"\nsystem_prompt = \"p\"\nwebhook_url = \"https://x/h\"\nwebhook_secret_env = \"whsec 123\"", "name an environment variable"),
            ("default = \"a\"\n[[agent]]\nname = \"a\"\nsystem_prompt = \"p\"\n[[agent]]\nname = \"a\"\nsystem_prompt = \"q\"", "twice"),
            ("[[agent]]\nname = \"a\"\nsystem_prompt = \"p\"\n[[agent]]\nname = \"b\"\nsystem_prompt = \"q\"", "default"),
            ("[[agent]]\nname = \"a\"\nsystem_prompt = \"p\"\nretention_days = 40000", "retention_days"),
            ("[[agent]]\nname = \"a\"\nsystem_prompt = \"p\"\nretention_days = -1", "retention_days"),
            ("[[agent]]\nname = \"a\"\nsystem_prompt = \"p\"\nclient_variables = [\"ok\", \"no way\"]", "client_variables: `no way`"),
            ("not toml at all [", ""),
        ];
        for (text, want) in cases {
            let e = Agents::parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    fn versioned(version: i64, definition: serde_json::Value) -> Versioned {
        Versioned {
            version,
            agent: Arc::new(from_api(definition).unwrap()),
        }
    }

    #[test]
    fn an_org_replaces_or_deletes_a_file_agent_for_itself_only() {
        let agents = Agents::parse(
            "default = \"desk\"\n[[agent]]\nname = \"desk\"\nsystem_prompt = \"file\"\n\
             llm = [\"local\"]\nretention_days = 7\n\
             [[agent]]\nname = \"sales\"\nsystem_prompt = \"file sales\"\n",
        )
        .unwrap();
        let mine = versioned(
            1,
            serde_json::json!({"name": "desk", "system_prompt": "mine"}),
        );
        agents.set_api(Some("acme"), "desk", Some(mine));
        // The replacement is acme's default, and keeps the file's engines and retention.
        let a = agents.get_in(Some("acme"), None).unwrap();
        assert_eq!(a.system_prompt, "mine");
        assert_eq!(
            (a.llm.clone(), a.retention_days),
            (Some(vec!["local".into()]), Some(7))
        );
        assert!(matches!(agents.source(Some("acme"), "desk"), Source::Api(v) if v.version == 1));
        // Other orgs keep the file's.
        assert_eq!(agents.get_in(None, None).unwrap().system_prompt, "file");
        assert_eq!(
            agents
                .get_in(Some("beta"), Some("desk"))
                .unwrap()
                .system_prompt,
            "file"
        );

        agents.set_api(Some("acme"), "sales", None);
        assert!(agents.get_in(Some("acme"), Some("sales")).is_none());
        assert!(matches!(
            agents.source(Some("acme"), "sales"),
            Source::Deleted
        ));
        assert_eq!(agents.names_in(Some("acme")), ["desk"]);
        assert_eq!(agents.names_in(None), ["desk", "sales"]);
        // Made again, it is back.
        let again = versioned(
            3,
            serde_json::json!({"name": "sales", "system_prompt": "back"}),
        );
        agents.set_api(Some("acme"), "sales", Some(again));
        assert_eq!(
            agents
                .get_in(Some("acme"), Some("sales"))
                .unwrap()
                .system_prompt,
            "back"
        );

        // An org's own agent, deleted, is simply gone.
        let own = versioned(1, serde_json::json!({"name": "own", "system_prompt": "x"}));
        agents.set_api(Some("acme"), "own", Some(own));
        assert_eq!(agents.names_in(Some("acme")), ["desk", "own", "sales"]);
        agents.set_api(Some("acme"), "own", None);
        assert!(matches!(agents.source(Some("acme"), "own"), Source::None));
    }

    #[test]
    fn tools_load_from_the_file_and_the_api_keeps_server_secrets_out() {
        let agents = Agents::parse(
            "[[agent]]\nname = \"a\"\nsystem_prompt = \"p\"\n\
             [[agent.tools]]\nname = \"bye\"\nkind = \"end_call\"\n\
             [[agent.tools]]\nname = \"crm\"\nkind = \"http\"\nurl = \"https://crm.example/x\"\n\
             auth_header_env = \"CRM_AUTH\"\n",
        )
        .unwrap();
        assert_eq!(agents.get(None).unwrap().tools.len(), 2);
        let e = Agents::parse(
            "[[agent]]\nname = \"a\"\nsystem_prompt = \"p\"\n\
             [[agent.tools]]\nname = \"crm\"\nkind = \"http\"\n",
        )
        .unwrap_err();
        assert!(
            e.contains("agent `a`: tool `crm`: an http tool needs a `url`"),
            "{e}"
        );
        let api = |tool: serde_json::Value| {
            from_api(serde_json::json!({"name": "a", "system_prompt": "p", "tools": [tool]}))
        };
        let ok =
            api(serde_json::json!({"name": "crm", "kind": "http", "url": "https://crm.example/x"}))
                .unwrap();
        let stored = serde_json::to_value(&ok).unwrap();
        assert_eq!(
            stored["tools"][0],
            serde_json::json!({"name": "crm", "description": "", "kind": "http", "url": "https://crm.example/x"})
        );
        let e = api(
            serde_json::json!({"name": "crm", "kind": "http", "url": "https://crm.example/x",
            "auth_header_env": "CRM_AUTH"}),
        )
        .unwrap_err();
        assert!(e.contains("agents.toml only"), "{e}");
        let e =
            api(serde_json::json!({"name": "crm", "kind": "http", "url": "http://127.0.0.1:9/x"}))
                .unwrap_err();
        assert!(e.contains("local or private"), "{e}");
    }

    #[test]
    fn unknown_voices_are_found() {
        let agents =
            Agents::parse("[[agent]]\nname = \"a\"\nsystem_prompt = \"p\"\nvoice = \"amy\"")
                .unwrap();
        assert_eq!(
            agents.unknown_voices(|_, v| v == "joe"),
            vec![("a".to_string(), "amy".to_string())]
        );
        assert!(agents.unknown_voices(|_, _| true).is_empty());
    }
}
