//! The typed REST client of api.md §4–§5: one method per client route, every request signed (auth.md §2) with a
//! fresh nonce, or upstream 0.4's way on request. Also the low-level `send_signed`/`send_raw` and `signed_headers`
//! that tests use to send arbitrary, stale or replayed requests. It does not retry or reconnect: following a job
//! (cli.md §4.2) is the caller's loop.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use protocol::ErrorBody;
use protocol::ids::{EventId, JobId};
use protocol::rest::{
    CommandResponse, EventLine, EventType, HealthResponse, JanitorAction, JanitorRequest,
    JanitorResponse, JobRecord, JobRequest, JobStatus, LogsResponse, PollResponse, WorkerInfo,
};
use protocol::signing::{self, HmacKey, RequestToSign, SignedHeaders};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;

use crate::error::{DecodeError, Error};
use crate::ndjson::{DEFAULT_MAX_LINE_BYTES, LinesOnly, NdjsonStream};
use crate::query::{QueryString, encode_path_segment, percent_decode};

/// Timeout of an ordinary (non-streaming) request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Added to a long poll's `wait` for its timeout.
const LONG_POLL_MARGIN: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an unexpected error body is kept for [`Error::UnexpectedStatus`].
const MAX_ERROR_TEXT: usize = 512;

/// How requests are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SigningMode {
    /// The nonce extension (auth.md §2.3): a fresh nonce per request, the query signed. What dffmpeg programs send.
    #[default]
    Nonce,
    /// Exactly as upstream dffmpeg 0.4 clients sign: no nonce, the query unsigned (auth.md §2.2). For
    /// compatibility tests.
    Upstream,
}

/// The answer of `POST /jobs/submit`.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub job: JobRecord,
    /// `Idempotent-Replayed: true` was set: the job existed already (same idempotency key or a replayed signature).
    pub replayed: bool,
}

/// An answer as received, whatever its status.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RawResponse {
    /// A header's value, when present and valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The body as an [`ErrorBody`], if it is one.
    pub fn error_body(&self) -> Option<ErrorBody> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body decoded as JSON of type `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        serde_json::from_slice(&self.body).map_err(|source| DecodeError::Json {
            what: "response body",
            source,
        })
    }
}

/// Query of `GET /jobs` (api.md §5.2). `None` leaves a parameter out, so the coordinator's default applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobsQuery {
    /// Seconds; finished jobs updated within it are listed.
    pub window: Option<u64>,
    /// Only jobs older than this one (paging backwards).
    pub since_id: Option<JobId>,
    pub limit: Option<u32>,
    /// Keep only these statuses.
    pub status: Option<Vec<JobStatus>>,
}

/// Query of `GET /jobs/{id}/events` (api.md §5.5). `None` leaves a parameter out (`follow` then defaults to true).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventsQuery {
    /// Resume after this event id.
    pub after: Option<EventId>,
    pub follow: Option<bool>,
    /// Seconds of silence before the coordinator sends an empty line (1–60).
    pub keepalive: Option<u32>,
    /// Only these line types (the `job` line always comes first).
    pub types: Option<Vec<EventType>>,
}

/// A stream of `GET /jobs/{id}/events` lines. Keepalives are exposed as [`crate::StreamItem::Keepalive`], because a
/// follower needs them to tell a quiet job from a dead connection (cli.md §4.2).
pub type EventStream = NdjsonStream<EventLine>;
/// A stream of `GET /poll/jobs/{id}` NDJSON lines, keepalives left out.
pub type PollStream = LinesOnly<PollResponse>;

/// A signed REST client for one coordinator and one identity. Cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// `scheme://host:port`, without a path.
    origin: Url,
    /// A prefix a reverse proxy strips (`/dffmpeg`, or empty). Sent, never signed (api.md §1).
    path_base: String,
    client_id: String,
    key: Arc<HmacKey>,
    signing: SigningMode,
    request_timeout: Duration,
    max_line_bytes: usize,
}

