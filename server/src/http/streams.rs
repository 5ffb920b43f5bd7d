//! Follow channels: upstream's `GET /poll/jobs/{id}` (long poll and NDJSON, api.md §5.6) and our
//! `GET /jobs/{id}/events` (NDJSON, api.md §5.5). Both read stored events after a cursor at the reader's pace, up
//! to the durability floor, and wake on the job's live channel; a lagging reader resyncs from the store. Every
//! stream ends when the listener closes (`closing`), and counts as a sign of life of the requester while open.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use protocol::rest::{EventLine, EventType, JobLine, PollResponse, ProgressLine};
use protocol::{ErrorCode, EventId, JobId};

use super::authenticate;
use super::jobs::{durable_events, job_id_segment, load_job, owns, wire};
use super::query::Query;
use crate::auth::Kind;
use crate::error::ApiError;
use crate::hub::Live;
use crate::scheduler::{SchedulerHandle, StreamChange};
use crate::state::{AppState, StreamSlot};
use crate::store::records::{Event, JobRecord};
use crate::views;

/// At most this many messages per poll answer or NDJSON line (api.md §5.6).
const MAX_MESSAGES: usize = 1000;
/// Stored events read per page.
const PAGE: usize = 1000;

fn too_many_streams() -> ApiError {
    ApiError::new(ErrorCode::TooManyStreams, "Too many open streams")
}

fn open_slot(state: &AppState) -> Result<StreamSlot, ApiError> {
    state
        .streams
        .try_open(state.settings.limits.max_streams)
        .ok_or_else(too_many_streams)
}

