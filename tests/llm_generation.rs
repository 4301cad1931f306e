//! Real generations with SmolLM2-135M: a sensible answer, cancellation within one token,
//! KV-cache reuse across turns giving the same reply as a fresh prompt, history trimming,
//! context limits and independent concurrent sessions.

#[path = "llm_common/mod.rs"]
mod common;

use std::cell::Cell;
use std::sync::Arc;

use common::{greedy, model, reply};
use voxwire::engines::llm::smollm::{
    ChatMessage, GenerateParams, LlmError, LoadOptions, SmolLm, StopReason,
};

const SYSTEM: &str = "You are a helpful assistant. Answer briefly.";

#[test]
fn answers_a_simple_question_in_english() {
    let model = model();
    let mut session = model.new_session();
    let msgs = [
        ChatMessage::system(SYSTEM),
        ChatMessage::user("What is the capital of France? Answer in one sentence."),
    ];
    let (text, stats) = reply(&mut session, &msgs, &greedy(48));
    println!("{text:?} {stats:?}");
    assert!(!text.trim().is_empty());
    assert!(stats.generated_tokens >= 1 && stats.generated_tokens <= 48);
    assert!(text.contains(' '));
    let letters = text.chars().filter(|c| c.is_ascii_alphabetic()).count();
    assert!(
        letters * 2 > text.chars().count(),
        "mostly letters: {text:?}"
    );
    assert!(text.contains("Paris"), "{text:?}");
    assert_eq!(stats.stop_reason, StopReason::EndOfTurn);
    assert_eq!(stats.cached_tokens, 0);
    assert!(stats.first_token_ms > 0.0 && stats.total_ms >= stats.first_token_ms);
}

#[test]
fn sampling_with_a_seed_is_reproducible() {
    let model = model();
    let msgs = [
        ChatMessage::system(SYSTEM),
        ChatMessage::user("Name three fruits."),
    ];
    let params = GenerateParams {
        max_tokens: 24,
        temperature: 0.8,
        top_p: 0.9,
        seed: 7,
        ..GenerateParams::default()
    };
    let (a, _) = reply(&mut model.new_session(), &msgs, &params);
    let (b, _) = reply(&mut model.new_session(), &msgs, &params);
    assert_eq!(a, b);
    assert!(!a.is_empty());
}

#[test]
fn cancellation_stops_within_one_token() {
    let model = model();
    let mut session = model.new_session();
    let msgs = [
        ChatMessage::system(SYSTEM),
        ChatMessage::user("Write a long story about a dragon who learns to bake bread."),
    ];
    for n in [1usize, 5] {
        let deltas = Cell::new(0usize);
        let mut text = String::new();
        let stats = session
            .generate(&msgs, &greedy(64), &|| deltas.get() >= n, &mut |d| {
                deltas.set(deltas.get() + 1);
                text.push_str(d);
                true
            })
            .unwrap();
        assert_eq!(stats.stop_reason, StopReason::Cancelled, "{text:?}");
        assert!(
            stats.generated_tokens == n || stats.generated_tokens == n + 1,
            "cancelled after {n} deltas but generated {}",
            stats.generated_tokens
        );
    }
    // Cancelled before anything runs: no tokens.
    let stats = session
        .generate(&msgs, &greedy(64), &|| true, &mut |_| true)
        .unwrap();
    assert_eq!(
        (stats.stop_reason, stats.generated_tokens),
        (StopReason::Cancelled, 0)
    );
    // The callback refusing more text also stops at once.
    let stats = session
        .generate(&msgs, &greedy(64), &|| false, &mut |_| false)
        .unwrap();
    assert_eq!(
        (stats.stop_reason, stats.generated_tokens),
        (StopReason::Cancelled, 1)
    );
}

#[test]
fn max_tokens_bounds_the_reply() {
    let model = model();
    let msgs = [
        ChatMessage::system(SYSTEM),
        ChatMessage::user("Count from one to fifty in words."),
    ];
    let (_, stats) = reply(&mut model.new_session(), &msgs, &greedy(3));
    assert_eq!(stats.stop_reason, StopReason::MaxTokens);
    assert_eq!(stats.generated_tokens, 3);
}

