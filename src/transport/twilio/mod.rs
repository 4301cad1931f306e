//! Phone calls through Twilio Media Streams, one more door into the call core.
//!
//! `POST /telephony/twilio/voice` is the webhook Twilio calls for an incoming call: it checks
//! `X-Twilio-Signature` against `TWILIO_AUTH_TOKEN` and the public URL (`VOXWIRE_PUBLIC_URL`),
//! picks who answers from the called number (`VOXWIRE_TWILIO_NUMBERS`) and answers TwiML that
//! connects the call to `GET /telephony/twilio/media` with a short-lived stream pass. The media
//! socket starts the call only for a stream that brings a valid pass, then translates between
//! Twilio's messages (`wire.rs`) and the call, through the session all phone doors share
//! (`transport::phone`).

mod outbound;
pub mod signature;
mod transfer;
mod wire;

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Form;
use tracing::{info, warn};

pub use outbound::place;

use crate::http::error::AppError;
use crate::server::AppState;
use crate::transport::phone::{self, forbidden, Carrier, Door, StreamPass};

/// Where Twilio posts an incoming call.
pub const VOICE_PATH: &str = "/telephony/twilio/voice";
/// Where Twilio opens the call's media stream.
pub const MEDIA_PATH: &str = "/telephony/twilio/media";

/// The largest webhook body taken (Twilio's are about 1 KB).
pub const MAX_FORM_BYTES: usize = 16 * 1024;
/// Twilio's media socket, as the phone session sees it.
const DOOR: Door = Door {
    carrier: Carrier::Twilio,
    parse: wire::parse,
    wire: wire::TwilioWire::boxed,
};

/// Twilio's auth token and the public URL, or 503 `not_configured`.
fn configured(state: &AppState) -> Result<(&[u8], &str), AppError> {
    let t = &state.config;
    match (&t.telephony.twilio_token, &t.net.public_url) {
        (Some(token), Some(url)) => Ok((token.expose(), url.as_str())),
        _ => Err(phone::not_configured(
            state,
            "phone calls are not configured: set TWILIO_AUTH_TOKEN and VOXWIRE_PUBLIC_URL",
        )),
    }
}

/// Escapes text for an XML attribute.
fn xml_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// TwiML that connects the call to the media socket with its pass.
fn connect_twiml(url: &str, token: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Connect><Stream url=\"{}\">\
         <Parameter name=\"token\" value=\"{}\"/></Stream></Connect></Response>",
        xml_attr(url),
        xml_attr(token)
    )
}

/// `POST /telephony/twilio/voice`: Twilio's webhook for an incoming call.
pub async fn voice(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    match answer(&state, &uri, &headers, form) {
        Ok(twiml) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/xml")], twiml).into_response(),
        Err(e) => e.into_response(),
    }
}

fn answer(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<String, AppError> {
    let (token, public_url) = configured(state)?;
    let Some(signature) = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return Err(forbidden(state, "missing X-Twilio-Signature"));
    };
    let Ok(Form(params)) = form else {
        return Err(forbidden(state, "the body is not a signed Twilio form"));
    };
    let url = match uri.query() {
        Some(q) => format!("{public_url}{VOICE_PATH}?{q}"),
        None => format!("{public_url}{VOICE_PATH}"),
    };
    if !signature::verify(token, &url, &params, signature) {
        warn!("a Twilio webhook with a wrong signature: refused");
        return Err(forbidden(state, "bad X-Twilio-Signature"));
    }
    let field = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    };
    let (call_sid, from, to) = (field("CallSid"), field("From"), field("To"));
    let (org, agent) =
        crate::transport::phone::who_answers(state, &state.config.telephony.numbers, to);
    let pass = StreamPass::new(Carrier::Twilio, call_sid, from, to, org, agent);
    let token = pass.sign(&state.auth).map_err(AppError::internal)?;
    info!(call_sid, "incoming phone call: connecting its media stream");
    let socket = state.config.net.public_socket_url().unwrap_or_default();
    Ok(connect_twiml(&format!("{socket}{MEDIA_PATH}"), &token))
}

/// `GET /telephony/twilio/media`: Twilio's media socket. Whom it carries is known from the
/// stream pass in its `start` message.
pub async fn media(
    State(state): State<Arc<AppState>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Err(e) = configured(&state) {
        return e.into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    phone::upgrade(state, ws, DOOR, None, transfer::finish)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twiml_escapes_its_attributes() {
        let twiml = connect_twiml("wss://h/x?a=1&b=2", "t.o.k");
        assert!(
            twiml.contains("<Stream url=\"wss://h/x?a=1&amp;b=2\">"),
            "{twiml}"
        );
        assert!(twiml.contains("<Parameter name=\"token\" value=\"t.o.k\"/>"));
    }
}