impl Client {
    /// A client for `base_url` (`http://127.0.0.1:8000`, or with a path base: `https://proxy/dffmpeg`), signing as
    /// `client_id` with `key`. Everything after the authority is the path base.
    pub fn new(
        base_url: &str,
        client_id: impl Into<String>,
        key: HmacKey,
    ) -> Result<Client, Error> {
        let mut origin = Url::parse(base_url)
            .map_err(|err| Error::InvalidRequest(format!("base URL '{base_url}': {err}")))?;
        if !matches!(origin.scheme(), "http" | "https") || !origin.has_host() {
            return Err(Error::InvalidRequest(format!(
                "base URL '{base_url}': expected http://host:port or https://…"
            )));
        }
        if origin.query().is_some() || origin.fragment().is_some() {
            return Err(Error::InvalidRequest(format!(
                "base URL '{base_url}': a query or fragment is not allowed"
            )));
        }
        let path_base = origin.path().trim_end_matches('/').to_owned();
        origin.set_path("");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("dffmpeg-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Transport)?;
        Ok(Client {
            http,
            origin,
            path_base,
            client_id: client_id.into(),
            key: Arc::new(key),
            signing: SigningMode::Nonce,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        })
    }

    /// The same client signing in `mode`.
    pub fn with_signing(mut self, mode: SigningMode) -> Client {
        self.signing = mode;
        self
    }

    /// The same client with another timeout for ordinary requests (streams have none; long polls get `wait` + 30 s).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Client {
        self.request_timeout = timeout;
        self
    }

    /// The same client with another cap on one NDJSON stream line.
    pub fn with_max_line_bytes(mut self, max_line_bytes: usize) -> Client {
        self.max_line_bytes = max_line_bytes;
        self
    }

    /// The identity this client signs as.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// How this client signs.
    pub fn signing(&self) -> SigningMode {
        self.signing
    }

    /// The path base, empty when none.
    pub fn path_base(&self) -> &str {
        &self.path_base
    }

    /// The full URL a `path_and_query` is sent to.
    pub fn url_for(&self, path_and_query: &str) -> Result<Url, Error> {
        Ok(self.prepare(path_and_query)?.url)
    }

    // ----- client routes -----

