//! OpenAI-compatible routes: transcriptions (multipart), chat completions (SSE or JSON) and
//! speech (pcm or wav, streamed).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, State};
use axum::http::{header, HeaderMap, Uri};
use axum::response::Response;
use serde_json::{json, Value};

use super::faults::{self, Dialect, Fault};
use super::{audio_units, pcm_bytes, speech_samples, Recorded, Route, Shared, StreamGuard};

fn bad(message: &str) -> Response {
    faults::error(Dialect::OpenAi, 400, "", message)
}

fn respond(content_type: &str, body: Body) -> Response {
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, content_type)
        .body(body)
        .unwrap()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Multipart text fields, and the `file` field's bytes.
type Form = (HashMap<String, String>, Option<Bytes>);

async fn parse_multipart(headers: &HeaderMap, body: Bytes) -> Result<Form, String> {
    let mut request = axum::http::Request::builder().method("POST").uri("/");
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        request = request.header(header::CONTENT_TYPE, ct);
    }
    let request = request.body(Body::from(body)).map_err(|e| e.to_string())?;
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| e.body_text())?;
    let (mut fields, mut file) = (HashMap::new(), None);
    while let Some(field) = multipart.next_field().await.map_err(|e| e.body_text())? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            file = Some(field.bytes().await.map_err(|e| e.body_text())?);
        } else {
            let text = field.text().await.map_err(|e| e.body_text())?;
            fields.insert(name, text);
        }
    }
    Ok((fields, file))
}

/// Seconds of audio in a WAV file; `None` when it is not one.
fn wav_seconds(file: &[u8]) -> Option<f64> {
    let reader = hound::WavReader::new(std::io::Cursor::new(file)).ok()?;
    let rate = reader.spec().sample_rate;
    (rate > 0).then(|| reader.duration() as f64 / rate as f64)
}

/// `POST /v1/audio/transcriptions`: multipart `file` (a WAV) and `model`, optional
/// `response_format` (`json` default, `text`, `verbose_json`), `language`, `prompt`. Answers
/// `{"text": TRANSCRIPT}`; `text` answers the transcript and a newline, as OpenAI does.
pub(super) async fn transcriptions(
    State(inner): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = Route::Transcriptions;
    let parsed = parse_multipart(&headers, body.clone()).await;
    let mut recorded = Recorded::new(&uri, &headers, &body);
    if let Ok((fields, file)) = &parsed {
        recorded.form = fields.clone();
        recorded.file_bytes = file.as_ref().map(|f| f.len());
    }
    inner.record(route, recorded);
    let fault = match inner.admit(route, &headers) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    if let Some(r) = faults::before(fault.as_ref(), Dialect::OpenAi).await {
        return r;
    }

    let (fields, file) = match parsed {
        Ok(p) => p,
        Err(e) => return bad(&format!("Could not parse multipart form: {e}")),
    };
    let Some(file) = file else {
        return bad("Missing required parameter: 'file'.");
    };
    if fields.get("model").is_none_or(|m| m.trim().is_empty()) {
        return bad("Missing required parameter: 'model'.");
    }
    let Some(seconds) = wav_seconds(&file) else {
        return bad("Invalid file format. This fake reads WAV files only.");
    };
    let text = inner.transcript();
    let malformed = fault == Some(Fault::MalformedJson);
    let (content_type, answer) = match fields.get("response_format").map_or("json", |s| s) {
        "text" if !malformed => ("text/plain; charset=utf-8", format!("{text}\n")),
        "json" | "text" => ("application/json", json!({ "text": text }).to_string()),
        "verbose_json" => {
            let language = fields.get("language").map_or("english", |s| s);
            let v = json!({
                "task": "transcribe",
                "language": language,
                "duration": seconds,
                "text": text,
                "segments": [{
                    "id": 0, "seek": 0, "start": 0.0, "end": seconds, "text": text,
                    "tokens": [], "temperature": 0.0, "avg_logprob": -0.1,
                    "compression_ratio": 1.0, "no_speech_prob": 0.01,
                }],
            });
            ("application/json", v.to_string())
        }
        other => {
            return bad(&format!(
                "response_format '{other}' is not served by this fake (json, text, verbose_json)"
            ))
        }
    };
    respond(content_type, faults::whole(answer.into(), fault.as_ref()))
}