#[test]
fn kv_reuse_gives_the_same_reply_as_a_fresh_prompt() {
    let model = model();
    let mut session = model.new_session();
    let mut history = vec![ChatMessage::system(SYSTEM)];
    let users = [
        "Hi! What is your name?",
        "What is two plus two?",
        "Tell me one fact about the moon.",
    ];
    let mut last = String::new();
    for (turn, user) in users.iter().enumerate() {
        history.push(ChatMessage::user(*user));
        let (text, stats) = reply(&mut session, &history, &greedy(40));
        println!("turn {turn}: {text:?} {stats:?}");
        if turn > 0 {
            // Everything up to the new user message was already in the cache.
            assert!(
                stats.cached_tokens + 12 >= stats.prompt_tokens - 20,
                "{stats:?}"
            );
            assert!(stats.cached_tokens > 20, "{stats:?}");
        }
        last = text.clone();
        history.push(ChatMessage::assistant(text));
    }
    history.pop();
    let (fresh, stats) = reply(&mut model.new_session(), &history, &greedy(40));
    assert_eq!(stats.cached_tokens, 0);
    assert_eq!(fresh, last);
}

#[test]
fn changed_history_resets_the_cache_and_stays_correct() {
    let model = model();
    let mut session = model.new_session();
    let mut history = vec![
        ChatMessage::system(SYSTEM),
        ChatMessage::user("My favourite colour is green."),
    ];
    let (first, _) = reply(&mut session, &history, &greedy(32));
    history.push(ChatMessage::assistant(first));
    history.push(ChatMessage::user("What is the capital of Italy?"));
    let (_, stats) = reply(&mut session, &history, &greedy(32));
    let long_cache = stats.cached_tokens;

    // The server trimmed the old turns: only the system prompt is still a shared prefix.
    let trimmed = [
        ChatMessage::system(SYSTEM),
        ChatMessage::user("What is the capital of Spain?"),
    ];
    let (text, stats) = reply(&mut session, &trimmed, &greedy(32));
    assert!(stats.cached_tokens < long_cache);
    assert!(stats.cached_tokens <= 20, "{stats:?}");
    let (fresh, _) = reply(&mut model.new_session(), &trimmed, &greedy(32));
    assert_eq!(text, fresh);

    // An assistant reply cut short (barge-in) is also handled: prefix kept up to the cut.
    let mut cut = history.clone();
    let half: String = cut[2]
        .content
        .chars()
        .take(cut[2].content.chars().count() / 2)
        .collect();
    cut[2].content = half;
    let (text, _) = reply(&mut session, &cut, &greedy(16));
    let (fresh, _) = reply(&mut model.new_session(), &cut, &greedy(16));
    assert_eq!(text, fresh);
}

#[test]
fn long_conversations_drop_old_turns_to_fit_the_context() {
    let options = LoadOptions {
        max_context: 256,
        ..LoadOptions::default()
    };
    let small = Arc::new(SmolLm::load_with(&common::model_path(), &options).unwrap());
    let mut session = small.new_session();
    let mut history = vec![ChatMessage::system(SYSTEM)];
    let mut dropped_seen = false;
    for i in 0..8 {
        history.push(ChatMessage::user(format!(
            "Turn {i}: please remember the number {}. What is {} plus one?",
            i * 7,
            i * 3
        )));
        let (text, stats) = reply(&mut session, &history, &greedy(24));
        assert!(
            stats.prompt_tokens + stats.generated_tokens <= 256,
            "{stats:?}"
        );
        if stats.dropped_messages > 0 {
            dropped_seen = true;
        }
        history.push(ChatMessage::assistant(text));
    }
    assert!(dropped_seen);

    // A single message larger than the window is a clear error.
    let huge = [
        ChatMessage::system(SYSTEM),
        ChatMessage::user("word ".repeat(400)),
    ];
    let err = session
        .generate(&huge, &greedy(8), &|| false, &mut |_| true)
        .unwrap_err();
    assert!(matches!(err, LlmError::PromptTooLong { .. }), "{err}");
}

#[test]
fn sessions_run_concurrently_and_independently() {
    let model = model();
    let msgs = vec![
        ChatMessage::system(SYSTEM),
        ChatMessage::user("Give me a synonym for happy."),
    ];
    let (expected, _) = reply(&mut model.new_session(), &msgs, &greedy(16));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let model = Arc::clone(&model);
            let msgs = msgs.clone();
            std::thread::spawn(move || reply(&mut model.new_session(), &msgs, &greedy(16)).0)
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), expected);
    }
}

#[test]
fn variables_fill_the_system_prompt() {
    let model = model();
    let mut session = model.new_session();
    session.set_variables([("business".to_string(), "Bright Smile Dental".to_string())].into());
    let msgs = [
        ChatMessage::system(
            "You are the receptionist of {{business}}. Always say the business name.",
        ),
        ChatMessage::user("Hello, which business is this?"),
    ];
    let (text, _) = reply(&mut session, &msgs, &greedy(32));
    println!("{text:?}");
    assert!(!text.is_empty());
    assert!(!text.contains("{{"));
}
