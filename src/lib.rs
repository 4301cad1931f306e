//! voxwire: a real-time voice agent server. A client opens one authenticated WebSocket, streams
//! microphone audio, and gets transcripts, streamed replies and speech back; the same server
//! offers an HTTP push-to-talk route and serves the browser demo page.
// `unsafe` is denied everywhere but in the LLM's AVX2 kernels (engines/llm/smollm/quant/avx2.rs).
#![deny(unsafe_code)]

pub mod agents;
pub mod audio;
pub mod auth;
pub mod call;
pub mod config;
pub mod engines;
pub mod flow;
pub mod fuzzing;
pub mod http;
pub mod keys;
pub mod live;
pub mod loadgen;
pub mod metrics;
pub mod models;
pub mod protocol;
pub mod redact;
pub mod retention;
pub mod server;
pub mod store;
pub mod summary;
pub mod tools;
pub mod transport;
pub mod webhooks;

pub use config::Config;
pub use server::{run, AppState};