/// Splits text into words, each with the whitespace that follows it; concatenated they give
/// the text back.
pub fn word_pieces(text: &str) -> Vec<String> {
    let mut pieces: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut in_space = false;
    for c in text.chars() {
        if !c.is_whitespace() && in_space && !current.trim().is_empty() {
            pieces.push(std::mem::take(&mut current));
        }
        in_space = c.is_whitespace();
        current.push(c);
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// `POST /v1/chat/completions`: JSON `{model, messages, stream, max_tokens |
/// max_completion_tokens, temperature, stream_options}`. The reply goes out one word per
/// delta; a `max_tokens` below the word count cuts it there with `finish_reason: "length"`
/// (one word counts as one token).
///
/// Streamed answers, each event followed by a blank line: a role chunk, one chunk per word, a
/// chunk with `delta: {}` and `finish_reason`, a usage chunk when
/// `stream_options.include_usage`, then `data: [DONE]`. Before the second event comes one
/// `: keep-alive` comment line, and the first word's event is split across two writes, so
/// clients must buffer and skip comments.
pub(super) async fn chat_completions(
    State(inner): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = Route::ChatCompletions;
    let recorded = Recorded::new(&uri, &headers, &body);
    let request = recorded.json.clone();
    inner.record(route, recorded);
    let fault = match inner.admit(route, &headers) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    if let Some(r) = faults::before(fault.as_ref(), Dialect::OpenAi).await {
        return r;
    }

    let Some(request) = request.filter(Value::is_object) else {
        return bad("We could not parse the JSON body of your request.");
    };
    let Some(model) = request["model"].as_str().filter(|m| !m.is_empty()) else {
        return bad("you must provide a model parameter");
    };
    let messages = match request.get("messages").and_then(Value::as_array) {
        Some(m) if !m.is_empty() => m,
        Some(_) => return bad("Invalid 'messages': empty array. Expected at least 1 message."),
        None => return bad("Missing required parameter: 'messages'."),
    };
    let prompt_tokens: usize = messages
        .iter()
        .map(|m| {
            m["content"]
                .as_str()
                .map_or(0, |c| c.split_whitespace().count())
        })
        .sum();
    let limit = request
        .get("max_completion_tokens")
        .or_else(|| request.get("max_tokens"))
        .and_then(Value::as_u64);
    let scripted = if request["stream"].as_bool() == Some(true) {
        inner.next_tool_calls()
    } else {
        None
    };
    let mut pieces = match scripted {
        Some(_) => Vec::new(),
        None => word_pieces(&inner.reply()),
    };
    let mut finish = if scripted.is_some() {
        "tool_calls"
    } else {
        "stop"
    };
    if let Some(n) = limit.map(|n| n as usize).filter(|n| *n < pieces.len()) {
        pieces.truncate(n);
        finish = "length";
    }
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": pieces.len(),
        "total_tokens": prompt_tokens + pieces.len(),
    });
    let id = format!("chatcmpl-{}", inner.next_id());
    let created = unix_now();

    if request["stream"].as_bool() != Some(true) {
        let answer = json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": null,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": pieces.concat(), "refusal": null},
                "logprobs": null,
                "finish_reason": finish,
            }],
            "usage": usage,
        });
        let body = faults::whole(answer.to_string().into(), fault.as_ref());
        return respond("application/json", body);
    }

    let include_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
    let chunk = |choices: Value| {
        let mut v = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": null,
            "choices": choices,
        });
        if include_usage {
            v["usage"] = Value::Null;
        }
        v
    };
    let choice = |delta: Value, finish: Value| json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]);
    let event = |v: &Value| Bytes::from(format!("data: {v}\n\n"));

    let mut units: Vec<Vec<Bytes>> = vec![vec![event(&chunk(choice(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    )))]];
    for piece in &pieces {
        let e = event(&chunk(choice(json!({ "content": piece }), Value::Null)));
        units.push(vec![e]);
    }
    for delta in tool_call_deltas(scripted.as_deref().unwrap_or_default()) {
        let e = event(&chunk(choice(
            json!({ "tool_calls": [delta] }),
            Value::Null,
        )));
        units.push(vec![e]);
    }
    units.push(vec![event(&chunk(choice(json!({}), json!(finish))))]);
    if include_usage {
        let mut last = chunk(json!([]));
        last["usage"] = usage;
        units.push(vec![event(&last)]);
    }
    units.push(vec![Bytes::from_static(b"data: [DONE]\n\n")]);

    // The second event: a comment line first, and the event itself in two writes.
    let second = units[1].remove(0);
    let mid = second.len() / 2;
    units[1] = vec![
        Bytes::from_static(b": keep-alive\n\n"),
        second.slice(..mid),
        second.slice(mid..),
    ];
    if fault == Some(Fault::MalformedJson) {
        let broken = Bytes::from_static(b"data: {\"choices\":[{\"delta\":\n\n");
        units.insert(2, vec![broken]);
    }

    let guard = StreamGuard::open(&inner, route);
    let body = faults::streamed(units, fault.as_ref(), Some(guard));
    let mut response = respond("text/event-stream; charset=utf-8", body);
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, "no-cache".parse().unwrap());
    h.insert("x-request-id", format!("req_{id}").parse().unwrap());
    response
}

