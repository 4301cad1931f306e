//! Authentication: HS256 JWTs (`sub`, `exp` required; `org`, `agent`, `role` optional), taken from an
//! `Authorization: Bearer` header, a `token` query parameter, or a `bearer.<token>` WebSocket
//! subprotocol. Tokens are never logged. A token must not be larger than [`MAX_TOKEN_BYTES`], is
//! refused before its `nbf` and from its `exp` on, and may not live longer than the configured
//! maximum (`VOXWIRE_MAX_TOKEN_TTL`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The claims voxwire reads from a token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user; calls and history belong to (`sub`, `org`).
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// `caller` (the default), `operator` or `admin`; a verified token never holds another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// A call session's id (`POST /api/sessions`): the token reaches one call only, with the
    /// session's bound agent and variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// What a token may do. Operators and admins watch and act on the calls of their own `org`
/// (no `org`: the default org); callers reach only their own calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Caller,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Caller => "caller",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Operators and admins watch the calls of their org.
    pub fn is_operator(self) -> bool {
        matches!(self, Role::Operator | Role::Admin)
    }
}

impl std::str::FromStr for Role {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "caller" => Ok(Role::Caller),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(AuthError::UnknownRole(other.chars().take(32).collect())),
        }
    }
}

/// Largest token accepted, in bytes. A voxwire token is about 200 bytes; the cap keeps a client
/// from making the server parse and verify megabytes per request.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Longest token lifetime accepted unless configured (`VOXWIRE_MAX_TOKEN_TTL`): 7 days.
pub const DEFAULT_MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

impl Claims {
    /// Time left before the token expires (zero if already expired).
    pub fn remaining(&self) -> Duration {
        Duration::from_secs(self.exp).saturating_sub(now())
    }

    /// The token's role; `caller` when it has none (verified tokens hold only known roles).
    pub fn role(&self) -> Role {
        self.role
            .as_deref()
            .and_then(|r| r.parse().ok())
            .unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing token: send `Authorization: Bearer <token>`, a `token` query parameter or a `bearer.<token>` subprotocol")]
    Missing,
    #[error("token has expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token is larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("token lifetime exceeds the server's maximum of {0} s")]
    TooLong(u64),
    #[error("invalid token: unknown role `{0}` (expected `caller`, `operator` or `admin`)")]
    UnknownRole(String),
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Signs and verifies tokens with one HS256 secret.
#[derive(Clone)]
pub struct Authenticator {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    max_ttl: Duration,
}

impl Authenticator {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            max_ttl: DEFAULT_MAX_TOKEN_TTL,
        }
    }

    /// Refuses tokens that live longer than `max_ttl` (from `iat`, and from now).
    pub fn with_max_ttl(mut self, max_ttl: Duration) -> Self {
        self.max_ttl = max_ttl;
        self
    }

    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }

    /// Issues a caller token for `sub` valid for `ttl`.
    pub fn issue(
        &self,
        sub: &str,
        org: Option<&str>,
        agent: Option<&str>,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        self.issue_with_role(sub, org, agent, Role::Caller, ttl)
    }

    /// Issues a token with a role (`caller` tokens carry no `role` claim).
    pub fn issue_with_role(
        &self,
        sub: &str,
        org: Option<&str>,
        agent: Option<&str>,
        role: Role,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        let iat = now().as_secs();
        let claims = Claims {
            sub: sub.to_string(),
            exp: iat.saturating_add(ttl.as_secs().max(1)),
            org: org.map(str::to_string),
            agent: agent.map(str::to_string),
            iat: Some(iat),
            nbf: None,
            role: (role != Role::Caller).then(|| role.as_str().to_string()),
            sid: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }

    /// Issues a caller token for one call session `sid` (`POST /api/sessions`), valid for
    /// `ttl`.
    pub fn issue_session(
        &self,
        sub: &str,
        org: Option<&str>,
        agent: &str,
        sid: &str,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        let iat = now().as_secs();
        let claims = Claims {
            sub: sub.to_string(),
            exp: iat.saturating_add(ttl.as_secs().max(1)),
            org: org.map(str::to_string),
            agent: Some(agent.to_string()),
            iat: Some(iat),
            nbf: None,
            role: None,
            sid: Some(sid.to_string()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }

    /// Signs a pass of another kind than a caller's token (a phone stream's, say). Its claims
    /// carry `aud` (the kind) and `exp`, and no `sub`: a pass never opens `/ws` nor the API.
    pub fn sign_pass<T: Serialize>(&self, claims: &T) -> Result<String, AuthError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }

    /// Verifies a pass made by [`Self::sign_pass`] for audience `aud`: size, signature,
    /// algorithm, audience and expiry.
    pub fn verify_pass<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        aud: &str,
    ) -> Result<T, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = 0;
        validation.set_audience(&[aud]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        jsonwebtoken::decode::<T>(token, &self.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::InvalidAudience => AuthError::Invalid("not a pass of this kind".into()),
                _ => AuthError::Invalid("malformed pass".into()),
            })
    }

    /// Verifies size, signature, algorithm, `nbf`, expiry and lifetime.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidAlgorithm => AuthError::Invalid("algorithm must be HS256".into()),
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::MissingRequiredClaim(c) => {
                    AuthError::Invalid(format!("missing claim `{c}`"))
                }
                _ => AuthError::Invalid("malformed token".into()),
            })?;
        if data.claims.sub.is_empty() {
            return Err(AuthError::Invalid("empty `sub`".into()));
        }
        let max = self.max_ttl.as_secs();
        let from_now = data.claims.exp.saturating_sub(now().as_secs());
        let from_issue = data
            .claims
            .iat
            .map_or(0, |iat| data.claims.exp.saturating_sub(iat));
        if from_now > max || from_issue > max {
            return Err(AuthError::TooLong(max));
        }
        if let Some(role) = &data.claims.role {
            role.parse::<Role>()?;
        }
        Ok(data.claims)
    }
}

