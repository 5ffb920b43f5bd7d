//! The HTTP edge: `router(state)` with every route of api.md §2, and the layers every answer passes through:
//! request ids and the headers of api.md §1, the one log line per failed request, the panic catcher, and the
//! shutdown gate. Handlers live one file per resource.

mod docs;
mod jobs;
mod json;
pub mod query;
mod streams;
mod submit;
mod system;
mod workers;

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::time::Instant;
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;

use crate::auth::{self, Kind, Verified};
use crate::error::{ApiError, LoggedCause};
use crate::state::AppState;

pub use submit::{fingerprint, validate, variable_of};

/// Authenticates a request and returns its head with the verified body.
pub(crate) async fn authenticate(
    state: &AppState,
    request: Request,
    kind: Kind,
) -> Result<(Parts, Verified), ApiError> {
    let deadline = Instant::now() + state.settings.limits.request_timeout;
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let (parts, body) = request.into_parts();
    let verified = match auth::verify(state, &parts, body, peer, kind, deadline).await {
        Ok(verified) => verified,
        Err(err) => {
            if err.status() == StatusCode::UNAUTHORIZED {
                let client_id = parts
                    .headers
                    .get(protocol::signing::HEADER_CLIENT_ID)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("-");
                tracing::warn!(client_id, peer = %peer.ip(), route = parts.uri.path(), code = %err.code, "authentication failed");
            }
            return Err(err);
        }
    };
    Ok((parts, verified))
}

/// Every route of api.md §2 that exists in this build.
pub fn router(state: AppState) -> Router {
    let removed = post(system::removed);
    Router::new()
        .route("/", get(system::root))
        .route("/health", get(system::health))
        .route("/docs", get(docs::swagger_page))
        .route("/docs/{asset}", get(docs::swagger_asset))
        .route("/redoc", get(docs::redoc_page))
        .route("/redoc/{asset}", get(docs::redoc_asset))
        .route("/openapi.json", get(docs::openapi_json))
        .route("/jobs/submit", post(jobs::submit))
        .route("/jobs", get(jobs::list))
        .route(
            "/jobs/{job_id}/status",
            get(jobs::status).post(system::removed),
        )
        .route("/jobs/{job_id}/cancel", post(jobs::cancel))
        .route(
            "/jobs/{job_id}/client_heartbeat",
            post(jobs::client_heartbeat),
        )
        .route("/jobs/{job_id}/logs", get(jobs::logs).post(system::removed))
        .route("/jobs/{job_id}/events", get(streams::events))
        .route("/poll/jobs/{job_id}", get(streams::poll))
        .route("/workers", get(workers::list))
        .route("/workers/{worker_id}", get(workers::show))
        .route("/admin/janitor", post(system::janitor))
        .route("/worker/ws", get(crate::ws::worker_ws))
        .route("/worker/register", removed.clone())
        .route("/worker/{worker_id}/verify", removed.clone())
        .route("/worker/deregister", removed.clone())
        .route("/poll/worker", get(system::removed))
        .route("/jobs/{job_id}/accept", removed.clone())
        .route("/jobs/{job_id}/reject", removed.clone())
        .route("/jobs/{job_id}/worker_heartbeat", removed)
        .route_layer(middleware::from_fn_with_state(state.clone(), shutdown_gate))
        .fallback(system::not_found)
        .method_not_allowed_fallback(system::method_not_allowed)
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                let mut response =
                    ApiError::new(protocol::ErrorCode::Internal, "Internal Server Error")
                        .into_response();
                response
                    .extensions_mut()
                    .insert(LoggedCause("a request handler panicked".to_owned()));
                response
            },
        ))
        .layer(middleware::from_fn(common))
        .with_state(state)
}

/// After the listener closed, new requests get `503 Shutting down` (`/health` answers on its own terms).
async fn shutdown_gate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.closing.is_cancelled() && request.uri().path() != "/health" {
        return ApiError::shutting_down().into_response();
    }
    next.run(request).await
}

fn request_id(request: &Request<Body>) -> String {
    request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
        .map_or_else(|| protocol::Ulid::generate().to_string(), str::to_owned)
}

/// The headers every answer carries (api.md §1), and the one log line per failed request.
async fn common(request: Request, next: Next) -> Response {
    let id = request_id(&request);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!("request", request_id = %id, %method, path = %path);
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    let _enter = span.enter();
    if status.is_server_error() {
        let cause = response
            .extensions()
            .get::<LoggedCause>()
            .map_or("-", |cause| cause.0.as_str());
        tracing::error!(status = status.as_u16(), cause, "request failed");
    } else if status.is_client_error() && status != StatusCode::UNAUTHORIZED {
        tracing::info!(status = status.as_u16(), "request refused");
    }
    let headers = response.headers_mut();
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, no-store, must-revalidate"),
        );
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        headers.insert(header::EXPIRES, HeaderValue::from_static("0"));
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert("x-request-id", value);
    }
    response
}
