//! What the phone doors (Twilio, Telnyx) share: a carrier's media socket carries 8 kHz mu-law
//! in base64 JSON frames, keypad presses, playback marks and a stop. Each carrier parses its
//! own JSON into [`PhoneIn`] and writes its own frames through [`Wire`]; the stream pass
//! (`pass.rs`), the session loop (`session.rs`) and the reply framing (`output.rs`) are one.

pub mod output;
pub mod pass;
pub mod session;

use std::sync::Arc;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::Response;

pub use pass::{Carrier, StreamPass};
pub use session::Outcome;

use crate::http::error::AppError;
use crate::protocol::ErrorCode;
use crate::server::AppState;
use crate::transport::ws::socket::{self, Parse, HARD_LIMIT_FACTOR};
use crate::transport::ws::Outbound;

/// The largest text frame taken from a carrier before it is refused (a 20 ms `media` frame is
/// about 400 bytes, a `start` under 2 KB); four times this closes the socket.
pub const MAX_FRAME_BYTES: usize = 8 * 1024;
/// Frames queued for the carrier (a second of 20 ms audio is 50).
const OUT_BUFFER: usize = 512;

/// A carrier's message, in the terms the call needs.
#[derive(Debug)]
pub enum PhoneIn {
    /// The stream begins: which call it carries and in what format.
    Start(PhoneStart),
    /// Base64 mu-law from the caller (other tracks are dropped by the parser).
    Media(String),
    /// One key pressed.
    Dtmf(String),
    /// A mark the server sent, echoed once the audio before it has played.
    Mark(String),
    /// The carrier ends the stream: the caller hung up (or the call moved on).
    Stop,
    /// Frames the server does not read (`connected`, errors, future events).
    Other,
}

#[derive(Debug)]
pub struct PhoneStart {
    /// The carrier's id of this stream: frames back name it.
    pub stream_id: String,
    /// The carrier's id of the call: the pass must name it.
    pub call_id: String,
    /// The stream pass, when the carrier hands it back in `start`.
    pub pass: Option<String>,
    /// The audio format as the carrier names it, and whether it is 8 kHz mono mu-law.
    pub format: String,
    pub mulaw_8k: bool,
}

/// Who answers a call to `called`: the carrier's configured numbers first, then the agents'
/// `phone_numbers`; `(None, None)` (the default org's default agent) for a number in neither.
pub fn who_answers(
    state: &AppState,
    configured: &std::collections::HashMap<String, crate::config::NumberRoute>,
    called: &str,
) -> (Option<String>, Option<String>) {
    match configured.get(called.trim()) {
        Some(r) => (r.org.clone(), Some(r.agent.clone())),
        None => match state.agents.for_number(called) {
            Some((org, agent)) => (org, Some(agent)),
            None => (None, None),
        },
    }
}

/// 503 `not_configured`, saying what to set.
pub fn not_configured(state: &AppState, message: &str) -> AppError {
    state.metrics.error(ErrorCode::NotConfigured);
    AppError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::NotConfigured,
        message,
    )
}

/// 403 `forbidden`: a webhook the carrier did not sign.
pub fn forbidden(state: &AppState, message: &str) -> AppError {
    state.metrics.error(ErrorCode::Forbidden);
    AppError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
}

/// The JSON both carriers use for their messages on the media socket: `event` names the
/// message; `media`, `dtmf` and `mark` carry the same fields. Only `start` differs (`S`).
pub mod json {
    use serde::Deserialize;

    use super::{PhoneIn, PhoneStart};
    use crate::protocol::ErrorCode;

    /// A message from the carrier, its `start` being `S`.
    #[derive(Debug, Deserialize)]
    #[serde(tag = "event", rename_all = "lowercase")]
    pub enum CarrierIn<S> {
        Start(S),
        Media {
            media: Media,
        },
        Dtmf {
            dtmf: Dtmf,
        },
        /// A mark the server sent, echoed once the audio before it has played.
        Mark {
            mark: Mark,
        },
        Stop,
        /// `connected`, errors and events this server does not read.
        #[serde(other)]
        Other,
    }

