//! Call sessions at `start_call`: a token minted by `POST /api/sessions` carries a session id
//! (`sid`). Its session, read from the store, fixes the call's agent and binds variables the
//! client cannot override (unless the agent lists them in `client_variables`); the session's
//! first call binds it, atomically, so the token starts no other call, only resumes that one.

use std::collections::HashMap;

use tracing::warn;

use super::services::CallServices;
use super::start::{refuse, StartError};
use super::store::Owner;
use crate::agents::Agent;
use crate::protocol::ErrorCode;

/// What a session fixes for its call.
pub(super) struct Bound {
    pub id: String,
    pub agent: String,
    pub variables: HashMap<String, String>,
}

fn unavailable(e: crate::store::StoreError) -> StartError {
    warn!(error = %e, "cannot read or bind a call session in the store");
    refuse(
        ErrorCode::StoreUnavailable,
        "the call store is unavailable; try again",
    )
}

/// The token's session, checked against the call asked for: its owner, its expiry, the agent,
/// and the call it is bound to (a new call once bound: `session_used`).
pub(super) async fn check(
    svc: &CallServices,
    sid: &str,
    owner: &Owner,
    resume: Option<&str>,
    asked_agent: Option<&str>,
) -> Result<Bound, StartError> {
    let row = svc.store.session(sid).await.map_err(unavailable)?;
    let Some(row) = row.filter(|r| r.sub == owner.sub && r.org == owner.org) else {
        return Err(refuse(
            ErrorCode::Unauthorized,
            "this token's session is unknown; mint a new token",
        ));
    };
    if row.expires_at_ms <= super::record::now_ms() {
        return Err(refuse(ErrorCode::Unauthorized, "token expired"));
    }
    if let Some(bound) = &row.call_id {
        if resume != Some(bound.as_str()) {
            return Err(refuse(
                ErrorCode::SessionUsed,
                format!(
                    "this token was used for call {bound}; it may only resume that call \
                     (start_call.call_id); mint a new token for another call"
                ),
            ));
        }
    }
    if let Some(asked) = asked_agent.filter(|a| *a != row.agent) {
        let asked: String = asked.chars().take(64).collect();
        return Err(refuse(
            ErrorCode::Forbidden,
            format!("this token is for agent `{}`, not `{asked}`", row.agent),
        ));
    }
    Ok(Bound {
        id: row.id,
        agent: row.agent,
        variables: row.variables.into_iter().collect(),
    })
}

/// The call's variables: the client's, then the session's over them, except the names the
/// agent lets the client set (`client_variables`).
pub(super) fn merge(
    agent: &Agent,
    bound: &HashMap<String, String>,
    client: &HashMap<String, String>,
) -> HashMap<String, String> {
    let mut vars = client.clone();
    for (k, v) in bound {
        let client_settable = agent.client_variables.iter().any(|c| c == k);
        if !(client_settable && client.contains_key(k)) {
            vars.insert(k.clone(), v.clone());
        }
    }
    vars
}

/// Binds the session to `call_id`: refused (`session_used`) when another call has it.
pub(super) async fn bind(svc: &CallServices, sid: &str, call_id: &str) -> Result<(), StartError> {
    if svc
        .store
        .bind_session(sid, call_id)
        .await
        .map_err(unavailable)?
    {
        Ok(())
    } else {
        Err(refuse(
            ErrorCode::SessionUsed,
            "this token was used for another call; mint a new token",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_variables_win_unless_the_agent_lets_the_client_set_them() {
        let agents = crate::agents::Agents::parse(
            "[[agent]]\nname = \"a\"\nsystem_prompt = \"p\"\nclient_variables = [\"lang\"]\n",
        )
        .unwrap();
        let agent = agents.get(None).unwrap();
        let map = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let bound = map(&[("customer", "Ada"), ("lang", "en"), ("tier", "gold")]);
        let client = map(&[("customer", "Mallory"), ("lang", "fr"), ("mood", "happy")]);
        let vars = merge(&agent, &bound, &client);
        assert_eq!(
            vars,
            map(&[
                ("customer", "Ada"),
                ("lang", "fr"),
                ("tier", "gold"),
                ("mood", "happy")
            ])
        );
        assert_eq!(merge(&agent, &bound, &HashMap::new()), bound);
    }
}
