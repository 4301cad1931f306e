//! A real transfer on a Twilio line: when the agent's `transfer` tool named a phone number and
//! the call ended `transferred`, the live call is redirected through Twilio's REST API
//! (`POST {api}/2010-04-01/Accounts/{sid}/Calls/{CallSid}.json` with
//! `Twiml=<Response><Dial>+1555...</Dial></Response>`) before its media stream closes, so that
//! Twilio dials the number instead of hanging up. A refusal is logged and counted
//! (`carrier_error`), and the call ends as it would have.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::xml_attr;
use crate::protocol::ErrorCode;
use crate::server::AppState;
use crate::transport::phone::{client, Outcome};

/// How long Twilio has to take the redirect.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Once the call is over, before its stream closes: transfers the line if the call asked.
pub async fn finish(state: Arc<AppState>, outcome: Outcome) {
    let Some(to) = outcome.transfer_target() else {
        return;
    };
    match redirect(&state, &outcome.call_id, to).await {
        Ok(()) => info!(call_sid = %outcome.call_id, "phone call transferred"),
        Err(why) => {
            state.metrics.error(ErrorCode::CarrierError);
            warn!(call_sid = %outcome.call_id, %why, "the phone call could not be transferred: it ends");
        }
    }
}

/// TwiML that dials `to`.
fn dial_twiml(to: &str) -> String {
    format!("<Response><Dial>{}</Dial></Response>", xml_attr(to))
}

async fn redirect(state: &AppState, call_sid: &str, to: &str) -> Result<(), String> {
    let telephony = &state.config.telephony;
    let (Some(sid), Some(token)) = (&telephony.twilio_account_sid, &telephony.twilio_token) else {
        return Err("TWILIO_ACCOUNT_SID is not set".into());
    };
    let url = format!(
        "{}/2010-04-01/Accounts/{sid}/Calls/{call_sid}.json",
        telephony.twilio_api_url
    );
    let secret = String::from_utf8_lossy(token.expose()).into_owned();
    let twiml = dial_twiml(to);
    let answer = client()
        .post(&url)
        .basic_auth(sid, Some(secret))
        .form(&[("Twiml", twiml.as_str())])
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("Twilio could not be reached: {}", e.without_url()))?;
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    Err(format!("Twilio refused the redirect ({})", status.as_u16()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_twiml_dials_the_number() {
        assert_eq!(
            dial_twiml("+15557770000"),
            "<Response><Dial>+15557770000</Dial></Response>"
        );
    }
}
