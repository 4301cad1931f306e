//! Language model over the OpenAI chat completions API (`POST {base}/chat/completions` with
//! `stream: true`): OpenAI, Groq, Ollama, llama.cpp's server, vLLM. Replies arrive as
//! server-sent events whose `choices[0].delta.content` are the text deltas, ended by
//! `data: [DONE]`. A request that fails before any text arrived is sent again (see
//! [`crate::engines::http`]); once text went out, a broken stream is an error. Cancelling the
//! turn drops the response, which closes the connection.
//!
//! Tools: a request that offers tools sends them as `tools` (`type: "function"`); the reply's
//! `delta.tool_calls` arrive in pieces keyed by `index` (the id and name first, the arguments
//! as text in several chunks) and are put together here, then left in the request's
//! [`ToolOffer`] once the stream ends with `[DONE]` (so a retried attempt leaves nothing
//! half-made). Past conversation turns carry `tool_calls` and `tool` messages in the same
//! format.

use eventsource_stream::Eventsource;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{well_formed, ChatRequest, LanguageModel, TokenCount, TokenTap, ToolCall, ToolOffer};
use crate::engines::http::{spawn_stream, HttpApi};
use crate::engines::providers::ProviderSpec;
use crate::engines::{EngineError, EngineInitError};

pub struct OpenAiLlm {
    api: HttpApi,
    url: String,
    model: String,
    provider: String,
}

type Delta = Result<String, EngineError>;

impl OpenAiLlm {
    pub fn new(name: &str, spec: &ProviderSpec) -> Result<Self, EngineInitError> {
        let err = |reason: String| EngineInitError {
            kind: "language model",
            name: name.to_string(),
            reason,
        };
        let model = spec
            .llm_model
            .clone()
            .ok_or_else(|| err("no llm_model".into()))?;
        let api = HttpApi::new(
            format!("{name} language model"),
            spec.api_key.clone(),
            spec.policy(),
        )
        .map_err(|e| err(e.to_string()))?;
        Ok(Self {
            api,
            url: format!("{}/chat/completions", spec.base()),
            model,
            provider: name.to_string(),
        })
    }

    fn body(&self, request: &ChatRequest) -> Value {
        let mut messages = Vec::with_capacity(request.messages.len() + 1);
        if !request.system.trim().is_empty() {
            messages.push(json!({"role": "system", "content": request.system}));
        }
        messages.extend(well_formed(&request.messages).iter().map(message));
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "stream": true,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            // The last event then carries the reply's token counts (metering).
            "stream_options": {"include_usage": true},
        });
        if request.json {
            body["response_format"] = json!({"type": "json_object"});
        }
        if let Some(offer) = request.tools.as_ref().filter(|o| !o.tools.is_empty()) {
            body["tools"] = offer
                .tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    }})
                })
                .collect();
        }
        body
    }
}

