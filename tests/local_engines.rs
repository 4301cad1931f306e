//! The server with every local engine (Whisper, SmolLM2, Piper) over real sockets: a spoken
//! sentence in, its words in the transcript, a reply streamed as text and speech out. And the
//! voice's speech transcribed back by the recogniser.

#[path = "stt_common/mod.rs"]
mod stt;

mod common;

use std::sync::Arc;

use common::*;
use serde_json::json;
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