    /// Parses one text frame of `carrier`'s, its `start` read by `start`.
    pub fn parse<S: serde::de::DeserializeOwned>(
        text: &str,
        carrier: &str,
        start: fn(S) -> PhoneStart,
    ) -> Result<Box<PhoneIn>, (ErrorCode, String)> {
        let msg: CarrierIn<S> = serde_json::from_str(text).map_err(|e| {
            (
                ErrorCode::InvalidMessage,
                format!("not a {carrier} message: {e}"),
            )
        })?;
        Ok(Box::new(match msg {
            CarrierIn::Start(s) => PhoneIn::Start(start(s)),
            CarrierIn::Media { media } if media.from_caller() => PhoneIn::Media(media.payload),
            CarrierIn::Dtmf { dtmf } => PhoneIn::Dtmf(dtmf.digit),
            CarrierIn::Mark { mark } => PhoneIn::Mark(mark.name),
            CarrierIn::Stop => PhoneIn::Stop,
            CarrierIn::Media { .. } | CarrierIn::Other => PhoneIn::Other,
        }))
    }

    #[derive(Debug, Deserialize)]
    pub struct Media {
        /// Whose audio: `inbound` (the caller); a bidirectional stream sends nothing else.
        #[serde(default)]
        pub track: Option<String>,
        /// Base64 mu-law at 8 kHz.
        pub payload: String,
    }

    impl Media {
        /// Whether this is the caller's audio (Telnyx may name the track `inbound_track`).
        pub fn from_caller(&self) -> bool {
            self.track
                .as_deref()
                .is_none_or(|t| t == "inbound" || t == "inbound_track")
        }
    }

    #[derive(Debug, Deserialize)]
    pub struct Dtmf {
        pub digit: String,
    }

    #[derive(Debug, Deserialize)]
    pub struct Mark {
        pub name: String,
    }
}

/// One client for the carriers' REST APIs (its connections are kept), following no redirect.
pub fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default()
    })
}

/// How a carrier writes frames for one stream.
pub trait Wire: Send {
    /// Base64 mu-law for the caller.
    fn media(&self, payload: &str) -> String;
    /// A mark, echoed by the carrier once the audio sent before it has played.
    fn mark(&self, name: &str) -> String;
    /// Drops the audio the carrier still holds for the caller.
    fn clear(&self) -> String;
}

/// One phone door: its carrier, how it parses frames and makes its [`Wire`].
#[derive(Clone, Copy)]
pub struct Door {
    pub carrier: Carrier,
    pub parse: Parse<Box<PhoneIn>>,
    pub wire: fn(stream_id: &str) -> Box<dyn Wire>,
}

/// Upgrades a carrier's media socket and runs its session; `on_end` is told how it ended
/// (with the pass that opened it) while a socket the call ended on is still open (a Twilio
/// call is redirected before its stream closes), which is then closed.
pub fn upgrade<F, Fut>(
    state: Arc<AppState>,
    ws: WebSocketUpgrade,
    door: Door,
    url_pass: Option<StreamPass>,
    on_end: F,
) -> Response
where
    F: FnOnce(Arc<AppState>, Outcome) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let hard_limit = MAX_FRAME_BYTES * HARD_LIMIT_FACTOR;
    ws.read_buffer_size(crate::transport::ws::READ_BUFFER_BYTES)
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| {
            // Tracked, so that shutdown waits for the call's end.
            let sessions = state.sessions.clone();
            sessions.track_future(connection(socket, state, door, url_pass, on_end))
        })
}

async fn connection<F, Fut>(
    ws: WebSocket,
    state: Arc<AppState>,
    door: Door,
    url_pass: Option<StreamPass>,
    on_end: F,
) where
    F: FnOnce(Arc<AppState>, Outcome) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let session_id = format!("{}_{:016x}", door.carrier.as_str(), rand::random::<u64>());
    state.metrics.connections.inc();
    let (inbound, out, halves) = socket::split(
        ws,
        door.parse,
        MAX_FRAME_BYTES,
        state.config.net.clone(),
        session_id,
        OUT_BUFFER,
    );
    let outcome = session::run(
        session::Setup {
            svc: state.call_services.clone(),
            auth: state.auth.clone(),
            door,
            url_pass,
        },
        inbound,
        out,
        state.shutdown.child_token(),
    )
    .await;
    let open = outcome.open.clone();
    on_end(state, outcome).await;
    if let Some(out) = open {
        let _ = out
            .send(Outbound::Close(1000, "call ended".to_string()))
            .await;
    }
    halves.finish().await;
}
