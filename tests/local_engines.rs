//! The server with every local engine (Whisper, SmolLM2, Piper) over real sockets: a spoken
//! sentence in, its words in the transcript, a reply streamed as text and speech out. And the
//! voice's speech transcribed back by the recogniser.

#[path = "stt_common/mod.rs"]
mod stt;

mod common;

use std::sync::Arc;

use common::*;
use serde_json::json;
use voxwire::engines::tts::piece::{speak_piece, Piece};
use voxwire::engines::tts::text::SentenceSplitter;
use voxwire::Config;

fn pcm16(samples: &[f32]) -> Vec<u8> {
    voxwire::audio::encode::pcm16_bytes(samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoken_question_gets_a_spoken_answer() {
    let server = start_with(Config::for_tests(), local_engines()).await;
    let (mut ws, _) = server.call("alice", json!({})).await;
    let mut speech = stt::espeak("Please schedule a meeting with the marketing team.");
    speech.extend(vec![0.0; 16_000]); // one second of silence ends the turn
    stream_pcm16(&mut ws, &pcm16(&speech), 16_000).await;
    let frames = recv_until(&mut ws, "metrics").await;
    let transcript = frames
        .iter()
        .find(|f| f["type"] == "transcript" && f["is_final"] == true)
        .unwrap();
    let heard = transcript["text"].as_str().unwrap();
    let wer = stt::wer("Please schedule a meeting with the marketing team.", heard);
    assert!(wer <= 0.25, "heard {heard:?} (WER {wer})");
    let reply = frames
        .iter()
        .find(|f| f["type"] == "response" && f["is_final"] == true)
        .unwrap();
    let reply = reply["text"].as_str().unwrap();
    assert!(reply.split_whitespace().count() >= 2, "reply {reply:?}");
    let audio: Vec<u8> = frames
        .iter()
        .filter(|f| f["type"] == "audio_response")
        .flat_map(|f| voxwire::audio::decode::base64_decode(f["audio"].as_str().unwrap()).unwrap())
        .collect();
    let rate = frames
        .iter()
        .find(|f| f["type"] == "audio_response")
        .unwrap()["sample_rate"]
        .as_u64()
        .unwrap();
    assert_eq!(rate, 22_050);
    let secs = audio.len() as f64 / 2.0 / rate as f64;
    assert!(secs > 0.5, "only {secs} s of reply audio");
    let m = frames.last().unwrap();
    for key in [
        "stt_ms",
        "llm_first_token_ms",
        "tts_first_audio_ms",
        "voice_to_voice_ms",
        "total_ms",
    ] {
        assert!(m[key].as_f64().is_some(), "metrics lack {key}: {m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_talk_with_local_engines() {
    let server = start_with(Config::for_tests(), local_engines()).await;
    let speech = stt::espeak("Can you tell me how to get to the nearest train station?");
    let wav = wav_file(&speech, 16_000);
    let r = reqwest::Client::new()
        .post(server.url("/api/voice/turn"))
        .bearer_auth(server.token("alice"))
        .header("content-type", "audio/wav")
        .body(wav)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let wer = stt::wer(
        "Can you tell me how to get to the nearest train station?",
        body["transcript"].as_str().unwrap(),
    );
    assert!(wer <= 0.25, "{body}");
    assert!(!body["response"].as_str().unwrap().is_empty());
    let audio = voxwire::audio::decode::base64_decode(body["audio"].as_str().unwrap()).unwrap();
    let decoded = voxwire::audio::decode::decode_wav(&audio).unwrap();
    assert!(
        decoded.samples.len() > 11_025,
        "reply shorter than half a second"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_voice_is_understood_by_the_recogniser() {
    let e = local_engines();
    let sentences = [
        "Hello, thanks for calling. How can I help you today?",
        "Your appointment is on Tuesday at 4 pm with Dr. Smith.",
        "We are open Monday to Friday, from nine in the morning to five in the evening.",
        "The total comes to $42.50, including tax.",
    ];
    let mut total = 0.0;
    for s in sentences {
        let mut audio = Vec::new();
        let mut stream = e.tts.synthesize(
            s.to_string(),
            None,
            tokio_util::sync::CancellationToken::new(),
        );
        while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
            audio.extend(chunk.unwrap());
        }
        let at16k =
            voxwire::audio::resample::resample(&audio, e.tts.sample_rate(), 16_000).unwrap();
        let heard = e
            .stt
            .transcribe(Arc::from(at16k), tokio_util::sync::CancellationToken::new())
            .await
            .unwrap()
            .text;
        // Compare with the sentence as it is spoken: numbers and abbreviations read out. Piper
        // samples noise, so each run's audio differs a little; the bounds allow for that.
        let spoken = voxwire::engines::tts::text::normalize(s);
        let wer = stt::wer(&spoken, &voxwire::engines::tts::text::normalize(&heard));
        println!("{wer:.3}  {s:?} -> {heard:?}");
        assert!(wer <= 0.3, "{s:?} was heard as {heard:?} (WER {wer})");
        total += wer;
    }
    let mean = total / sentences.len() as f64;
    println!("mean WER {mean:.3}");
    assert!(mean <= 0.15, "mean WER {mean}");
}

/// Speaks `piece` with the local voice the way a reply does (`speak_piece`), whole.
async fn speak(e: &voxwire::engines::Engines, piece: &Piece, after_open: bool) -> Vec<f32> {
    let cancel = tokio_util::sync::CancellationToken::new();
    let stream = speak_piece(&*e.tts, piece, after_open, None, cancel);
    futures::StreamExt::collect::<Vec<_>>(stream)
        .await
        .into_iter()
        .flat_map(|chunk| chunk.unwrap())
        .collect()
}

async fn transcribe(e: &voxwire::engines::Engines, audio: &[f32]) -> String {
    let at16k = voxwire::audio::resample::resample(audio, e.tts.sample_rate(), 16_000).unwrap();
    e.stt
        .transcribe(Arc::from(at16k), tokio_util::sync::CancellationToken::new())
        .await
        .unwrap()
        .text
}

/// Lower-case words, punctuation dropped.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// "10:30am" used to reach the voice as "ten thirty ay em", which Whisper heard as "ten
/// thirty, I am". The recogniser writes the time as digits ("10.30 AM", "10 30 a.m.") or words.
///
/// The voice adds random variation to every synthesis, and Whisper tiny now and then mishears
/// one of them ("fifteen" as "fifty" once in a few dozen runs), so the sentence is spoken three
/// times and at least two must be heard whole: a spoken form that is wrong fails all three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_and_prices_are_spoken_so_they_are_heard_right() {
    let e = local_engines();
    let text = "Your table is booked for 10:30am and costs $15.50.";
    let piece = Piece::new(text.into(), false);
    println!("spoken as {:?}", piece.spoken());
    let mut failures = Vec::new();
    for _ in 0..3 {
        let heard = transcribe(&e, &speak(&e, &piece, false).await).await;
        println!("heard {heard:?}");
        let w = words(&heard);
        let joined = w.concat();
        if !(joined.contains("1030") || joined.contains("tenthirty")) {
            failures.push(format!("no ten thirty in {heard:?}"));
        } else if w.windows(2).any(|p| p[0] == "i" && p[1] == "am") {
            failures.push(format!("\"I am\" in {heard:?}"));
        } else if !(joined.contains("15") || joined.contains("fifteen")) {
            failures.push(format!("no fifteen in {heard:?}"));
        }
    }
    assert!(
        failures.len() <= 1,
        "heard wrong in 2 of 3 or worse: {failures:?}"
    );
}

/// A reply cut after its first words is spoken as two pieces. The voice ends each piece with
/// a sentence's worth of silence (about 200-350 ms) and starts the next after about 50 ms; at a
/// cut between words both are trimmed, so the join is no longer than a pause between words,
/// has no click, and the whole is heard as one sentence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieces_cut_between_words_join_without_a_pause() {
    let e = local_engines();
    let rate = e.tts.sample_rate();
    let reply = "Let me check the calendar for you and see what is free tomorrow.";
    let mut splitter = SentenceSplitter::new();
    let mut chunks: Vec<String> = reply
        .split_inclusive(' ')
        .flat_map(|t| splitter.push(t))
        .collect();
    chunks.extend(splitter.finish());
    assert_eq!(
        chunks,
        vec![
            "Let me check the calendar",
            "for you and see what is free tomorrow."
        ]
    );
    let first = Piece::new(chunks[0].clone(), true);
    let second = Piece::new(chunks[1].clone(), false);
    assert!(first.open);
    let a = speak(&e, &first, false).await;
    let b = speak(&e, &second, true).await;
    let quiet = |s: &&f32| s.abs() < 0.01;
    let ms = |n: usize| n as f64 * 1000.0 / f64::from(rate);
    let gap = ms(a.iter().rev().take_while(quiet).count() + b.iter().take_while(quiet).count());
    // For comparison, the same pieces straight from the voice (a full stop at the cut).
    let raw = |text: &str| {
        let s = e.tts.synthesize(text.into(), None, Default::default());
        async move {
            futures::StreamExt::collect::<Vec<_>>(s)
                .await
                .into_iter()
                .flat_map(|c| c.unwrap())
                .collect::<Vec<f32>>()
        }
    };
    let (ra, rb) = (raw(&chunks[0]).await, raw(&chunks[1]).await);
    let raw_gap =
        ms(ra.iter().rev().take_while(quiet).count() + rb.iter().take_while(quiet).count());
    println!("silence at the join: {gap:.0} ms (untrimmed: {raw_gap:.0} ms)");
    assert!(gap <= 80.0, "{gap} ms of silence at the join");
    let mut joined = a.clone();
    joined.extend(&b);
    let around = &joined[a.len() - a.len().min(rate as usize / 20)..a.len() + rate as usize / 50];
    let step = around
        .windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .fold(0.0, f32::max);
    println!("largest step within 50 ms before and 20 ms after the join: {step:.4}");
    assert!(step < 0.05, "a click at the join: a step of {step}");
    let heard = transcribe(&e, &joined).await;
    let wer = stt::wer(reply, &heard);
    println!("heard {heard:?} (WER {wer:.2})");
    assert!(wer <= 0.25, "{reply:?} was heard as {heard:?} (WER {wer})");
}