    /// `POST /jobs/submit` (api.md §5.1).
    pub async fn submit(&self, request: &JobRequest) -> Result<Submitted, Error> {
        let response = self
            .post_json("/jobs/submit", request, "job request")
            .await?;
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.eq_ignore_ascii_case("true"));
        let job = read_json(response, "JobRecord").await?;
        Ok(Submitted { job, replayed })
    }

    /// `GET /jobs/{id}/status`.
    pub async fn job_status(&self, job_id: JobId) -> Result<JobRecord, Error> {
        self.get_json(&format!("/jobs/{job_id}/status"), "JobRecord")
            .await
    }

    /// `GET /jobs` (api.md §5.2): the caller's own jobs, newest first.
    pub async fn jobs_list(&self, query: &JobsQuery) -> Result<Vec<JobRecord>, Error> {
        self.get_json(&jobs_list_path(query), "job list").await
    }

    /// `POST /jobs/{id}/cancel`. A terminal job answers `detail: "Job already finished"`.
    pub async fn cancel(&self, job_id: JobId) -> Result<CommandResponse, Error> {
        self.post_empty(&format!("/jobs/{job_id}/cancel"), "CommandResponse")
            .await
    }

    /// `POST /jobs/{id}/client_heartbeat`, with `?monitor=` when given.
    pub async fn client_heartbeat(
        &self,
        job_id: JobId,
        monitor: Option<bool>,
    ) -> Result<CommandResponse, Error> {
        let mut query = QueryString::new();
        query.push_opt("monitor", monitor);
        self.post_empty(
            &query.append_to(&format!("/jobs/{job_id}/client_heartbeat")),
            "CommandResponse",
        )
        .await
    }

    /// `GET /jobs/{id}/logs` (api.md §5.3).
    pub async fn logs(
        &self,
        job_id: JobId,
        since_message_id: Option<EventId>,
        limit: Option<u32>,
    ) -> Result<LogsResponse, Error> {
        let mut query = QueryString::new();
        query
            .push_opt("since_message_id", since_message_id)
            .push_opt("limit", limit);
        self.get_json(&query.append_to(&format!("/jobs/{job_id}/logs")), "logs")
            .await
    }

    /// `GET /poll/jobs/{id}` as a long poll (api.md §5.6): waits up to `wait` seconds for a message.
    pub async fn poll(
        &self,
        job_id: JobId,
        last_message_id: Option<EventId>,
        wait: u64,
    ) -> Result<PollResponse, Error> {
        let path = poll_path(job_id, last_message_id, wait);
        let timeout = Duration::from_secs(wait).saturating_add(LONG_POLL_MARGIN);
        let response = self
            .call(Method::GET, &path, Bytes::new(), None, None, Some(timeout))
            .await?;
        read_json(response, "poll answer").await
    }

    /// `GET /poll/jobs/{id}` streaming (`Accept: application/x-ndjson`): one `PollResponse` per line; `wait` is the
    /// keepalive interval, and keepalive lines are skipped.
    pub async fn poll_stream(
        &self,
        job_id: JobId,
        last_message_id: Option<EventId>,
        wait: u64,
    ) -> Result<PollStream, Error> {
        let path = poll_path(job_id, last_message_id, wait);
        let response = self
            .call(
                Method::GET,
                &path,
                Bytes::new(),
                None,
                Some("application/x-ndjson"),
                None,
            )
            .await?;
        Ok(LinesOnly::new(NdjsonStream::new(
            response.bytes_stream(),
            "poll line",
            self.max_line_bytes,
        )))
    }

    /// `GET /jobs/{id}/events` (api.md §5.5): NDJSON event lines, keepalives included. The stream has no timeout
    /// of its own: a follower applies its silence rule to the items, keepalives counting as signs of life.
    pub async fn events(&self, job_id: JobId, query: &EventsQuery) -> Result<EventStream, Error> {
        let path = events_path(job_id, query);
        let response = self
            .call(
                Method::GET,
                &path,
                Bytes::new(),
                None,
                Some("application/x-ndjson"),
                None,
            )
            .await?;
        Ok(NdjsonStream::new(
            response.bytes_stream(),
            "event line",
            self.max_line_bytes,
        ))
    }

    /// `GET /workers` (api.md §5.7); `window` in seconds, the coordinator's default (86400) when `None`.
    pub async fn workers(&self, window: Option<u64>) -> Result<Vec<WorkerInfo>, Error> {
        let mut query = QueryString::new();
        query.push_opt("window", window);
        self.get_json(&query.append_to("/workers"), "worker list")
            .await
    }

    /// `GET /workers/{id}`.
    pub async fn worker(&self, worker_id: &str) -> Result<WorkerInfo, Error> {
        self.get_json(
            &format!("/workers/{}", encode_path_segment(worker_id)),
            "Worker",
        )
        .await
    }

    /// `POST /admin/janitor` (api.md §5.8); answered `202`.
    pub async fn janitor(&self, action: JanitorAction) -> Result<JanitorResponse, Error> {
        let response = self
            .post_json(
                "/admin/janitor",
                &JanitorRequest { action },
                "janitor request",
            )
            .await?;
        read_json(response, "janitor answer").await
    }

    /// `GET /health` (api.md §4.2), unsigned (the route takes no auth). A `503` (`shutdown`) or `500`
    /// (`unhealthy`) whose body is a health answer is returned as that answer, not as an error.
    pub async fn health(&self, deep: bool) -> Result<HealthResponse, Error> {
        let path = if deep { "/health?deep=true" } else { "/health" };
        let prepared = self.prepare(path)?;
        let response = self
            .http
            .get(prepared.url)
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(Error::Transport)?;
        let status = response.status().as_u16();
        let request_id = request_id(response.headers());
        let body = response.bytes().await.map_err(Error::Transport)?;
        match serde_json::from_slice::<HealthResponse>(&body) {
            Ok(health) if matches!(status, 200..=299 | 500 | 503) => Ok(health),
            Err(source) if (200..300).contains(&status) => Err(Error::Decode(DecodeError::Json {
                what: "health answer",
                source,
            })),
            _ => Err(error_from_parts(status, &body, request_id)),
        }
    }

    // ----- low level -----

    /// Sends a request signed now (this client's signing mode), whatever its status, with extra headers appended
    /// after the signature headers (a repeated `x-dffmpeg-*` name is sent twice). `path_and_query` starts with `/`
    /// and excludes the path base.
    pub async fn send_signed<I, K, V>(
        &self,
        method: Method,
        path_and_query: &str,
        body: impl Into<Bytes>,
        extra_headers: I,
    ) -> Result<RawResponse, Error>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        let body = body.into();
        let prepared = self.prepare(path_and_query)?;
        let signed = self.sign_prepared(
            &method,
            &prepared,
            &body,
            unix_now(),
            self.fresh_nonce().as_deref(),
        );
        let mut headers = signed_header_map(&signed)?;
        append_headers(&mut headers, extra_headers)?;
        self.send_prepared(method, prepared, body, headers).await
    }

    /// Sends a request with exactly the given headers and no signature of its own: for prepared
    /// [`Client::signed_headers`] (stale, future or replayed), or for no authentication at all.
    pub async fn send_raw<I, K, V>(
        &self,
        method: Method,
        path_and_query: &str,
        body: impl Into<Bytes>,
        headers: I,
    ) -> Result<RawResponse, Error>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        let prepared = self.prepare(path_and_query)?;
        let mut header_map = HeaderMap::new();
        append_headers(&mut header_map, headers)?;
        self.send_prepared(method, prepared, body.into(), header_map)
            .await
    }

    /// The signature headers for a request as this client would send it, with a chosen timestamp and nonce
    /// (`None`: upstream signing, the query unsigned). The path and query are signed as they go on the wire.
    pub fn signed_headers(
        &self,
        method: &Method,
        path_and_query: &str,
        body: &[u8],
        timestamp: i64,
        nonce: Option<&str>,
    ) -> Result<SignedHeaders, Error> {
        let prepared = self.prepare(path_and_query)?;
        Ok(self.sign_prepared(method, &prepared, body, timestamp, nonce))
    }

    /// The canonical string (auth.md §2.2–2.3) this client signs for a request; for tests and debug logs.
    pub fn canonical_string(
        &self,
        method: &Method,
        path_and_query: &str,
        body: &[u8],
        timestamp: i64,
        nonce: Option<&str>,
    ) -> Result<String, Error> {
        let prepared = self.prepare(path_and_query)?;
        let extension = nonce.map(|nonce| signing::NonceParts {
            query: &prepared.query,
            nonce,
        });
        Ok(signing::canonical_string(
            method.as_str(),
            &prepared.signed_path,
            &timestamp.to_string(),
            body,
            extension,
        ))
    }

    // ----- internals -----

    fn fresh_nonce(&self) -> Option<String> {
        match self.signing {
            SigningMode::Nonce => Some(signing::new_nonce()),
            SigningMode::Upstream => None,
        }
    }

    fn prepare(&self, path_and_query: &str) -> Result<PreparedRequest, Error> {
        prepare_request(&self.origin, &self.path_base, path_and_query)
    }

    fn sign_prepared(
        &self,
        method: &Method,
        prepared: &PreparedRequest,
        body: &[u8],
        timestamp: i64,
        nonce: Option<&str>,
    ) -> SignedHeaders {
        signing::sign_request(
            &self.client_id,
            &self.key,
            RequestToSign {
                method: method.as_str(),
                path: &prepared.signed_path,
                query: &prepared.query,
                body,
                timestamp,
                nonce,
            },
        )
    }

    async fn send_prepared(
        &self,
        method: Method,
        prepared: PreparedRequest,
        body: Bytes,
        headers: HeaderMap,
    ) -> Result<RawResponse, Error> {
        let response = self
            .http
            .request(method, prepared.url)
            .headers(headers)
            .body(body)
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(Error::Transport)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(Error::Transport)?;
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }

    /// Signs and sends; a non-2xx answer becomes an error.
    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Bytes,
        content_type: Option<&'static str>,
        accept: Option<&'static str>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, Error> {
        let prepared = self.prepare(path_and_query)?;
        let signed = self.sign_prepared(
            &method,
            &prepared,
            &body,
            unix_now(),
            self.fresh_nonce().as_deref(),
        );
        let mut headers = signed_header_map(&signed)?;
        if let Some(content_type) = content_type {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        if let Some(accept) = accept {
            headers.insert(ACCEPT, HeaderValue::from_static(accept));
        }
        let mut request = self
            .http
            .request(method, prepared.url)
            .headers(headers)
            .body(body);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request.send().await.map_err(Error::Transport)?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let request_id = request_id(response.headers());
        let body = response.bytes().await.map_err(Error::Transport)?;
        Err(error_from_parts(status, &body, request_id))
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
        what: &'static str,
    ) -> Result<T, Error> {
        self.bodyless_json(Method::GET, path_and_query, what).await
    }

    async fn post_empty<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
        what: &'static str,
    ) -> Result<T, Error> {
        self.bodyless_json(Method::POST, path_and_query, what).await
    }

    /// A signed `POST` of a JSON body.
    async fn post_json<B: serde::Serialize>(
        &self,
        path: &str,
        body: &B,
        what: &'static str,
    ) -> Result<reqwest::Response, Error> {
        let body = serde_json::to_vec(body)
            .map_err(|source| Error::Decode(DecodeError::Json { what, source }))?;
        let timeout = Some(self.request_timeout);
        self.call(
            Method::POST,
            path,
            Bytes::from(body),
            Some("application/json"),
            None,
            timeout,
        )
        .await
    }

    /// A request without a body whose answer is JSON.
    async fn bodyless_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        what: &'static str,
    ) -> Result<T, Error> {
        let timeout = Some(self.request_timeout);
        let response = self
            .call(method, path_and_query, Bytes::new(), None, None, timeout)
            .await?;
        read_json(response, what).await
    }
}