/// One message in the API's format.
fn message(m: &super::ChatMessage) -> Value {
    let mut v = json!({"role": m.role.as_str(), "content": m.content});
    if !m.tool_calls.is_empty() {
        if m.content.trim().is_empty() {
            v["content"] = Value::Null;
        }
        v["tool_calls"] = m
            .tool_calls
            .iter()
            .map(|c| {
                json!({"id": c.id, "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments}})
            })
            .collect();
    }
    if let Some(id) = &m.tool_call_id {
        v["tool_call_id"] = json!(id);
    }
    v
}

/// The most tool calls one reply may make; more are dropped.
const MAX_CALLS: usize = 16;
/// The longest arguments of one call kept, in bytes; a call whose arguments grow past it is
/// kept with what came so far (invalid JSON, which its tool reports).
const MAX_ARGUMENTS: usize = 16 * 1024;

/// Tool calls put together from `delta.tool_calls` pieces, by index.
#[derive(Debug, Default)]
struct CallPieces {
    calls: Vec<(u64, ToolCall)>,
}

impl CallPieces {
    fn push(&mut self, deltas: &[Value]) {
        for d in deltas {
            let index = d.get("index").and_then(Value::as_u64).unwrap_or(0);
            let slot = match self.calls.iter().position(|(i, _)| *i == index) {
                Some(p) => p,
                None if self.calls.len() < MAX_CALLS => {
                    self.calls.push((
                        index,
                        ToolCall {
                            id: String::new(),
                            name: String::new(),
                            arguments: String::new(),
                        },
                    ));
                    self.calls.len() - 1
                }
                None => continue,
            };
            let call = &mut self.calls[slot].1;
            if let Some(id) = d.get("id").and_then(Value::as_str) {
                call.id = id.chars().take(128).collect();
            }
            let f = d.get("function");
            if let Some(name) = f.and_then(|f| f.get("name")).and_then(Value::as_str) {
                call.name.push_str(name);
                call.name.truncate(128);
            }
            if let Some(args) = f.and_then(|f| f.get("arguments")).and_then(Value::as_str) {
                if call.arguments.len() + args.len() <= MAX_ARGUMENTS {
                    call.arguments.push_str(args);
                }
            }
        }
    }

    /// The calls in index order; one without an id gets `call_{index}`.
    fn finish(mut self) -> Vec<ToolCall> {
        self.calls.sort_by_key(|(i, _)| *i);
        self.calls
            .into_iter()
            .filter(|(_, c)| !c.name.is_empty())
            .map(|(i, mut c)| {
                if c.id.is_empty() {
                    c.id = format!("call_{i}");
                }
                c
            })
            .collect()
    }
}

impl LanguageModel for OpenAiLlm {
    fn name(&self) -> String {
        format!("{} ({})", self.provider, self.model)
    }

    fn usage_label(&self) -> String {
        self.provider.clone()
    }

    fn json_output(&self) -> bool {
        true
    }

    fn stream(
        &self,
        request: ChatRequest,
        cancel: CancellationToken,
    ) -> BoxStream<'static, Result<String, EngineError>> {
        let body = self.body(&request);
        let api = self.api.clone();
        let url = self.url.clone();
        let tap = request.tokens.clone().map(|t| (t, self.usage_label()));
        let offer = request.tools.clone();
        spawn_stream(64, move |tx| async move {
            let mut attempt = 0;
            loop {
                let taps = Taps {
                    tokens: tap.as_ref(),
                    tools: offer.as_ref(),
                };
                match one_attempt(&api, &url, &body, &cancel, &tx, taps).await {
                    Attempt::Done => return,
                    Attempt::Failed { error, may_retry } => {
                        let retry = may_retry
                            && attempt < api.policy.retries
                            && matches!(
                                error,
                                EngineError::Failed {
                                    retryable: true,
                                    ..
                                }
                            );
                        if !retry {
                            let _ = tx.send(Err(error)).await;
                            return;
                        }
                        let wait = api.policy.backoff_for(attempt);
                        attempt += 1;
                        tracing::warn!(engine = %api.engine(), attempt, error = %error, "reply stream failed before any text; retrying");
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                }
            }
        })
    }
}

enum Attempt {
    Done,
    /// `may_retry`: the stream broke before any text was used. (A request that got no
    /// response was already retried by [`HttpApi::send`].)
    Failed {
        error: EngineError,
        may_retry: bool,
    },
}

/// Where a reply's token counts and tool calls are left.
#[derive(Clone, Copy)]
struct Taps<'a> {
    tokens: Option<&'a (TokenTap, String)>,
    tools: Option<&'a ToolOffer>,
}

/// One request and its stream of events, forwarded as they come.
async fn one_attempt(
    api: &HttpApi,
    url: &str,
    body: &Value,
    cancel: &CancellationToken,
    tx: &mpsc::Sender<Delta>,
    taps: Taps<'_>,
) -> Attempt {
    let tap = taps.tokens;
    let mut calls = CallPieces::default();
    let resp = match api
        .send(|| api.bearer(api.client().post(url).json(body)), cancel)
        .await
    {
        Ok(r) => r,
        Err(error) => {
            return Attempt::Failed {
                error,
                may_retry: false,
            }
        }
    };
    let mut events = api.body(resp, cancel.clone()).eventsource();
    let mut sent_text = false;
    let fail = |error, sent_text: bool| Attempt::Failed {
        error,
        may_retry: !sent_text,
    };
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(eventsource_stream::EventStreamError::Transport(e)) => return fail(e, sent_text),
            Err(e) => {
                return fail(
                    api.fail(format!("unreadable event stream: {e}"), true),
                    sent_text,
                )
            }
        };
        let data = event.data.trim();
        if data.is_empty() {
            continue;
        }
        if data == "[DONE]" {
            if let Some(offer) = taps.tools {
                offer.set_calls(std::mem::take(&mut calls).finish());
            }
            return Attempt::Done;
        }
        if let Ok(v) = serde_json::from_str::<Value>(data) {
            if let Some(pieces) = v
                .pointer("/choices/0/delta/tool_calls")
                .and_then(Value::as_array)
            {
                calls.push(pieces);
            }
        }
        let parsed = parse_event(data).map(|(text, usage)| {
            if let (Some((prompt, completion)), Some((tap, engine))) = (usage, tap) {
                tap.set(TokenCount {
                    engine: engine.clone(),
                    prompt,
                    completion,
                });
            }
            text
        });
        match parsed {
            Ok(Some(text)) if !text.is_empty() => {
                sent_text = true;
                if tx.send(Ok(text)).await.is_err() {
                    return Attempt::Done;
                }
            }
            Ok(_) => {}
            Err(message) => return fail(api.fail(message, true), sent_text),
        }
    }
    if cancel.is_cancelled() {
        return Attempt::Done;
    }
    fail(
        api.fail("the reply stream ended before [DONE] (truncated)", true),
        sent_text,
    )
}

