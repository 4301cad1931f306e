//! The doors into a call: each adapter translates its wire format to call inputs and call
//! events back. The voxwire WebSocket (`ws/`), push-to-talk over HTTP (`ptt.rs`), and the
//! operators' monitor stream of every call of their org (`monitor.rs`), their socket on one
//! live call (`operator.rs`), and phone calls through Twilio Media Streams (`twilio/`) and Telnyx
//! media streaming (`telnyx/`), which share their session (`phone/`).

pub mod monitor;
pub mod operator;
pub mod phone;
pub mod ptt;
pub mod telnyx;
pub mod twilio;
pub mod ws;