/// A request path resolved the way it goes on the wire.
#[derive(Debug)]
struct PreparedRequest {
    /// Path base + path + query.
    url: Url,
    /// The path without the path base, percent-decoded: the `path` of the canonical string.
    signed_path: String,
    /// The query exactly as sent, without `?`.
    query: String,
}

/// Resolves `path_and_query` as the URL parser will send it (normalised path, encoded query), so the signature
/// covers the bytes on the wire.
fn prepare_request(
    origin: &Url,
    path_base: &str,
    path_and_query: &str,
) -> Result<PreparedRequest, Error> {
    if !path_and_query.starts_with('/') {
        return Err(Error::InvalidRequest(format!(
            "path '{path_and_query}' does not start with '/'"
        )));
    }
    let parsed = Url::parse(&format!("http://dffmpeg.invalid{path_and_query}"))
        .map_err(|err| Error::InvalidRequest(format!("path '{path_and_query}': {err}")))?;
    let mut url = origin.clone();
    url.set_path(&format!("{path_base}{}", parsed.path()));
    url.set_query(parsed.query());
    Ok(PreparedRequest {
        url,
        signed_path: percent_decode(parsed.path()),
        query: parsed.query().unwrap_or("").to_owned(),
    })
}

fn jobs_list_path(query: &JobsQuery) -> String {
    let mut text = QueryString::new();
    text.push_opt("window", query.window)
        .push_opt("since_id", query.since_id)
        .push_opt("limit", query.limit)
        .push_opt(
            "status",
            query
                .status
                .as_ref()
                .map(|statuses| join(statuses.iter().map(|s| s.as_str()))),
        );
    text.append_to("/jobs")
}