fn stream_response(content_type: &'static str, rx: mpsc::Receiver<Bytes>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<Bytes, Infallible>(bytes), rx))
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn json_line<T: serde::Serialize>(value: &T) -> Bytes {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// Tells the scheduler when a follow stream closes (R6), however the stream ends.
struct FollowGuard {
    scheduler: SchedulerHandle,
    job: JobId,
    hub: crate::hub::EventHub,
}

impl Drop for FollowGuard {
    fn drop(&mut self) {
        let scheduler = self.scheduler.clone();
        let job = self.job;
        self.hub.unsubscribe(job);
        tokio::spawn(async move { scheduler.follower_seen(job, StreamChange::Closed).await });
    }
}

async fn follow_guard(state: &AppState, job: JobId) -> FollowGuard {
    state
        .scheduler
        .follower_seen(job, StreamChange::Opened)
        .await;
    FollowGuard {
        scheduler: state.scheduler.clone(),
        job,
        hub: state.hub.clone(),
    }
}

/// Waits for a live item of the job, a timeout, or shutdown. `Ok(true)`: something may be new.
async fn wait_live(
    rx: &mut broadcast::Receiver<Live>,
    until: Instant,
    closing: &tokio_util::sync::CancellationToken,
) -> Wake {
    tokio::select! {
        biased;
        () = closing.cancelled() => Wake::Closing,
        item = rx.recv() => match item {
            Ok(item) => Wake::Item(item),
            Err(broadcast::error::RecvError::Lagged(_)) => Wake::Lagged,
            Err(broadcast::error::RecvError::Closed) => Wake::Closing,
        },
        () = tokio::time::sleep_until(until) => Wake::Timeout,
    }
}

enum Wake {
    Item(Live),
    Lagged,
    Timeout,
    Closing,
}

fn poll_messages(
    state: &AppState,
    record: &JobRecord,
    cursor: Option<EventId>,
) -> Result<(Vec<protocol::rest::Message>, Option<EventId>), ApiError> {
    let events = durable_events(state, record.id, cursor, PAGE)?;
    let events: Vec<(EventId, Arc<Event>)> = events
        .into_iter()
        .map(|(id, event)| (id, Arc::new(event)))
        .collect();
    let mut messages = views::messages(record, &events);
    messages.truncate(MAX_MESSAGES);
    // The cursor moves to the last event a message was made from, or past events that make none.
    let next = match messages.last() {
        Some(message) if messages.len() == MAX_MESSAGES => Some(message.message_id),
        _ => events.last().map(|(id, _)| *id).or(cursor),
    };
    Ok((messages, next))
}

/// `GET /poll/jobs/{job_id}`.
pub(crate) async fn poll(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, verified) = authenticate(&state, request, Kind::Read).await?;
    let id = job_id_segment(parts.uri.path(), 2)?;
    let query = Query::parse(parts.uri.query());
    let cursor = query.event_cursor("last_message_id", "Invalid last_message_id")?;
    let wait = query.int("wait", i64::MIN..=i64::MAX)?.unwrap_or(0);
    let streaming = parts.headers.get_all(header::ACCEPT).iter().any(|value| {
        value
            .to_str()
            .is_ok_and(|text| text.contains("application/x-ndjson"))
    });
    let record = load_job(&state, id)?;
    if !owns(&verified.caller, &record) {
        return Err(ApiError::permission("No permission to job"));
    }
    let slot = open_slot(&state)?;
    if streaming {
        let keepalive = if wait <= 0 { 15 } else { wait.min(3600) as u64 };
        let (tx, rx) = mpsc::channel(16);
        let guard = follow_guard(&state, id).await;
        let task_state = state.clone();
        state.tasks.spawn(async move {
            let _slot = slot;
            let _guard = guard;
            poll_stream(
                task_state,
                record,
                cursor,
                Duration::from_secs(keepalive),
                tx,
            )
            .await;
        });
        return Ok(stream_response("application/x-ndjson", rx));
    }
    state
        .scheduler
        .follower_seen(id, StreamChange::Keepalive)
        .await;
    let mut rx = state.hub.subscribe(id);
    let (mut messages, _) = poll_messages(&state, &record, cursor)?;
    if messages.is_empty() && wait > 0 {
        let wait = Duration::from_secs(wait as u64).min(state.settings.limits.max_poll_wait);
        let until = Instant::now() + wait;
        loop {
            match wait_live(&mut rx, until, &state.closing).await {
                Wake::Item(Live::Event(..)) | Wake::Lagged => {
                    (messages, _) = poll_messages(&state, &record, cursor)?;
                    if !messages.is_empty() {
                        break;
                    }
                }
                Wake::Item(_) => {}
                Wake::Timeout | Wake::Closing => break,
            }
        }
    }
    drop(rx);
    state.hub.unsubscribe(id);
    drop(slot);
    state
        .scheduler
        .follower_seen(id, StreamChange::Keepalive)
        .await;
    Ok(Json(PollResponse { messages }).into_response())
}

async fn poll_stream(
    state: AppState,
    record: JobRecord,
    mut cursor: Option<EventId>,
    keepalive: Duration,
    tx: mpsc::Sender<Bytes>,
) {
    let mut rx = state.hub.subscribe(record.id);
    let mut until = Instant::now() + keepalive;
    loop {
        let Ok((messages, next)) = poll_messages(&state, &record, cursor) else {
            return;
        };
        cursor = next;
        if !messages.is_empty() {
            if tx
                .send(json_line(&PollResponse { messages }))
                .await
                .is_err()
            {
                return;
            }
            until = Instant::now() + keepalive;
            continue;
        }
        loop {
            match wait_live(&mut rx, until, &state.closing).await {
                Wake::Item(Live::Event(..)) | Wake::Lagged => break,
                Wake::Item(_) => {}
                Wake::Timeout => {
                    if tx.send(Bytes::from_static(b"\n")).await.is_err() {
                        return;
                    }
                    state
                        .scheduler
                        .follower_seen(record.id, StreamChange::Keepalive)
                        .await;
                    until = Instant::now() + keepalive;
                }
                Wake::Closing => return,
            }
        }
    }
}

fn parse_types(query: &Query) -> Result<HashSet<EventType>, ApiError> {
    Ok(
        match query.list("types", |text| text.parse::<EventType>().ok())? {
            Some(types) => types.into_iter().collect(),
            None => [
                EventType::Status,
                EventType::Output,
                EventType::Progress,
                EventType::Notice,
            ]
            .into(),
        },
    )
}

/// `GET /jobs/{job_id}/events`.
pub(crate) async fn events(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, verified) = authenticate(&state, request, Kind::Read).await?;
    let id = job_id_segment(parts.uri.path(), 1)?;
    let query = Query::parse(parts.uri.query());
    let after = query.event_cursor("after", "Invalid after")?;
    let follow = query.bool("follow")?.unwrap_or(true);
    let keepalive = query.int("keepalive", 1..=60)?.unwrap_or(15) as u64;
    let types = parse_types(&query)?;
    let record = load_job(&state, id)?;
    if !owns(&verified.caller, &record) {
        return Err(ApiError::permission("No permission to job"));
    }
    let slot = open_slot(&state)?;
    let (tx, rx) = mpsc::channel(16);
    let guard = follow_guard(&state, id).await;
    let task_state = state.clone();
    state.tasks.spawn(async move {
        let _slot = slot;
        let _guard = guard;
        let follower = Follower {
            state: task_state,
            job: id,
            cursor: after,
            types,
            tx,
        };
        follower.run(follow, Duration::from_secs(keepalive)).await;
    });
    Ok(stream_response("application/x-ndjson", rx))
}

