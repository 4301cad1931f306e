//! `DELETE /api/subjects/{sub}`: an org admin erases every call of one subject of the org
//! (items, turn metrics, events, recordings), answered with the counts and written to the audit
//! log (who, when, how many; never the subject). 409 `subject_live` while the subject has a live
//! call: nothing is erased.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

use super::access::admin;
use super::api::TokenQuery;
use super::calls::unavailable;
use super::error::AppError;
use crate::protocol::ErrorCode;
use crate::retention::{erase_subject, EraseError};
use crate::server::AppState;
use crate::store::Deleted;

pub async fn erase(
    State(state): State<Arc<AppState>>,
    Path(sub): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Json<Deleted>, AppError> {
    let claims = admin(&state, &headers, &q)?;
    let org = claims.org.as_deref();
    match erase_subject(&state.call_services, org, &sub, &claims.sub).await {
        Ok(deleted) => {
            tracing::info!(
                calls = deleted.calls,
                items = deleted.items,
                recordings = deleted.recordings,
                "a subject's calls were erased"
            );
            Ok(Json(deleted))
        }
        Err(EraseError::Live) => Err(AppError::new(
            StatusCode::CONFLICT,
            ErrorCode::SubjectLive,
            "this subject has a live call; erase once it has ended",
        )),
        Err(EraseError::Cluster(e)) => {
            tracing::warn!(error = %e, "cannot check the subject's live calls");
            Err(AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::StoreUnavailable,
                "the live-call registry is unavailable; try again",
            ))
        }
        Err(EraseError::Unflushed) => Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StoreUnavailable,
            "the call store is unavailable; try again",
        )),
        Err(EraseError::Store(e)) => Err(unavailable(e)),
    }
}
