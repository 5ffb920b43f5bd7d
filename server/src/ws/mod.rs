//! `GET /worker/ws` (worker-protocol.md §1): the upgrade is authenticated like any request and refused before any
//! `101` — `503 shutting_down` (the shutdown gate), `401`, `403 Worker role required`, `503 too_many_sessions`,
//! `426 websocket_required`, in that order. Each accepted upgrade becomes one tracked session task.

mod session;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{FromRequestParts, Request, State};
use axum::response::Response;

use protocol::ErrorCode;
use protocol::admin::Role;

use crate::auth::{self, Kind};
use crate::error::ApiError;
use crate::http::authenticate;
use crate::state::AppState;

/// The upgrade handler.
pub async fn worker_ws(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (mut parts, mut verified) = authenticate(&state, request, Kind::Mutating).await?;
    auth::persist_replay(&state, verified.replay.take());
    let caller = verified.caller.clone();
    if caller.role != Role::Worker {
        return Err(ApiError::new(
            ErrorCode::RoleNotAllowed,
            "Worker role required",
        ));
    }
    let Some(ticket) = state
        .sessions
        .try_admit(&caller.client_id, state.settings.session.max_sessions)
    else {
        return Err(ApiError::new(
            ErrorCode::TooManySessions,
            "Too many worker sessions",
        ));
    };
    let upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection> =
        WebSocketUpgrade::from_request_parts(&mut parts, &state).await;
    let Ok(upgrade) = upgrade else {
        return Err(ApiError::new(
            ErrorCode::WebsocketRequired,
            "WebSocket upgrade required",
        ));
    };
    let max = state.settings.session.max_frame_bytes;
    let tasks = state.tasks.clone();
    Ok(upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .on_failed_upgrade(|err| tracing::warn!(error = %err, "worker upgrade failed"))
        .on_upgrade(move |socket| {
            tasks.track_future(session::run(socket, caller.client_id, state, ticket))
        }))
}