/// The text of one `chat.completion.chunk`, or the error it reports.
#[cfg(test)]
fn parse_chunk(data: &str) -> Result<Option<String>, String> {
    parse_event(data).map(|(text, _)| text)
}

/// The text of one `chat.completion.chunk` and the token counts it carries (the last one,
/// with `stream_options.include_usage`), or the error it reports.
#[allow(clippy::type_complexity)]
fn parse_event(data: &str) -> Result<(Option<String>, Option<(u64, u64)>), String> {
    let v: Value = serde_json::from_str(data).map_err(|e| {
        let head: String = data.chars().take(80).collect();
        format!("malformed JSON in the reply stream ({e}): {head}")
    })?;
    if let Some(err) = v.get("error") {
        let msg = err
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| err.to_string());
        return Err(format!("the provider reported an error mid-stream: {msg}"));
    }
    let usage = v.get("usage").filter(|u| u.is_object()).map(|u| {
        let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
        (n("prompt_tokens"), n("completion_tokens"))
    });
    let text = v
        .pointer("/choices/0/delta/content")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((text, usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_give_their_text() {
        let c = r#"{"id":"1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi "},"finish_reason":null}]}"#;
        assert_eq!(parse_chunk(c), Ok(Some("Hi ".into())));
        let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#;
        assert_eq!(parse_chunk(role), Ok(None));
        let stop = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
        assert_eq!(parse_chunk(stop), Ok(None));
        assert!(parse_chunk(r#"{"choices":[{"delta":"#)
            .unwrap_err()
            .contains("malformed JSON"));
        let last = r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#;
        assert_eq!(parse_event(last), Ok((None, Some((12, 5)))));
        let none = r#"{"choices":[{"delta":{"content":"a"}}],"usage":null}"#;
        assert_eq!(parse_event(none), Ok((Some("a".into()), None)));
        assert!(parse_chunk(r#"{"error":{"message":"overloaded"}}"#)
            .unwrap_err()
            .contains("overloaded"));
    }

    #[test]
    fn tool_calls_are_put_together_from_their_pieces() {
        let mut p = CallPieces::default();
        let chunk = |s: &str| -> Vec<Value> { serde_json::from_str(s).unwrap() };
        p.push(&chunk(
            r#"[{"index":0,"id":"call_a","type":"function","function":{"name":"weather","arguments":""}}]"#,
        ));
        p.push(&chunk(r#"[{"index":0,"function":{"arguments":"{\"ci"}}]"#));
        p.push(&chunk(
            r#"[{"index":1,"id":"call_b","function":{"name":"end_call","arguments":"{}"}}]"#,
        ));
        p.push(&chunk(
            r#"[{"index":0,"function":{"arguments":"ty\":\"Oslo\"}"}}]"#,
        ));
        let calls = p.finish();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (calls[0].id.as_str(), calls[0].name.as_str()),
            ("call_a", "weather")
        );
        assert_eq!(calls[0].arguments, r#"{"city":"Oslo"}"#);
        assert_eq!(calls[1].name, "end_call");
    }
}
