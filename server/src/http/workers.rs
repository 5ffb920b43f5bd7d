//! `GET /workers` and `GET /workers/{worker_id}` (api.md §5.7): any authenticated role.

use axum::Json;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

use protocol::ErrorCode;
use protocol::rest::{WorkerInfo, WorkerStatus};

use super::authenticate;
use super::query::Query;
use crate::auth::Kind;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::records::micros;

fn worker_not_found() -> ApiError {
    ApiError::new(ErrorCode::WorkerNotFound, "Worker not found")
}

/// Every worker the coordinator knows, live state first.
async fn all_workers(state: &AppState) -> Result<Vec<WorkerInfo>, ApiError> {
    Ok(state.scheduler.workers().await?)
}

fn order(workers: &mut [WorkerInfo]) {
    workers.sort_by(|a, b| {
        let rank = |worker: &WorkerInfo| u8::from(worker.status == WorkerStatus::Offline);
        rank(a)
            .cmp(&rank(b))
            .then(b.last_seen.cmp(&a.last_seen))
            .then(a.worker_id.cmp(&b.worker_id))
    });
}

/// `GET /workers`.
pub(crate) async fn list(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, _verified) = authenticate(&state, request, Kind::Read).await?;
    let window = Query::parse(parts.uri.query())
        .int("window", 0..=i64::MAX)?
        .unwrap_or(86_400);
    let cutoff = micros(OffsetDateTime::now_utc()).saturating_sub(window.saturating_mul(1_000_000));
    let mut workers: Vec<WorkerInfo> = all_workers(&state)
        .await?
        .into_iter()
        .filter(|worker| {
            worker.status != WorkerStatus::Offline || micros(worker.last_seen) > cutoff
        })
        .collect();
    order(&mut workers);
    Ok(Json(workers).into_response())
}

/// `GET /workers/{worker_id}`.
pub(crate) async fn show(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, _verified) = authenticate(&state, request, Kind::Read).await?;
    let id = parts.uri.path().split('/').nth(2).unwrap_or("");
    if protocol::ids::check_identity_id(id).is_err() {
        return Err(worker_not_found());
    }
    let worker = all_workers(&state)
        .await?
        .into_iter()
        .find(|worker| worker.worker_id == id);
    Ok(Json(worker.ok_or_else(worker_not_found)?).into_response())
}
