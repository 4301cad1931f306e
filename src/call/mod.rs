//! Calls: the registry of calls and their histories, the per-connection actor that runs a call,
//! and the turn pipeline (speech-to-text, language model, text-to-speech) with cancellation.

pub mod caller;
pub mod history;
pub mod listen;
pub mod playback;
pub mod reply;
pub mod session;
pub mod store;
pub mod turn;

pub use store::{CallStore, Owner};