fn poll_path(job_id: JobId, last_message_id: Option<EventId>, wait: u64) -> String {
    let mut query = QueryString::new();
    query
        .push_opt("last_message_id", last_message_id)
        .push("wait", wait.to_string());
    query.append_to(&format!("/poll/jobs/{job_id}"))
}

fn events_path(job_id: JobId, events: &EventsQuery) -> String {
    let mut query = QueryString::new();
    query
        .push_opt("after", events.after)
        .push_opt("follow", events.follow)
        .push_opt("keepalive", events.keepalive)
        .push_opt(
            "types",
            events
                .types
                .as_ref()
                .map(|types| join(types.iter().map(|t| event_type_name(*t)))),
        );
    query.append_to(&format!("/jobs/{job_id}/events"))
}

fn event_type_name(event_type: EventType) -> &'static str {
    match event_type {
        EventType::Status => "status",
        EventType::Output => "output",
        EventType::Progress => "progress",
        EventType::Notice => "notice",
    }
}

fn join<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(",")
}

/// Current Unix time in whole seconds, the `x-dffmpeg-timestamp` of a request signed now.
pub fn unix_now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(elapsed) => i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |secs| -secs),
    }
}

fn signed_header_map(signed: &SignedHeaders) -> Result<HeaderMap, Error> {
    let mut headers = HeaderMap::new();
    append_headers(&mut headers, signed.pairs())?;
    Ok(headers)
}

