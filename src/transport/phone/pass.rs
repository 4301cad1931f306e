//! The stream pass: what a carrier's voice webhook vouches for, handed to the carrier with the
//! media socket's address (Twilio: the `<Stream>`'s `token` parameter, given back in `start`;
//! Telnyx: the `pass` query parameter of the stream URL). Signed with the server's token
//! secret, for one carrier's media socket only (its audience names the carrier; it has no
//! `sub`: it opens nothing else), and short-lived: the carrier connects within seconds.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::auth::{AuthError, Authenticator};

/// The carrier whose media socket a pass opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    Twilio,
    Telnyx,
}

impl Carrier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Twilio => "twilio",
            Self::Telnyx => "telnyx",
        }
    }

    /// The audience of this carrier's passes.
    fn audience(self) -> &'static str {
        match self {
            Self::Twilio => "voxwire:twilio-media",
            Self::Telnyx => "voxwire:telnyx-media",
        }
    }
}

/// How long the carrier has to open the media socket.
pub const TTL: Duration = Duration::from_secs(60);
/// How long an outbound call's pass lasts: the called phone rings first (Twilio gives up
/// after 60 s of ringing by default).
pub const OUTBOUND_TTL: Duration = Duration::from_secs(180);

/// The call a carrier is connecting, as its webhook told it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPass {
    pub aud: String,
    pub exp: u64,
    /// The carrier's id of the call (Twilio's `CallSid`, Telnyx's `call_control_id`).
    pub call_sid: String,
    /// The caller's number (`From`): the call's subject.
    pub from: String,
    /// The called number (`To`).
    pub to: String,
    /// Who answers: the org (none: the default org) and the agent (none: the org's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// A call this server placed (`POST /api/calls/outbound`): its subject is the called
    /// number.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outbound: bool,
    /// Variables for the prompt given when the call was placed.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub variables: HashMap<String, String>,
}

impl StreamPass {
    pub fn new(
        carrier: Carrier,
        call_sid: &str,
        from: &str,
        to: &str,
        org: Option<String>,
        agent: Option<String>,
    ) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            aud: carrier.audience().to_string(),
            exp: (now + TTL).as_secs(),
            call_sid: call_sid.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            org,
            agent,
            outbound: false,
            variables: HashMap::new(),
        }
    }

    /// The pass of a call this server places to `to`, with `variables` for its prompt.
    pub fn outbound(
        carrier: Carrier,
        from: &str,
        to: &str,
        org: Option<String>,
        agent: Option<String>,
        variables: HashMap<String, String>,
    ) -> Self {
        let mut pass = Self::new(carrier, "", from, to, org, agent);
        pass.exp += (OUTBOUND_TTL - TTL).as_secs();
        pass.outbound = true;
        pass.variables = variables;
        pass
    }

    /// Whom the call is with: the called number of a call placed by this server, else the
    /// caller's (`anonymous` for a hidden number).
    pub fn subject(&self) -> String {
        let n = if self.outbound { &self.to } else { &self.from };
        match n.trim() {
            "" => "anonymous".to_string(),
            n => n.to_string(),
        }
    }

    pub fn sign(&self, auth: &Authenticator) -> Result<String, AuthError> {
        auth.sign_pass(self)
    }

    /// The pass in `token`, if it is one of this server's for `carrier` and has not expired.
    pub fn verify(auth: &Authenticator, token: &str, carrier: Carrier) -> Result<Self, AuthError> {
        auth.verify_pass(token, carrier.audience())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_opens_the_media_socket_only() {
        let auth = Authenticator::new(b"test-secret-0123456789abcdef");
        let pass = StreamPass::new(
            Carrier::Twilio,
            "CA1",
            "+15550001111",
            "+15550002222",
            None,
            None,
        );
        let token = pass.sign(&auth).unwrap();
        assert_eq!(
            StreamPass::verify(&auth, &token, Carrier::Twilio).unwrap(),
            pass
        );
        // Not another carrier's pass.
        assert!(StreamPass::verify(&auth, &token, Carrier::Telnyx).is_err());
        // Not a caller's token.
        assert!(auth.verify(&token).is_err());
        // Nor is a caller's token a pass.
        let caller = auth
            .issue("alice", None, None, Duration::from_secs(60))
            .unwrap();
        assert!(StreamPass::verify(&auth, &caller, Carrier::Twilio).is_err());
        // Another server's pass, and an expired one, are refused.
        let other = Authenticator::new(b"another-secret-0123456789abcdef");
        assert!(StreamPass::verify(&other, &token, Carrier::Twilio).is_err());
        let mut old = pass.clone();
        old.exp = 1_000;
        let old = old.sign(&auth).unwrap();
        assert_eq!(
            StreamPass::verify(&auth, &old, Carrier::Twilio),
            Err(AuthError::Expired)
        );
    }
}
