//! Shared helpers of the integration tests: the model (loaded once per test binary) and a
//! helper that runs one turn and collects the streamed text.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use voxwire::engines::llm::smollm::{
    default_model_path, ChatMessage, ChatSession, GenerateParams, GenerationStats, SmolLm,
};

pub fn model_path() -> PathBuf {
    default_model_path()
}

/// The model with default options (f32 weights, 2048 context), loaded once.
pub fn model() -> Arc<SmolLm> {
    static MODEL: OnceLock<Arc<SmolLm>> = OnceLock::new();
    MODEL
        .get_or_init(|| match SmolLm::load(&model_path()) {
            Ok(m) => Arc::new(m),
            Err(e) => panic!(
                "cannot load the model (run `voxwire models fetch`, or set VOXWIRE_LLM_MODEL): {e}"
            ),
        })
        .clone()
}

pub fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        temperature: 0.0,
        ..GenerateParams::default()
    }
}

/// Runs one turn without cancellation; returns the streamed reply and the figures.
pub fn reply(
    session: &mut ChatSession,
    messages: &[ChatMessage],
    params: &GenerateParams,
) -> (String, GenerationStats) {
    let mut text = String::new();
    let stats = session
        .generate(messages, params, &|| false, &mut |d| {
            text.push_str(d);
            true
        })
        .expect("generation failed");
    (text, stats)
}
