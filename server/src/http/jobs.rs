//! Job routes (api.md §5.1–§5.3): submit, list, status, cancel, client heartbeat and logs. Each handler follows the
//! check order of limits-and-bad-input.md §3.1: authentication (with the body), role, path, query, lookup and
//! ownership, then the body content and the scheduler.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;
use tokio::time::Instant;

use protocol::ErrorCode;
use protocol::admin::Role;
use protocol::rest::{
    CommandResponse, DETAIL_JOB_ALREADY_FINISHED, JobRequest, JobStatus, LogEntry, LogsResponse,
};
use protocol::{EventId, JobId};

use super::query::Query;
use super::{authenticate, json, submit};
use crate::auth::{self, Caller, Kind};
use crate::error::ApiError;
use crate::scheduler::{CancelOutcome, Canceler, HeartbeatOutcome};
use crate::state::AppState;
use crate::store::records::{JobRecord, micros};
use crate::views;

/// The `{job_id}` segment of the path at `index` (0-based, after the leading `/`).
pub(crate) fn job_id_segment(path: &str, index: usize) -> Result<JobId, ApiError> {
    let segment = path.split('/').nth(index + 1).unwrap_or("");
    JobId::parse(segment).map_err(|_| ApiError::invalid_job_id())
}

/// Reads a job for a route; `404 Job not found` if unknown or pruned.
pub(crate) fn load_job(state: &AppState, id: JobId) -> Result<JobRecord, ApiError> {
    state.store.job(id)?.ok_or_else(ApiError::job_not_found)
}

/// The requester, or an admin.
pub(crate) fn owns(caller: &Caller, job: &JobRecord) -> bool {
    caller.is_admin() || caller.client_id == job.requester
}

fn deadline(state: &AppState) -> Instant {
    Instant::now() + state.settings.limits.request_timeout
}

/// The wire record of a job, with its wait reason.
pub(crate) fn wire(state: &AppState, record: &JobRecord) -> protocol::rest::JobRecord {
    views::job_record(record, state.waits.wait_of(record))
}

fn replayed(record: protocol::rest::JobRecord) -> Response {
    let mut response = Json(record).into_response();
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// `POST /jobs/submit`.
pub(crate) async fn submit(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, mut verified) = authenticate(&state, request, Kind::Submit).await?;
    if let Some(job) = verified.repeated_submit {
        let record = load_job(&state, job)?;
        return Ok(replayed(wire(&state, &record)));
    }
    let caller = verified.caller.clone();
    let replay = verified.replay.take();
    let result = async {
        if caller.role == Role::Worker {
            return Err(ApiError::new(
                ErrorCode::RoleNotAllowed,
                "Role 'worker' may not submit jobs",
            ));
        }
        let request: JobRequest = json::parse(&parts.headers, &verified.body)?;
        let header_key = match parts.headers.get("idempotency-key") {
            Some(value) => Some(value.to_str().map_err(|_| {
                ApiError::invalid_body("Idempotency-Key: must be 1–128 printable ASCII characters")
            })?),
            None => None,
        };
        submit::validate(request, header_key, &caller.client_id, &state.settings)
    }
    .await;
    let mut job = match result {
        Ok(job) => job,
        Err(err) => {
            auth::persist_replay(&state, replay);
            return Err(err);
        }
    };
    job.replay = replay.clone();
    match state.scheduler.submit(job, deadline(&state)).await {
        Ok(submitted) => {
            if let Some(claim) = verified.claim.take() {
                claim.finish(Some(submitted.record.job_id));
            }
            if submitted.replayed {
                Ok(replayed(submitted.record))
            } else {
                Ok(Json(submitted.record).into_response())
            }
        }
        Err(err) => {
            auth::persist_replay(&state, replay);
            Err(err.into())
        }
    }
}

/// `GET /jobs`.
pub(crate) async fn list(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, verified) = authenticate(&state, request, Kind::Read).await?;
    if verified.caller.role == Role::Worker {
        return Err(ApiError::new(
            ErrorCode::RoleNotAllowed,
            "Role 'worker' may not list jobs",
        ));
    }
    let query = Query::parse(parts.uri.query());
    let window = query.int("window", 0..=i64::MAX)?.unwrap_or(3600);
    let since = query.job_cursor("since_id", "Invalid since_id")?;
    let max = state.settings.limits.max_list_items as i64;
    let limit = query.int("limit", 1..=max)?.unwrap_or(1000.min(max)) as usize;
    let statuses = query.list("status", |text| text.parse::<JobStatus>().ok())?;
    let cutoff = micros(OffsetDateTime::now_utc()).saturating_sub(window.saturating_mul(1_000_000));
    let jobs = state
        .store
        .jobs_of_requester(&verified.caller.client_id, since, limit, |job| {
            statuses
                .as_ref()
                .is_none_or(|statuses| statuses.contains(&job.status))
                && (job.status.is_active() || job.last_update > cutoff)
        })?;
    let body: Vec<protocol::rest::JobRecord> = jobs.iter().map(|job| wire(&state, job)).collect();
    Ok(Json(body).into_response())
}