/// The `delta.tool_calls` entries of scripted calls: each call's id and name with empty
/// arguments, then its arguments in three pieces, the calls' pieces interleaved.
fn tool_call_deltas(calls: &[super::ToolCallScript]) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, (id, name, _)) in calls.iter().enumerate() {
        out.push(json!({"index": i, "id": id, "type": "function",
            "function": {"name": name, "arguments": ""}}));
    }
    let thirds: Vec<Vec<String>> = calls
        .iter()
        .map(|(_, _, args)| {
            let chars: Vec<char> = args.chars().collect();
            let n = chars.len().div_ceil(3).max(1);
            chars.chunks(n).map(|c| c.iter().collect()).collect()
        })
        .collect();
    for piece in 0..3 {
        for (i, parts) in thirds.iter().enumerate() {
            if let Some(p) = parts.get(piece) {
                out.push(json!({"index": i, "function": {"arguments": p}}));
            }
        }
    }
    out
}

/// A mono 16-bit WAV file of `samples` at `rate`.
pub(super) fn wav_bytes(samples: &[i16], rate: u32) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cursor = std::io::Cursor::new(Vec::new());
    {
        let mut writer = hound::WavWriter::new(&mut cursor, spec).unwrap();
        for s in samples {
            writer.write_sample(*s).unwrap();
        }
        writer.finalize().unwrap();
    }
    cursor.into_inner()
}

/// `POST /v1/audio/speech`: JSON `{model, input, voice, response_format, speed}`. `pcm` is
/// raw s16le mono at 24 kHz, `wav` the same in a WAV file; other formats (mp3, the default)
/// get 400. `speed` is recorded but does not change the audio.
pub(super) async fn speech(
    State(inner): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = Route::Speech;
    let recorded = Recorded::new(&uri, &headers, &body);
    let request = recorded.json.clone();
    inner.record(route, recorded);
    let fault = match inner.admit(route, &headers) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    if let Some(r) = faults::before(fault.as_ref(), Dialect::OpenAi).await {
        return r;
    }

    let Some(request) = request.filter(Value::is_object) else {
        return bad("We could not parse the JSON body of your request.");
    };
    if request["model"].as_str().is_none_or(str::is_empty) {
        return bad("you must provide a model parameter");
    }
    let Some(input) = request["input"].as_str().filter(|s| !s.is_empty()) else {
        return bad("Invalid 'input': must be a non-empty string.");
    };
    if request["voice"].as_str().is_none_or(str::is_empty) {
        return bad("Missing required parameter: 'voice'.");
    }
    let format = request["response_format"].as_str().unwrap_or("mp3");
    if format != "pcm" && format != "wav" {
        return bad(&format!(
            "response_format '{format}': only pcm and wav are served by this fake"
        ));
    }
    if fault == Some(Fault::MalformedJson) {
        return faults::malformed_error();
    }
    let samples = speech_samples(input.chars().count(), super::SPEECH_RATE);
    let (content_type, bytes) = if format == "pcm" {
        ("audio/pcm", pcm_bytes(&samples))
    } else {
        ("audio/wav", wav_bytes(&samples, super::SPEECH_RATE))
    };
    let guard = StreamGuard::open(&inner, route);
    respond(
        content_type,
        faults::streamed(audio_units(&bytes), fault.as_ref(), Some(guard)),
    )
}