fn append_headers<I, K, V>(headers: &mut HeaderMap, pairs: I) -> Result<(), Error>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<[u8]>,
{
    for (name, value) in pairs {
        let name = HeaderName::from_bytes(name.as_ref().as_bytes()).map_err(|_| {
            Error::InvalidRequest(format!("invalid header name '{}'", name.as_ref()))
        })?;
        let value = HeaderValue::from_bytes(value.as_ref())
            .map_err(|_| Error::InvalidRequest(format!("invalid value for header '{name}'")))?;
        headers.append(name, value);
    }
    Ok(())
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// A non-2xx answer: `Api` when the body is an [`ErrorBody`], else `UnexpectedStatus`.
fn error_from_parts(status: u16, body: &[u8], request_id: Option<String>) -> Error {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(body) => Error::Api {
            status,
            body,
            request_id,
        },
        Err(_) => {
            let shown = &body[..body.len().min(MAX_ERROR_TEXT)];
            Error::UnexpectedStatus {
                status,
                body: String::from_utf8_lossy(shown).into_owned(),
                request_id,
            }
        }
    }
}

async fn read_json<T: DeserializeOwned>(
    response: reqwest::Response,
    what: &'static str,
) -> Result<T, Error> {
    let body = response.bytes().await.map_err(Error::Transport)?;
    serde_json::from_slice(&body)
        .map_err(|source| Error::Decode(DecodeError::Json { what, source }))
}

#[cfg(test)]
mod tests {
    use protocol::signing::{HEADER_NONCE, decode_signature, verify};

    use super::*;

    const KEY: &str = "qHdOvnF4mlz6TSStMCoY6KvEpDQGpcteNU2LMGInyuY=";

    fn client(base: &str) -> Client {
        Client::new(base, "client01", HmacKey::parse(KEY).unwrap()).unwrap()
    }

    fn job_id() -> JobId {
        JobId::parse("01JDQ3V6K9Z8Y7X6W5V4T3S2R1").unwrap()
    }