/// `GET /jobs/{job_id}/status`.
pub(crate) async fn status(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, verified) = authenticate(&state, request, Kind::Read).await?;
    let id = job_id_segment(parts.uri.path(), 1)?;
    let record = load_job(&state, id)?;
    let caller = &verified.caller;
    let current_worker = caller.role == Role::Worker
        && record.worker_id.as_deref() == Some(caller.client_id.as_str());
    if !owns(caller, &record) && !current_worker {
        return Err(ApiError::permission("No permission to job"));
    }
    Ok(Json(wire(&state, &record)).into_response())
}

/// `POST /jobs/{job_id}/cancel`.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, verified) = authenticate(&state, request, Kind::Mutating).await?;
    let result = async {
        let id = job_id_segment(parts.uri.path(), 1)?;
        let record = load_job(&state, id)?;
        if !owns(&verified.caller, &record) {
            return Err(ApiError::permission("No permission to cancel job"));
        }
        let by = Canceler {
            identity: verified.caller.client_id.clone(),
            as_admin: verified.caller.is_admin() && verified.caller.client_id != record.requester,
        };
        Ok(state
            .scheduler
            .cancel(id, by, Some(deadline(&state)))
            .await?)
    }
    .await;
    auth::persist_replay(&state, verified.replay);
    Ok(Json(match result? {
        CancelOutcome::AlreadyFinished => CommandResponse::ok_with(DETAIL_JOB_ALREADY_FINISHED),
        CancelOutcome::Canceled | CancelOutcome::Canceling => CommandResponse::ok(),
    })
    .into_response())
}

/// `POST /jobs/{job_id}/client_heartbeat`.
pub(crate) async fn client_heartbeat(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, verified) = authenticate(&state, request, Kind::Mutating).await?;
    let result = async {
        let id = job_id_segment(parts.uri.path(), 1)?;
        let monitor = Query::parse(parts.uri.query()).bool("monitor")?;
        let record = load_job(&state, id)?;
        if !owns(&verified.caller, &record) {
            return Err(ApiError::permission(
                "No permission to heartbeat for this job",
            ));
        }
        Ok(state
            .scheduler
            .client_heartbeat(id, monitor, deadline(&state))
            .await?)
    }
    .await;
    auth::persist_replay(&state, verified.replay);
    Ok(Json(match result? {
        HeartbeatOutcome::AlreadyFinished => CommandResponse::ok_with(DETAIL_JOB_ALREADY_FINISHED),
        HeartbeatOutcome::Recorded => CommandResponse::ok(),
    })
    .into_response())
}

/// Stored events of a job after `after`, up to the durable floor (storage.md §2), at most `limit`.
pub(crate) fn durable_events(
    state: &AppState,
    job: JobId,
    after: Option<EventId>,
    limit: usize,
) -> Result<Vec<(EventId, crate::store::records::Event)>, ApiError> {
    let floor = state.hub.durable_floor(job);
    Ok(state.store.events(job, after, floor, limit)?)
}

/// `GET /jobs/{job_id}/logs`.
pub(crate) async fn logs(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, verified) = authenticate(&state, request, Kind::Read).await?;
    let id = job_id_segment(parts.uri.path(), 1)?;
    let query = Query::parse(parts.uri.query());
    let since = query.event_cursor("since_message_id", "Invalid since_message_id")?;
    let limit = query.int("limit", 1..=i64::MAX)?;
    let record = load_job(&state, id)?;
    if !owns(&verified.caller, &record) {
        return Err(ApiError::permission("No permission to view job logs"));
    }
    let max = state.settings.limits.max_list_items;
    let floor = state.hub.durable_floor(id);
    let logs: Vec<LogEntry> = match limit {
        Some(limit) => {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX).min(max);
            state
                .store
                .last_events(id, since, limit, views::is_log_event)?
                .into_iter()
                .filter(|(event_id, _)| floor.is_none_or(|floor| *event_id < floor))
                .filter_map(|(event_id, event)| views::log_entry(event_id, &event))
                .collect()
        }
        None => {
            let mut entries = Vec::new();
            let mut cursor = since;
            'pages: loop {
                let page = state.store.events(id, cursor, floor, 1024)?;
                let Some((last, _)) = page.last() else { break };
                cursor = Some(*last);
                for (event_id, event) in &page {
                    if let Some(entry) = views::log_entry(*event_id, event) {
                        entries.push(entry);
                        if entries.len() >= max {
                            break 'pages;
                        }
                    }
                }
                if page.len() < 1024 {
                    break;
                }
            }
            entries
        }
    };
    let last_message_id = logs.last().map(|entry| entry.id).or(since);
    Ok((
        StatusCode::OK,
        Json(LogsResponse {
            logs,
            last_message_id,
        }),
    )
        .into_response())
}
