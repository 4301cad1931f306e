//! First words first, on the real local model (SmolLM2, packed weights): with one compute seat,
//! a reply whose first words are still to be written gets the seat from another reply's tail
//! between two tokens; a reply that is all tail waits until the seat is free.

#[path = "llm_common/mod.rs"]
mod common;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use voxwire::engines::cpu::FirstWords;
use voxwire::engines::llm::local::{SmolLmEngine, SmolLmSettings};
use voxwire::engines::llm::smollm::WeightFormat;
use voxwire::engines::llm::{ChatMessage, ChatRequest, LanguageModel, Role};

fn engine() -> SmolLmEngine {
    let path = common::model_path();
    SmolLmEngine::load(&SmolLmSettings {
        model: &path,
        max_sessions: 8,
        concurrency: 1,
        max_waiting: 8,
        weights: WeightFormat::Packed,
        threads: 0,
    })
    .expect("the local model loads (run `voxwire models fetch`)")
}

fn request(session: &str, text: &str, max_tokens: usize, words: FirstWords) -> ChatRequest {
    ChatRequest {
        session_id: session.into(),
        system: "You are a helpful assistant.".into(),
        messages: vec![ChatMessage::new(Role::User, text.to_string())],
        max_tokens,
        temperature: 0.0,
        json: false,
        tokens: None,
        tools: None,
        first_words: Some(words),
    }
}

/// Which reply each delta came from, in the order they came.
async fn race(second_words: FirstWords) -> Vec<char> {
    let llm = std::sync::Arc::new(engine());
    let (tx, mut rx) = mpsc::unbounded_channel();
    // A long reply: its first words are written after its first delta, the rest is its tail.
    let a_words = FirstWords::default();
    let long = request(
        "a",
        "Count from one to one hundred in words, separated by commas.",
        160,
        a_words.clone(),
    );
    let mut a = llm.stream(long, CancellationToken::new());
    let ta = tx.clone();
    let first_a = tokio::spawn(async move {
        let mut n = 0;
        while let Some(delta) = a.next().await {
            delta.expect("reply a");
            a_words.written();
            n += 1;
            ta.send('a').unwrap();
        }
        n
    });
    // Once the long reply is into its tail, the second one comes.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(rx.recv().await.unwrap());
    }
    let short = request("b", "Say hello.", 12, second_words);
    let mut b = llm.stream(short, CancellationToken::new());
    let tb = tx.clone();
    let second = tokio::spawn(async move {
        let mut n = 0;
        while let Some(delta) = b.next().await {
            delta.expect("reply b");
            n += 1;
            tb.send('b').unwrap();
        }
        n
    });
    drop(tx);
    let (na, nb) = (first_a.await.unwrap(), second.await.unwrap());
    while let Some(c) = rx.recv().await {
        seen.push(c);
    }
    assert_eq!(seen.len(), na + nb);
    assert!(nb >= 2, "the short reply has words: {nb}");
    seen
}

/// `a` before the first `b`, then the run of `b`s, then `a` again: how many of each.
fn runs(seen: &[char]) -> Vec<(char, usize)> {
    let mut out: Vec<(char, usize)> = Vec::new();
    for &c in seen {
        match out.last_mut() {
            Some((last, n)) if *last == c => *n += 1,
            _ => out.push((c, 1)),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_words_are_written_before_another_replys_tail() {
    let seen = race(FirstWords::default()).await;
    let r = runs(&seen);
    println!("{r:?}");
    // The long reply's tail gave up the seat between two tokens: the short reply was written
    // whole, then the tail went on.
    assert_eq!(r.len(), 3, "{r:?}");
    assert_eq!((r[0].0, r[1].0, r[2].0), ('a', 'b', 'a'), "{r:?}");
    assert!(r[2].1 >= 5, "the rest of the long reply came after: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_with_no_first_words_waits_for_the_seat() {
    let seen = race(FirstWords::background()).await;
    let r = runs(&seen);
    println!("{r:?}");
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!((r[0].0, r[1].0), ('a', 'b'), "{r:?}");
}