    #[test]
    fn base_url_splits_into_origin_and_unsigned_path_base() {
        let plain = client("http://127.0.0.1:8000");
        assert_eq!(plain.path_base(), "");
        assert_eq!(
            plain.url_for("/jobs?window=600").unwrap().as_str(),
            "http://127.0.0.1:8000/jobs?window=600"
        );
        let slash = client("http://127.0.0.1:8000/");
        assert_eq!(slash.path_base(), "");
        let based = client("https://proxy.example/dffmpeg/");
        assert_eq!(based.path_base(), "/dffmpeg");
        assert_eq!(
            based.url_for("/jobs/submit").unwrap().as_str(),
            "https://proxy.example/dffmpeg/jobs/submit"
        );
        let canonical = based
            .canonical_string(&Method::POST, "/jobs/submit", b"", 1795544728, None)
            .unwrap();
        assert_eq!(
            canonical,
            format!(
                "POST|/jobs/submit|1795544728|{}",
                signing::EMPTY_BODY_SHA256
            )
        );
        for bad in ["ftp://x/", "not a url", "http://h:1/?q=1", "http://h:1/#f"] {
            assert!(matches!(
                Client::new(bad, "c", HmacKey::parse(KEY).unwrap()),
                Err(Error::InvalidRequest(_))
            ));
        }
        assert!(matches!(
            plain.url_for("jobs"),
            Err(Error::InvalidRequest(_))
        ));
    }

    #[test]
    fn signed_headers_verify_against_the_exact_canonical_string() {
        let client = client("http://127.0.0.1:8000/base");
        let key = HmacKey::parse(KEY).unwrap();
        let body = br#"{"binary_name":"ffmpeg"}"#;
        let nonce = "3q2-7wAAAAB8Zx1bWfN0kA";
        let headers = client
            .signed_headers(
                &Method::POST,
                "/jobs/submit?x=a b",
                body,
                1795544728,
                Some(nonce),
            )
            .unwrap();
        assert_eq!(headers.client_id, "client01");
        assert_eq!(headers.timestamp, "1795544728");
        assert_eq!(headers.nonce.as_deref(), Some(nonce));
        let canonical = format!(
            "POST|/jobs/submit|1795544728|{}|x=a%20b|{nonce}",
            signing::body_sha256_hex(body)
        );
        assert_eq!(
            client
                .canonical_string(
                    &Method::POST,
                    "/jobs/submit?x=a b",
                    body,
                    1795544728,
                    Some(nonce)
                )
                .unwrap(),
            canonical
        );
        let signature = decode_signature(&headers.signature).unwrap();
        assert!(verify(&key, &canonical, &signature));
        // The query as sent is what was signed.
        assert_eq!(
            client.url_for("/jobs/submit?x=a b").unwrap().query(),
            Some("x=a%20b")
        );
    }

    #[test]
    fn upstream_signing_matches_test_vector_1() {
        let client = client("http://127.0.0.1:8000").with_signing(SigningMode::Upstream);
        let headers = client
            .signed_headers(&Method::GET, "/jobs?window=600", b"", 1795544691, None)
            .unwrap();
        assert_eq!(
            headers.signature,
            "Ttx4hPrkP8olkV3zswH7I3nuHCsOEBmbf88oX5+rMN4="
        );
        assert!(
            headers
                .pairs()
                .iter()
                .all(|(name, _)| *name != HEADER_NONCE)
        );
        let with_nonce = client.signed_headers(
            &Method::GET,
            "/jobs?window=600",
            b"",
            1795544691,
            Some("3q2-7wAAAAB8Zx1bWfN0kA"),
        );
        assert_eq!(
            with_nonce.unwrap().signature,
            "ZkhT9ZJFEc0Jo7Hs1OQ0x5iOin0psjY7gUYqE0W/rOE="
        );
    }