struct Follower {
    state: AppState,
    job: JobId,
    cursor: Option<EventId>,
    types: HashSet<EventType>,
    tx: mpsc::Sender<Bytes>,
}

/// What sending stored events found.
enum Sent {
    More,
    Terminal,
    Gone,
}

impl Follower {
    async fn send(&self, line: &EventLine) -> bool {
        self.tx.send(json_line(line)).await.is_ok()
    }

    /// Sends stored events after the cursor, up to the durability floor.
    async fn send_stored(&mut self) -> Sent {
        loop {
            let Ok(page) = durable_events(&self.state, self.job, self.cursor, PAGE) else {
                return Sent::Gone;
            };
            let full = page.len() == PAGE;
            for (id, event) in page {
                if let Some(sent) = self.send_event(id, &event).await {
                    return sent;
                }
            }
            if !full {
                return Sent::More;
            }
        }
    }

    /// Sends one stored event; `Some` ends the stream.
    async fn send_event(&mut self, id: EventId, event: &Event) -> Option<Sent> {
        if self.cursor.is_some_and(|cursor| id <= cursor) {
            return None;
        }
        self.cursor = Some(id);
        if let Some(line) = views::event_line(id, event, &self.types)
            && !self.send(&line).await
        {
            return Some(Sent::Gone);
        }
        match event {
            Event::Status { status, .. } if status.is_terminal() => Some(Sent::Terminal),
            _ => None,
        }
    }

    async fn run(mut self, follow: bool, keepalive: Duration) {
        let mut rx = self.state.hub.subscribe(self.job);
        let Ok(record) = load_job(&self.state, self.job) else {
            return;
        };
        let first = EventLine::Job(JobLine {
            job: Box::new(wire(&self.state, &record)),
        });
        if !self.send(&first).await {
            return;
        }
        match self.send_stored().await {
            Sent::More if follow => {}
            _ => return,
        }
        let mut until = Instant::now() + keepalive;
        let mut last_sign = Instant::now();
        loop {
            match wait_live(&mut rx, until, &self.state.closing).await {
                Wake::Item(Live::Event(id, event)) => {
                    // A gap (an event we never saw) means we missed some: resync from the store.
                    match self.send_event(id, &event).await {
                        Some(Sent::More) | None => {}
                        Some(_) => return,
                    }
                }
                Wake::Item(Live::Progress { attempt, progress }) => {
                    if self.types.contains(&EventType::Progress) {
                        let line = EventLine::Progress(ProgressLine {
                            time: time::OffsetDateTime::now_utc(),
                            attempt,
                            progress: *progress,
                        });
                        if !self.send(&line).await {
                            return;
                        }
                    }
                }
                Wake::Item(Live::Uncapped { event, .. }) => {
                    if self.types.contains(&EventType::Output)
                        && !self.send(&views::output_line(None, &event)).await
                    {
                        return;
                    }
                }
                Wake::Lagged => match self.send_stored().await {
                    Sent::More => {}
                    _ => return,
                },
                Wake::Timeout => {
                    if self.tx.send(Bytes::from_static(b"\n")).await.is_err() {
                        return;
                    }
                    self.state
                        .scheduler
                        .follower_seen(self.job, StreamChange::Keepalive)
                        .await;
                    until = Instant::now() + keepalive;
                    continue;
                }
                Wake::Closing => return,
            }
            until = Instant::now() + keepalive;
            if last_sign.elapsed() >= Duration::from_secs(1) {
                self.state
                    .scheduler
                    .follower_seen(self.job, StreamChange::Keepalive)
                    .await;
                last_sign = Instant::now();
            }
        }
    }
}
