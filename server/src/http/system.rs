//! System routes: `GET /` (redirect), `GET /health` (shallow and deep, api.md §4.2), `POST /admin/janitor`
//! (api.md §5.8), the removed upstream worker routes (`410`, api.md §5.10), and the JSON 404/405 answers.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use protocol::ErrorCode;
use protocol::admin::Role;
use protocol::rest::{HealthCheck, HealthResponse, JanitorRequest, JanitorResponse};

use super::query::Query;
use super::{authenticate, json};
use crate::auth::{self, Kind};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::TreeName;

/// `GET /`: `307` to the dashboard, or to `/health` while there is none.
pub(crate) async fn root(State(state): State<AppState>) -> Response {
    let _ = &state;
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/health"));
    response
}

fn check(result: Result<(), String>) -> HealthCheck {
    match result {
        Ok(()) => HealthCheck {
            status: "online".to_owned(),
            detail: None,
        },
        Err(detail) => HealthCheck {
            status: "unhealthy".to_owned(),
            detail: Some(detail),
        },
    }
}

/// `GET /health`.
pub(crate) async fn health(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let query = Query::parse(request.uri().query());
    let deep = query.bool("deep")?.unwrap_or(false);
    let mut status = if state.is_shutting_down() {
        "shutdown"
    } else {
        "online"
    };
    let mut code = if state.is_shutting_down() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let (databases, transports) = if deep {
        let probe = |tree: TreeName| {
            check(state.store.probe(tree).map_err(|err| match err {
                crate::store::Error::Unavailable => "the last flush failed".to_owned(),
                _ => "the store could not be read".to_owned(),
            }))
        };
        let databases: BTreeMap<String, HealthCheck> = [
            ("auth", probe(TreeName::Identities)),
            ("jobs", probe(TreeName::Jobs)),
            ("messages", probe(TreeName::Events)),
            ("workers", probe(TreeName::Workers)),
        ]
        .into_iter()
        .map(|(name, check)| (name.to_owned(), check))
        .collect();
        let sessions = state.sessions.len();
        let transports: BTreeMap<String, HealthCheck> = [
            (
                "http_polling".to_owned(),
                HealthCheck {
                    status: "online".into(),
                    detail: Some("HTTP Polling mode (standalone)".into()),
                },
            ),
            (
                "websocket".to_owned(),
                HealthCheck {
                    status: "online".into(),
                    detail: Some(format!(
                        "{sessions} worker session{}",
                        if sessions == 1 { "" } else { "s" }
                    )),
                },
            ),
        ]
        .into();
        if databases.values().any(|check| check.status == "unhealthy") {
            status = "unhealthy";
            code = StatusCode::INTERNAL_SERVER_ERROR;
        }
        (Some(databases), Some(transports))
    } else {
        (None, None)
    };
    let body = HealthResponse {
        status: status.to_owned(),
        version: state.settings.version.clone(),
        databases,
        transports,
    };
    Ok((code, Json(body)).into_response())
}

/// `POST /admin/janitor`.
pub(crate) async fn janitor(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, verified) = authenticate(&state, request, Kind::Mutating).await?;
    let result = async {
        if verified.caller.role != Role::Admin {
            return Err(ApiError::new(
                ErrorCode::RoleNotAllowed,
                "Admin role required",
            ));
        }
        let body: JanitorRequest = json::parse(&parts.headers, &verified.body)?;
        if !state.janitor.request(body.action) {
            return Err(ApiError::overloaded());
        }
        Ok(body.action)
    }
    .await;
    auth::persist_replay(&state, verified.replay);
    let action = result?;
    let body = JanitorResponse {
        message: "Action accepted".to_owned(),
        action,
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// The removed upstream worker routes: `410`, no authentication, no side effects.
pub(crate) async fn removed() -> ApiError {
    ApiError::new(
        ErrorCode::UpstreamWorkerRoute,
        "Upstream HTTP workers are not supported; run dffmpeg-worker, which connects to /worker/ws",
    )
}

/// Unknown paths.
pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found()
}

/// A known path with another method (axum adds the `Allow` header).
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "Method Not Allowed")
}
