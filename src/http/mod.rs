//! The HTTP surface: the router and its handlers (`/ws`, push-to-talk, call history, demo
//! tokens, call sessions minted with API keys, the monitor stream, history export and figures,
//! usage and limits, erasure, webhook deliveries, the agents API, Twilio's webhook and media
//! socket, health, metrics, and the static `web/` folder).

pub mod access;
pub mod agents;
pub mod api;
pub mod calls;
pub mod error;
pub mod export;
pub mod filters;
pub mod limits;
pub mod operate;
pub mod principal;
pub mod rate;
pub mod sessions;
pub mod stats;
pub mod subjects;
pub mod usage;
pub mod webhooks;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use tower_http::services::ServeDir;

use crate::server::AppState;
use crate::transport::{monitor, operator, ptt, telnyx, twilio, ws};

pub fn router(state: Arc<AppState>) -> Router {
    let web = ServeDir::new(&state.config.web_dir).append_index_html_on_directories(true);
    Router::new()
        .route("/ws", get(ws::upgrade))
        .route(
            "/api/voice/turn",
            // Multipart bodies are read through axum's limit (2 MB unless set): the same limit
            // as a raw body, plus the multipart framing.
            post(ptt::turn).layer(DefaultBodyLimit::max(
                state
                    .config
                    .max_upload_bytes
                    .saturating_add(ptt::MULTIPART_OVERHEAD),
            )),
        )
        .route("/api/calls", get(calls::list_calls))
        // A static segment wins over `{call_id}` whatever the order: no call is named `export`.
        .route("/api/calls/export", get(export::export))
        .route("/api/calls/outbound", post(twilio::place))
        .route("/api/calls/{call_id}", get(calls::call_history))
        .route("/api/calls/{call_id}/takeover", post(operate::takeover))
        .route("/api/calls/{call_id}/release", post(operate::release))
        .route("/api/calls/{call_id}/end", post(operate::end))
        .route("/api/calls/{call_id}/operator", get(operator::upgrade))
        .route("/api/calls/{call_id}/recording", get(calls::recording))
        .route(
            "/api/calls/{call_id}/say",
            post(operate::say).layer(DefaultBodyLimit::max(operate::MAX_BODY_BYTES)),
        )
        .route(
            "/api/calls/{call_id}/context",
            post(operate::context).layer(DefaultBodyLimit::max(operate::MAX_BODY_BYTES)),
        )
        .route("/api/sessions", post(sessions::create))
        .route("/api/stats", get(stats::stats))
        .route("/api/usage", get(usage::usage))
        .route(
            "/api/limits",
            get(limits::get_limits)
                .put(limits::put_limits)
                .layer(DefaultBodyLimit::max(limits::MAX_BODY_BYTES)),
        )
        .route("/api/subjects/{sub}", delete(subjects::erase))
        .route("/api/webhooks/deliveries", get(webhooks::deliveries))
        .route("/api/monitor/events", get(monitor::events))
        .route("/api/demo/token", get(api::demo_token))
        .route("/api/agents", get(agents::list).post(agents::create))
        .route(
            "/api/agents/{name}",
            get(agents::read)
                .put(agents::replace)
                .delete(agents::delete),
        )
        .route(
            twilio::VOICE_PATH,
            post(twilio::voice).layer(DefaultBodyLimit::max(twilio::MAX_FORM_BYTES)),
        )
        .route(twilio::MEDIA_PATH, get(twilio::media))
        .route(
            telnyx::VOICE_PATH,
            post(telnyx::voice).layer(DefaultBodyLimit::max(telnyx::MAX_BODY_BYTES)),
        )
        .route(telnyx::MEDIA_PATH, get(telnyx::media))
        .route("/health", get(api::health))
        .route("/metrics", get(api::metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            rate::limit,
        ))
        .fallback_service(web)
        // Which node answered: the same on every response, WebSocket upgrades included.
        .layer(tower_http::set_header::SetResponseHeaderLayer::overriding(
            axum::http::HeaderName::from_static("x-voxwire-node"),
            axum::http::HeaderValue::from_str(state.node_id())
                .unwrap_or(axum::http::HeaderValue::from_static("node")),
        ))
        .with_state(state)
}