    #[test]
    fn signed_path_is_percent_decoded_and_excludes_the_path_base() {
        let client = client("http://127.0.0.1:8000/pre");
        let canonical = client
            .canonical_string(&Method::GET, "/workers/a%20b", b"", 1, Some("n"))
            .unwrap();
        assert!(canonical.starts_with("GET|/workers/a b|1|"), "{canonical}");
        assert!(canonical.ends_with("||n"), "{canonical}");
        assert_eq!(
            client.url_for("/workers/a%20b").unwrap().path(),
            "/pre/workers/a%20b"
        );
    }

    #[test]
    fn route_paths_and_queries() {
        let id = job_id();
        assert_eq!(jobs_list_path(&JobsQuery::default()), "/jobs");
        let query = JobsQuery {
            window: Some(600),
            since_id: Some(id),
            limit: Some(10),
            status: Some(vec![JobStatus::Running, JobStatus::Failed]),
        };
        assert_eq!(
            jobs_list_path(&query),
            "/jobs?window=600&since_id=01JDQ3V6K9Z8Y7X6W5V4T3S2R1&limit=10&status=running,failed"
        );
        assert_eq!(
            poll_path(id, None, 0),
            "/poll/jobs/01JDQ3V6K9Z8Y7X6W5V4T3S2R1?wait=0"
        );
        let cursor = EventId::parse("01JDQ3V6KA0M6QW8N4C1ZV3B7E").unwrap();
        assert_eq!(
            poll_path(id, Some(cursor), 20),
            "/poll/jobs/01JDQ3V6K9Z8Y7X6W5V4T3S2R1?last_message_id=01JDQ3V6KA0M6QW8N4C1ZV3B7E&wait=20"
        );
        assert_eq!(
            events_path(id, &EventsQuery::default()),
            "/jobs/01JDQ3V6K9Z8Y7X6W5V4T3S2R1/events"
        );
        let events = EventsQuery {
            after: Some(cursor),
            follow: Some(false),
            keepalive: Some(5),
            types: Some(vec![
                EventType::Status,
                EventType::Output,
                EventType::Notice,
            ]),
        };
        assert_eq!(
            events_path(id, &events),
            "/jobs/01JDQ3V6K9Z8Y7X6W5V4T3S2R1/events?after=01JDQ3V6KA0M6QW8N4C1ZV3B7E&follow=false&keepalive=5\
             &types=status,output,notice"
        );
        // Every built path survives the URL parser unchanged, so what is signed is what is sent.
        let client = client("http://127.0.0.1:1");
        for path in [
            jobs_list_path(&query),
            poll_path(id, Some(cursor), 20),
            events_path(id, &events),
        ] {
            let url = client.url_for(&path).unwrap();
            let sent = match url.query() {
                Some(query) => format!("{}?{query}", url.path()),
                None => url.path().to_owned(),
            };
            assert_eq!(sent, path);
        }
    }

    #[test]
    fn error_bodies_become_api_errors() {
        let err = error_from_parts(
            404,
            br#"{"detail":"Job not found","code":"job_not_found"}"#,
            Some("r1".into()),
        );
        match err {
            Error::Api {
                status,
                body,
                request_id,
            } => {
                assert_eq!(status, 404);
                assert_eq!(body.code, protocol::ErrorCode::JobNotFound);
                assert_eq!(request_id.as_deref(), Some("r1"));
            }
            other => panic!("expected Api, got {other:?}"),
        }
        let err = error_from_parts(502, b"<html>bad gateway</html>", None);
        assert!(
            matches!(err, Error::UnexpectedStatus { status: 502, .. }),
            "{err:?}"
        );
        assert_eq!(err.status(), Some(502));
        assert!(err.code().is_none());
    }

    #[test]
    fn unix_now_is_plausible() {
        // 2024-01-01 .. 2200-01-01.
        assert!((1_704_067_200..7_258_118_400).contains(&unix_now()));
    }
}
