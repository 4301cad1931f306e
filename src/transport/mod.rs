//! The doors into a call: each adapter translates its wire format to call inputs and call
//! events back. The voxwire WebSocket (`ws/`) and push-to-talk over HTTP (`ptt.rs`).

pub mod ptt;
pub mod ws;
