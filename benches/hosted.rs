//! What the hosted-engine layer itself costs, against an in-process server that answers at once
//! (so the figures are voxwire's overhead, not a provider's): time to the first reply token and
//! to the first audio, many concurrent streams, and how long a fallback takes when the first
//! provider fails, is unreachable, or is benched after failing.
//!
//! `cargo bench --bench hosted`

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use voxwire::engines::llm::fallback::FallbackLlm;
use voxwire::engines::llm::openai::OpenAiLlm;
use voxwire::engines::llm::{ChatMessage, ChatRequest, LanguageModel};
use voxwire::engines::providers::Providers;
use voxwire::engines::tts::openai::OpenAiTts;
use voxwire::engines::tts::TextToSpeech;

const REPLY: &[&str] = &[
    "Hello ", "there. ", "How ", "can ", "I ", "help ", "you ", "today?",
];

async fn broken() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        r#"{"error":{"message":"down"}}"#,
    )
        .into_response()
}

async fn chat() -> Response {
    let mut events: Vec<String> = REPLY
        .iter()
        .map(|w| {
            format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{w}\"}}}}]}}\n\n")
        })
        .collect();
    events.push("data: [DONE]\n\n".into());
    let body = futures::stream::iter(events.into_iter().map(Ok::<_, std::io::Error>));
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap_or_default()
}

async fn speech() -> Response {
    // One second of 24 kHz audio in 4800-byte chunks.
    let chunks = (0..10).map(|_| Ok::<_, std::io::Error>(vec![0u8; 4800]));
    Response::builder()
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap_or_default()
}

fn providers(base: &str, bad: &str) -> Providers {
    let text = format!(
        r#"
[fast]
kind = "openai"
base_url = "{base}/v1"
llm_model = "m"
tts_model = "t"
tts_voice = "v"
retries = 2
backoff_ms = 50

[broken]
kind = "openai"
base_url = "{bad}/v1"
llm_model = "m"
retries = 0

[broken-retried]
kind = "openai"
base_url = "{bad}/v1"
llm_model = "m"
retries = 2
backoff_ms = 50

[unreachable]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
llm_model = "m"
retries = 0
"#
    );
    Providers::parse(&text).expect("bench providers parse")
}

fn request() -> ChatRequest {
    ChatRequest {
        session_id: "bench".into(),
        system: "Be brief.".into(),
        messages: vec![ChatMessage::user("hi")],
        max_tokens: 40,
        temperature: 0.0,
        json: false,
        tokens: None,
        tools: None,
        first_words: None,
    }
}

/// Milliseconds to the first delta and to the end of one reply.
async fn one_reply(llm: &dyn LanguageModel) -> (f64, f64) {
    let t = Instant::now();
    let mut s = llm.stream(request(), CancellationToken::new());
    let mut first = None;
    while let Some(d) = s.next().await {
        d.expect("reply");
        first.get_or_insert_with(|| t.elapsed().as_secs_f64() * 1000.0);
    }
    (
        first.unwrap_or(f64::NAN),
        t.elapsed().as_secs_f64() * 1000.0,
    )
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn report(label: &str, v: &mut [f64]) {
    println!(
        "{label:<58} p50 {:>7.2} ms  p95 {:>7.2} ms  p99 {:>7.2} ms  (n={})",
        pct(v, 0.5),
        pct(v, 0.95),
        pct(v, 0.99),
        v.len()
    );
}

/// Serves `app` on a free loopback port; returns its base URL.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let base = serve(
            Router::new()
                .route("/v1/chat/completions", post(chat))
                .route("/v1/audio/speech", post(speech)),
        )
        .await;
        let bad = serve(Router::new().route("/v1/chat/completions", post(broken))).await;
        let p = providers(&base, &bad);
        let llm = OpenAiLlm::new("fast", p.get("fast").expect("fast")).expect("llm");
        let tts = OpenAiTts::new("fast", p.get("fast").expect("fast")).expect("tts");
        println!(
            "hosted engine overhead against a local server that answers at once ({} cores)",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );

        for _ in 0..20 {
            one_reply(&llm).await;
        }
        let (mut first, mut total): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
        for _ in 0..500 {
            let (f, t) = one_reply(&llm).await;
            first.push(f);
            total.push(t);
        }
        report("chat completions: first token", &mut first);
        report("chat completions: whole reply (8 events)", &mut total);

        let mut first_audio = Vec::new();
        for _ in 0..300 {
            let t = Instant::now();
            let mut s = tts.synthesize("Hello there.".into(), None, CancellationToken::new());
            s.next().await.expect("audio").expect("audio");
            first_audio.push(t.elapsed().as_secs_f64() * 1000.0);
            while s.next().await.is_some() {}
        }
        report("speech: first audio (1024 samples)", &mut first_audio);

        for calls in [50usize, 200] {
            let llm = Arc::new(OpenAiLlm::new("fast", p.get("fast").expect("fast")).expect("llm"));
            let t = Instant::now();
            let tasks: Vec<_> = (0..calls)
                .map(|_| {
                    let llm = llm.clone();
                    tokio::spawn(async move { one_reply(llm.as_ref()).await })
                })
                .collect();
            let mut firsts = Vec::new();
            for task in tasks {
                firsts.push(task.await.expect("task").0);
            }
            report(
                &format!("{calls} concurrent replies: first token"),
                &mut firsts,
            );
            println!(
                "{:<58} {:.0} ms for all",
                format!("{calls} concurrent replies: wall time"),
                t.elapsed().as_secs_f64() * 1000.0
            );
        }

        // Fallback costs: first token from the second member of a chain.
        let chain = |first: &str, cooldown: Duration| {
            let members: Vec<Arc<dyn LanguageModel>> = vec![
                Arc::new(OpenAiLlm::new(first, p.get(first).expect("p")).expect("llm")),
                Arc::new(OpenAiLlm::new("fast", p.get("fast").expect("p")).expect("llm")),
            ];
            FallbackLlm::new(members, cooldown)
        };
        let cases = [
            (
                "fallback: first member unreachable (no retries)",
                "unreachable",
                Duration::ZERO,
            ),
            (
                "fallback: first member answers 500 (no retries)",
                "broken",
                Duration::ZERO,
            ),
            (
                "fallback: first member answers 500 (2 retries, 50 ms backoff)",
                "broken-retried",
                Duration::ZERO,
            ),
            (
                "fallback: first member benched after failing",
                "broken",
                Duration::from_secs(3600),
            ),
        ];
        for (label, first, cooldown) in cases {
            let c = chain(first, cooldown);
            let mut v = Vec::new();
            for _ in 0..if first == "broken-retried" { 20 } else { 200 } {
                let t = Instant::now();
                let mut s = c.stream(request(), CancellationToken::new());
                if let Some(Ok(_)) = s.next().await {
                    v.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                while s.next().await.is_some() {}
            }
            report(label, &mut v);
        }
    });
}