/// Finds the token in a request: Bearer header first, then `bearer.` subprotocol, then query.
pub fn token_from_request<'a>(
    headers: &'a HeaderMap,
    query_token: Option<&'a str>,
) -> Option<&'a str> {
    if let Some(v) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Some(t.trim());
        }
    }
    if let Some(t) = subprotocol_token(headers) {
        return Some(t);
    }
    query_token.filter(|t| !t.is_empty())
}

/// The token offered as a `bearer.<token>` WebSocket subprotocol, if any.
pub fn subprotocol_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix("bearer."))
}

/// Replaces the value of any `token` query parameter with `REDACTED`, for logging URIs.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("token", _)) => "token=REDACTED".to_string(),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_and_verify_round_trip() {
        let a = Authenticator::new(b"0123456789abcdef0123");
        let t = a
            .issue("alice", Some("acme"), None, Duration::from_secs(60))
            .unwrap();
        let c = a.verify(&t).unwrap();
        assert_eq!(c.sub, "alice");
        assert_eq!(c.org.as_deref(), Some("acme"));
        assert!(c.remaining() <= Duration::from_secs(60));
    }

    #[test]
    fn rejects_wrong_secret_and_other_algorithms() {
        let a = Authenticator::new(b"0123456789abcdef0123");
        let b = Authenticator::new(b"another-secret-9876543");
        let t = b.issue("bob", None, None, Duration::from_secs(60)).unwrap();
        assert!(matches!(a.verify(&t), Err(AuthError::Invalid(_))));
        let claims = Claims {
            sub: "x".into(),
            exp: now().as_secs() + 60,
            org: None,
            agent: None,
            iat: None,
            nbf: None,
            role: None,
            sid: None,
        };
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef0123"),
        )
        .unwrap();
        assert!(matches!(a.verify(&hs512), Err(AuthError::Invalid(_))));
        assert!(matches!(
            a.verify("not.a.token"),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn expired_is_reported_as_such() {
        let a = Authenticator::new(b"0123456789abcdef0123");
        let claims = Claims {
            sub: "x".into(),
            exp: now().as_secs() - 10,
            org: None,
            agent: None,
            iat: None,
            nbf: None,
            role: None,
            sid: None,
        };
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef0123"),
        )
        .unwrap();
        assert_eq!(a.verify(&t), Err(AuthError::Expired));
    }

    #[test]
    fn roles_round_trip_and_unknown_roles_are_refused() {
        let a = Authenticator::new(b"0123456789abcdef0123");
        let t = a
            .issue_with_role(
                "op",
                Some("acme"),
                None,
                Role::Operator,
                Duration::from_secs(60),
            )
            .unwrap();
        let c = a.verify(&t).unwrap();
        assert_eq!(c.role(), Role::Operator);
        let caller = a.issue("u", None, None, Duration::from_secs(60)).unwrap();
        let c = a.verify(&caller).unwrap();
        assert_eq!((c.role.as_deref(), c.role()), (None, Role::Caller));
        let claims = Claims {
            sub: "x".into(),
            exp: now().as_secs() + 60,
            org: None,
            agent: None,
            iat: None,
            nbf: None,
            role: Some("superuser".into()),
            sid: None,
        };
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef0123"),
        )
        .unwrap();
        let e = a.verify(&t).unwrap_err();
        assert_eq!(e, AuthError::UnknownRole("superuser".into()));
        assert!(e.to_string().contains("unknown role `superuser`"), "{e}");
    }

    #[test]
    fn token_sources_and_redaction() {
        let mut h = HeaderMap::new();
        h.insert(
            "sec-websocket-protocol",
            "voxwire.v1, bearer.abc.def".parse().unwrap(),
        );
        assert_eq!(token_from_request(&h, None), Some("abc.def"));
        h.insert("authorization", "Bearer xyz".parse().unwrap());
        assert_eq!(token_from_request(&h, Some("q")), Some("xyz"));
        assert_eq!(token_from_request(&HeaderMap::new(), Some("q")), Some("q"));
        assert_eq!(
            redact_query("a=1&token=secret&b=2"),
            "a=1&token=REDACTED&b=2"
        );
    }
}
