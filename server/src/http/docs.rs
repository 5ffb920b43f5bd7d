//! API documentation (api.md §4.4): the OpenAPI 3.1 document at `GET /openapi.json`, built in code with utoipa's
//! builders from the route list of api.md §2 (wire schemas come from `protocol`'s `ToSchema` derives); Swagger UI
//! at `GET /docs` with its files under `/docs/`; ReDoc at `GET /redoc` with its bundle under `/redoc/`. Every file
//! comes from the binary and is looked up by exact name in a table; the pages reference no other origin, contain no
//! inline script and carry a strict `Content-Security-Policy`. `api_docs_enabled: false` turns all of it off.
//! Not here: `ETag`/`304` for the assets (a later change), the dashboard's pages.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, Parameter, ParameterBuilder, ParameterIn, PathItem,
    PathsBuilder,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{
    ArrayBuilder, ComponentsBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema,
    SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, InfoBuilder, LicenseBuilder, OpenApi, OpenApiBuilder, Ref,
    RefOr, Required, ResponseBuilder, ResponsesBuilder,
};
use utoipa::{PartialSchema, ToSchema};

use protocol::ErrorCode;
use protocol::rest::{
    CommandResponse, EventLine, HealthResponse, JanitorRequest, JanitorResponse, JobRecord,
    JobRequest, LogsResponse, PollResponse, WorkerInfo,
};
use protocol::signing::{HEADER_CLIENT_ID, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP};

use crate::error::ApiError;
use crate::state::AppState;

/// `Content-Security-Policy` of the docs pages and their files. Scripts, style sheets, fetches and workers come
/// from `'self'` only: no inline script, no `eval`, no other origin (ReDoc's bundle tries to show a logo from
/// cdn.redoc.ly; the policy refuses it and the bundle then hides it). `style-src 'unsafe-inline'` because ReDoc
/// (styled-components) injects its styles at run time and does not render without it; `img-src data:` for the SVG
/// icons inlined in Swagger UI's stylesheet; `font-src data:` for ReDoc's inlined icon font.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
    worker-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const PNG: &str = "image/png";
const TEXT: &str = "text/plain; charset=utf-8";

/// The Swagger UI files served under `/docs/`, from utoipa-swagger-ui's vendored dist (through
/// `utoipa_swagger_ui::serve`, which also fills in `swagger-initializer.js`).
const SWAGGER_ASSETS: &[(&str, &str)] = &[
    ("swagger-ui.css", CSS),
    ("index.css", CSS),
    ("swagger-ui-bundle.js", JS),
    ("swagger-ui-standalone-preset.js", JS),
    ("swagger-initializer.js", JS),
    ("favicon-32x32.png", PNG),
    ("favicon-16x16.png", PNG),
];

/// The ReDoc page, and the files served under `/redoc/` (server/assets/redoc/README.md says where they come from).
const REDOC_PAGE: &[u8] = include_bytes!("../../assets/redoc/index.html");
const REDOC_ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "redoc.standalone.js",
        JS,
        include_bytes!("../../assets/redoc/redoc.standalone.js"),
    ),
    ("init.js", JS, include_bytes!("../../assets/redoc/init.js")),
    (
        "page.css",
        CSS,
        include_bytes!("../../assets/redoc/page.css"),
    ),
    (
        "LICENSE",
        TEXT,
        include_bytes!("../../assets/redoc/LICENSE"),
    ),
];

/// What went wrong inside utoipa-swagger-ui (its errors are neither `Send` nor `Sync`).
#[derive(Debug, thiserror::Error)]
#[error("serving Swagger UI file '{file}': {message}")]
struct SwaggerError {
    file: String,
    message: String,
}

fn enabled(state: &AppState) -> Result<(), ApiError> {
    if state.settings.api_docs_enabled {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::ApiDocsDisabled,
            "API docs disabled",
        ))
    }
}

/// Adds the security headers of the docs routes (dashboard-and-metrics.md §4.1) to `headers`.
fn secure(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
}

fn file_response(content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut response = (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body.into(),
    )
        .into_response();
    secure(response.headers_mut());
    response
}

/// The name after `prefix` (`/docs/`, `/redoc/`), exactly as sent: no decoding, so `%2F` or `..` never match.
fn asset_name<'a>(uri: &'a Uri, prefix: &str) -> &'a str {
    uri.path().strip_prefix(prefix).unwrap_or("")
}

static SWAGGER_CONFIG: LazyLock<Arc<utoipa_swagger_ui::Config<'static>>> = LazyLock::new(|| {
    Arc::new(
        utoipa_swagger_ui::Config::new(["/openapi.json"])
            // "none": no badge image from validator.swagger.io, which the CSP would refuse anyway.
            .validator_url("none")
            .display_request_duration(true),
    )
});

fn swagger_file(name: &str) -> Result<Option<utoipa_swagger_ui::SwaggerFile<'static>>, ApiError> {
    utoipa_swagger_ui::serve(name, SWAGGER_CONFIG.clone()).map_err(|err| {
        ApiError::internal(SwaggerError {
            file: name.to_owned(),
            message: err.to_string(),
        })
    })
}

/// The dist's `index.html` with its relative links made absolute under `/docs/`, since the page itself is served at
/// `/docs` (where `./swagger-ui.css` would resolve to the root).
fn swagger_index() -> Result<String, ApiError> {
    let file = swagger_file("index.html")?.ok_or_else(|| {
        ApiError::internal(SwaggerError {
            file: "index.html".to_owned(),
            message: "missing from the vendored dist".to_owned(),
        })
    })?;
    let page = String::from_utf8_lossy(&file.bytes)
        .replace("href=\"./", "href=\"/docs/")
        .replace("src=\"./", "src=\"/docs/")
        .replace("href=\"index.css\"", "href=\"/docs/index.css\"")
        .replace(
            "<title>Swagger UI</title>",
            "<title>dffmpeg coordinator API — Swagger UI</title>",
        );
    Ok(page)
}

/// `GET /docs`: the Swagger UI page.
pub(crate) async fn swagger_page(State(state): State<AppState>) -> Result<Response, ApiError> {
    enabled(&state)?;
    Ok(file_response(HTML, swagger_index()?))
}

/// `GET /docs/{asset}`: a Swagger UI file of [`SWAGGER_ASSETS`].
pub(crate) async fn swagger_asset(
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    let name = asset_name(&uri, "/docs/");
    let (name, content_type) = SWAGGER_ASSETS
        .iter()
        .find(|(known, _)| *known == name)
        .ok_or_else(ApiError::not_found)?;
    let file = swagger_file(name)?.ok_or_else(ApiError::not_found)?;
    let mut response = file_response(content_type, file.bytes);
    if file.gzpipped {
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(response)
}

/// `GET /redoc`: the ReDoc page.
pub(crate) async fn redoc_page(State(state): State<AppState>) -> Result<Response, ApiError> {
    enabled(&state)?;
    Ok(file_response(HTML, REDOC_PAGE))
}

/// `GET /redoc/{asset}`: a file of [`REDOC_ASSETS`].
pub(crate) async fn redoc_asset(
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    let name = asset_name(&uri, "/redoc/");
    let (_, content_type, bytes) = REDOC_ASSETS
        .iter()
        .find(|(known, _, _)| *known == name)
        .ok_or_else(ApiError::not_found)?;
    Ok(file_response(content_type, *bytes))
}

static DOCUMENT: LazyLock<OpenApi> = LazyLock::new(document);

/// `GET /openapi.json`.
pub(crate) async fn openapi_json(State(state): State<AppState>) -> Result<Response, ApiError> {
    enabled(&state)?;
    let body = serde_json::to_vec(&*DOCUMENT).map_err(ApiError::internal)?;
    Ok(file_response("application/json", body))
}

// ---------------------------------------------------------------------------------------------------------------
// The document.

const TAG_SYSTEM: &str = "system";
const TAG_DOCS: &str = "docs";
const TAG_JOBS: &str = "jobs";
const TAG_STREAMS: &str = "job streams";
const TAG_WORKERS: &str = "workers";
const TAG_ADMIN: &str = "admin";

/// Names of the security schemes, one per header (OpenAPI's `apiKey` covers one header each).
const SCHEME_CLIENT_ID: &str = "dffmpeg_client_id";
const SCHEME_TIMESTAMP: &str = "dffmpeg_timestamp";
const SCHEME_SIGNATURE: &str = "dffmpeg_signature";
const SCHEME_NONCE: &str = "dffmpeg_nonce";

const ULID_PATTERN: &str = "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$";
const IDENTITY_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$";

const API_DESCRIPTION: &str = "\
The REST API of the dffmpeg coordinator (wire-compatible with upstream dffmpeg 0.4 where marked in api.md).

**Authentication.** Client routes and the worker WebSocket upgrade are signed with HMAC-SHA256 (auth.md): send \
`x-dffmpeg-client-id`, `x-dffmpeg-timestamp` (Unix seconds) and `x-dffmpeg-signature` (standard base64 of \
HMAC-SHA256(key, `METHOD|path|timestamp|sha256hex(body)`)). With the optional `x-dffmpeg-nonce` (16–64 characters \
`[A-Za-z0-9_-]`) the signed string is `METHOD|path|timestamp|sha256hex(body)|query|nonce`. The path is the \
percent-decoded request path without the query. Swagger UI's *Try it out* cannot sign requests; use \
`dffmpeg-client` or `dffmpeg-admin`.

**Errors.** Every error has the body `ErrorBody`: `{\"detail\": \"…\", \"code\": \"…\"}`; `code` is stable \
(api.md §6) and each response below lists the codes a route can answer with that status. A `500` always says \
`Internal Server Error`. `503`, `429 stdin_window_full` and `429 replay_cache_full` carry `Retry-After: 1`. \
Any path not listed answers `404 not_found`; a listed path with another method `405 method_not_allowed` with \
an `Allow` header. Paths match exactly (no trailing-slash redirect).

**Conventions.** Request bodies are JSON (`Content-Type: application/json` or absent); a field a route does not \
define is refused with `422 invalid_body`. Ids (`job_id`, event and message ids) are ULIDs: 26 characters of \
Crockford base32, case-insensitive on input. Times are RFC 3339 UTC with microseconds. Every response carries \
`Cache-Control: no-cache, no-store, must-revalidate`, `X-Content-Type-Options: nosniff` and `X-Request-Id`.";

type Codes = &'static [(ErrorCode, &'static str)];

/// Refused before any request exists or by the edge: every route.
const EDGE: Codes = &[
    (
        ErrorCode::TooManyConnections,
        "Too many connections (`limits.max_connections`)",
    ),
    (
        ErrorCode::ShuttingDown,
        "Shutting down (the listener has closed)",
    ),
    (ErrorCode::Internal, "Internal Server Error"),
];

/// The header checks of auth.md §3, steps 1–7.
const AUTH: Codes = &[
    (
        ErrorCode::AuthRequired,
        "Authentication required (no `x-dffmpeg-*` header)",
    ),
    (
        ErrorCode::AuthIncomplete,
        "Incomplete HMAC authentication provided (a header missing or sent twice)",
    ),
    (ErrorCode::AuthUnknownClient, "Invalid user"),
    (
        ErrorCode::AuthIpNotAllowed,
        "Client IP not allowed (outside the identity's CIDRs)",
    ),
    (ErrorCode::AuthBadTimestamp, "Invalid timestamp"),
    (
        ErrorCode::AuthClockSkew,
        "Request timestamp outside allowed window (`security.timestamp_tolerance_seconds`)",
    ),
    (ErrorCode::AuthBadSignature, "Invalid HMAC signature"),
];

/// Reading the (signed) body of an authenticated request.
const BODY: Codes = &[
    (
        ErrorCode::BodyTooLarge,
        "Request body too large (limit <n> bytes) (`limits.max_body_bytes`)",
    ),
    (
        ErrorCode::UnsupportedMediaType,
        "Unsupported Content-Encoding '<enc>'; send the body uncompressed",
    ),
    (
        ErrorCode::RequestTimeout,
        "Request not received within <n> s (`limits.request_timeout`)",
    ),
    (
        ErrorCode::Overloaded,
        "Coordinator overloaded; retry later (the body budget is full)",
    ),
];

/// Mutating requests: the replay refusal of auth.md §4.
const REPLAY: Codes = &[
    (
        ErrorCode::AuthReplayed,
        "Replayed request (this signature was already used)",
    ),
    (
        ErrorCode::ReplayCacheFull,
        "Too many signed requests in the timestamp window; retry later",
    ),
];

/// A JSON request body.
const JSON_BODY: Codes = &[
    (
        ErrorCode::UnsupportedMediaType,
        "Unsupported Content-Type '<type>'; send application/json",
    ),
    (
        ErrorCode::MalformedJson,
        "Malformed JSON at line <l> column <c>: <reason>",
    ),
    (
        ErrorCode::InvalidBody,
        "<field path>: <reason> (wrong type, unknown, duplicate or missing field, out of range)",
    ),
];

/// A `{job_id}` in the path.
const JOB_PATH: Codes = &[
    (ErrorCode::InvalidJobId, "Invalid job ID"),
    (ErrorCode::JobNotFound, "Job not found (unknown or pruned)"),
];

const QUERY: Codes = &[(
    ErrorCode::InvalidQuery,
    "Invalid query parameter '<name>': <reason> (not a number or boolean, out of range, given twice)",
)];

const STREAMS: Codes = &[(
    ErrorCode::TooManyStreams,
    "Too many open streams (`limits.max_streams`)",
)];

/// The outcome of a change handed to the scheduler and committed.
const COMMIT: Codes = &[
    (
        ErrorCode::Overloaded,
        "Coordinator overloaded; retry later (not admitted within `limits.request_timeout`)",
    ),
    (
        ErrorCode::StoreUnavailable,
        "Storage unavailable (a flush failed)",
    ),
];

const DOCS_DISABLED: Codes = &[(
    ErrorCode::ApiDocsDisabled,
    "API docs disabled (`api_docs_enabled: false`)",
)];

/// Whether an operation is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    Open,
    Hmac,
}

/// One success (or non-error) answer of an operation.
struct Answer {
    status: u16,
    description: String,
    /// Media type → schema.
    content: Vec<(&'static str, RefOr<Schema>)>,
    /// Header name → (description, schema).
    headers: Vec<(&'static str, &'static str, RefOr<Schema>)>,
}

impl Answer {
    fn new(status: u16, description: &str) -> Answer {
        Answer {
            status,
            description: description.to_owned(),
            content: Vec::new(),
            headers: Vec::new(),
        }
    }

    fn json(self, schema: impl Into<RefOr<Schema>>) -> Answer {
        self.content("application/json", schema)
    }

    fn content(mut self, media_type: &'static str, schema: impl Into<RefOr<Schema>>) -> Answer {
        self.content.push((media_type, schema.into()));
        self
    }

    fn header(
        mut self,
        name: &'static str,
        description: &'static str,
        schema: impl Into<RefOr<Schema>>,
    ) -> Answer {
        self.headers.push((name, description, schema.into()));
        self
    }
}

/// One operation of the document.
struct Route {
    method: HttpMethod,
    path: &'static str,
    tag: &'static str,
    operation_id: &'static str,
    summary: &'static str,
    description: &'static str,
    auth: Auth,
    parameters: Vec<Parameter>,
    body: Option<(&'static str, RefOr<Schema>, &'static str)>,
    answers: Vec<Answer>,
    errors: Vec<Codes>,
}

impl Route {
    fn new(
        method: HttpMethod,
        path: &'static str,
        tag: &'static str,
        operation_id: &'static str,
        summary: &'static str,
    ) -> Route {
        Route {
            method,
            path,
            tag,
            operation_id,
            summary,
            description: "",
            auth: Auth::Open,
            parameters: Vec::new(),
            body: None,
            answers: Vec::new(),
            errors: vec![EDGE],
        }
    }

    fn describe(mut self, description: &'static str) -> Route {
        self.description = description;
        self
    }

    /// A signed route; `mutating` adds the replay refusal.
    fn hmac(mut self, mutating: bool) -> Route {
        self.auth = Auth::Hmac;
        self.errors.push(AUTH);
        self.errors.push(BODY);
        if mutating {
            self.errors.push(REPLAY);
        }
        self
    }

    fn param(mut self, parameter: Parameter) -> Route {
        self.parameters.push(parameter);
        self
    }

    fn body(
        mut self,
        media_type: &'static str,
        schema: impl Into<RefOr<Schema>>,
        description: &'static str,
    ) -> Route {
        self.body = Some((media_type, schema.into(), description));
        self
    }

    fn answer(mut self, answer: Answer) -> Route {
        self.answers.push(answer);
        self
    }

    fn errors(mut self, codes: Codes) -> Route {
        self.errors.push(codes);
        self
    }

    fn operation(self) -> Operation {
        let mut operation = OperationBuilder::new()
            .tag(self.tag)
            .operation_id(Some(self.operation_id))
            .summary(Some(self.summary))
            .parameters(Some(self.parameters));
        if !self.description.is_empty() {
            operation = operation.description(Some(self.description));
        }
        if self.auth == Auth::Hmac {
            operation = operation.securities(Some(hmac_requirements()));
        }
        if let Some((media_type, schema, description)) = self.body {
            operation = operation.request_body(Some(
                RequestBodyBuilder::new()
                    .description(Some(description))
                    .required(Some(Required::True))
                    .content(
                        media_type,
                        ContentBuilder::new().schema(Some(schema)).build(),
                    )
                    .build(),
            ));
        }
        let mut answers: BTreeMap<u16, Answer> = self
            .answers
            .into_iter()
            .map(|answer| (answer.status, answer))
            .collect();
        // Errors grouped by status, each listed once with its detail (a code may come from several steps).
        let mut by_status: BTreeMap<u16, Vec<(ErrorCode, &'static str)>> = BTreeMap::new();
        for (code, detail) in self.errors.iter().flat_map(|codes| codes.iter()) {
            let list = by_status.entry(code.status()).or_default();
            if !list.contains(&(*code, *detail)) {
                list.push((*code, *detail));
            }
        }
        for (status, codes) in by_status {
            let mut text = String::from("`ErrorBody` with one of these codes:\n");
            for (code, detail) in &codes {
                text.push_str(&format!("\n- `{code}`: {detail}"));
            }
            if codes.iter().any(|(code, _)| code.retry_after()) {
                text.push_str("\n\nCarries `Retry-After: 1`.");
            }
            let error_body: RefOr<Schema> = Ref::from_schema_name("ErrorBody").into();
            match answers.remove(&status) {
                Some(mut answer) => {
                    // A status the route also answers with its own body (`/health`'s 503 and 500).
                    answer.description = format!("{}\n\nOr an error: {text}", answer.description);
                    answer.content = answer
                        .content
                        .into_iter()
                        .map(|(media_type, schema)| {
                            if media_type == "application/json" {
                                let either: RefOr<Schema> = OneOfBuilder::new()
                                    .item(schema)
                                    .item(error_body.clone())
                                    .into();
                                (media_type, either)
                            } else {
                                (media_type, schema)
                            }
                        })
                        .collect();
                    answers.insert(status, answer);
                }
                None => {
                    let mut answer = Answer::new(status, &text).json(error_body);
                    if codes.iter().any(|(code, _)| code.retry_after()) {
                        answer = answer.header(
                            "Retry-After",
                            "Seconds to wait before retrying: always 1.",
                            integer(Some(1), Some(1)),
                        );
                    }
                    answers.insert(status, answer);
                }
            }
        }
        let mut responses = ResponsesBuilder::new();
        for (status, answer) in answers {
            let mut response = ResponseBuilder::new().description(answer.description);
            for (media_type, schema) in answer.content {
                response = response.content(
                    media_type,
                    ContentBuilder::new().schema(Some(schema)).build(),
                );
            }
            for (name, description, schema) in answer.headers {
                response = response.header(
                    name,
                    HeaderBuilder::new()
                        .schema(Some(schema))
                        .description(Some(description))
                        .build(),
                );
            }
            responses = responses.response(status.to_string(), response.build());
        }
        operation.responses(responses.build()).build()
    }
}

fn hmac_requirements() -> Vec<SecurityRequirement> {
    let signed = [SCHEME_CLIENT_ID, SCHEME_TIMESTAMP, SCHEME_SIGNATURE];
    let without_nonce = signed
        .iter()
        .fold(SecurityRequirement::default(), |requirement, name| {
            requirement.add(*name, Vec::<String>::new())
        });
    let with_nonce = without_nonce
        .clone()
        .add(SCHEME_NONCE, Vec::<String>::new());
    vec![without_nonce, with_nonce]
}

fn header_scheme(name: &str, description: &str) -> SecurityScheme {
    SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
        name,
        description,
    )))
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn boolean(default: Option<bool>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .default(default.map(serde_json::Value::from))
        .into()
}

fn integer(minimum: Option<i64>, maximum: Option<i64>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(minimum)
        .maximum(maximum)
}

fn ulid() -> RefOr<Schema> {
    string()
        .min_length(Some(26))
        .max_length(Some(26))
        .pattern(Some(ULID_PATTERN))
        .examples(["01JDQ3V6K9Z8Y7X6W5V4T3S2R1"])
        .into()
}

fn schema_ref(name: &str) -> RefOr<Schema> {
    Ref::from_schema_name(name).into()
}

fn array_of(name: &str) -> RefOr<Schema> {
    ArrayBuilder::new()
        .items(Ref::from_schema_name(name))
        .into()
}

fn parameter(
    location: ParameterIn,
    name: &str,
    required: bool,
    schema: impl Into<RefOr<Schema>>,
    description: &str,
) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(location)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .schema(Some(schema))
        .description(Some(description))
        .build()
}

fn query(name: &str, schema: impl Into<RefOr<Schema>>, description: &str) -> Parameter {
    parameter(ParameterIn::Query, name, false, schema, description)
}

fn job_id_param() -> Parameter {
    parameter(
        ParameterIn::Path,
        "job_id",
        true,
        ulid(),
        "The job's ULID (case-insensitive). Not a ULID → `400 invalid_job_id`.",
    )
}

fn asset_param(names: Vec<&'static str>) -> Parameter {
    parameter(
        ParameterIn::Path,
        "asset",
        true,
        string().enum_values(Some(names)),
        "File name, matched exactly (no decoding, no directories). Any other name → `404 not_found`.",
    )
}

fn html_page(status_text: &str) -> Answer {
    Answer::new(200, status_text).content("text/html; charset=utf-8", string())
}

/// The `403 permission_denied` of a job route (api.md §5.3), whose detail differs per route.
fn job_not_owned(route: &str) -> Codes {
    match route {
        "status" => &[(
            ErrorCode::PermissionDenied,
            "No permission to job (not the requester, the job's current worker or an admin)",
        )],
        "cancel" => &[(ErrorCode::PermissionDenied, "No permission to cancel job")],
        "heartbeat" => &[(
            ErrorCode::PermissionDenied,
            "No permission to heartbeat for this job",
        )],
        "logs" => &[(
            ErrorCode::PermissionDenied,
            "No permission to view job logs",
        )],
        "stdin" => &[(
            ErrorCode::PermissionDenied,
            "No permission to job (only the requester forwards stdin)",
        )],
        _ => &[(ErrorCode::PermissionDenied, "No permission to job")],
    }
}

/// Every documented route, in the order of api.md §2.
fn routes() -> Vec<Route> {
    use HttpMethod::{Get, Post};
    let mut swagger_names: Vec<&'static str> =
        SWAGGER_ASSETS.iter().map(|(name, _)| *name).collect();
    swagger_names.sort_unstable();
    let mut redoc_names: Vec<&'static str> =
        REDOC_ASSETS.iter().map(|(name, _, _)| *name).collect();
    redoc_names.sort_unstable();
    vec![
        Route::new(Get, "/health", TAG_SYSTEM, "health", "Liveness, and with `deep=true` a store check")
            .describe("No authentication. `/health` still answers while the coordinator shuts down (with `503`).")
            .param(query("deep", boolean(Some(false)), "Also read one key of each store tree and report the transports."))
            .answer(Answer::new(200, "Online. `databases` and `transports` are null unless `deep=true`.").json(schema_ref("HealthResponse")))
            .answer(Answer::new(503, "Shutting down: `HealthResponse` with `\"status\": \"shutdown\"`.").json(schema_ref("HealthResponse")))
            .answer(Answer::new(500, "Deep check failed: `HealthResponse` with `\"status\": \"unhealthy\"` (wins over 503).").json(schema_ref("HealthResponse")))
            .errors(QUERY),
        Route::new(Get, "/metrics", TAG_SYSTEM, "metrics", "Prometheus metrics, or upstream's JSON counts")
            .describe("Client IP must be in `allowed_metrics_ips` (no other authentication). Served whether or not the dashboard is enabled. `Accept` is not consulted.")
            .param(query("format", string().enum_values(Some(["prometheus", "json"])).default(Some("prometheus".into())), "`prometheus` (default): text exposition 0.0.4; `json`: upstream's JSON counts."))
            .answer(
                Answer::new(200, "Prometheus text (default) or, with `format=json`, upstream's JSON counts.")
                    .content("text/plain; version=0.0.4; charset=utf-8", string())
                    .json(schema_ref("MetricsJson")),
            )
            .errors(&[(ErrorCode::Forbidden, "Forbidden (client IP not in `allowed_metrics_ips`)")])
            .errors(&[(ErrorCode::InvalidQuery, "Invalid query parameter 'format': expected prometheus or json")]),
        Route::new(Get, "/docs", TAG_DOCS, "docs_swagger", "Swagger UI")
            .describe("The Swagger UI page, served from the binary; its files are under `/docs/`. No inline script; strict `Content-Security-Policy`.")
            .answer(html_page("The page."))
            .errors(DOCS_DISABLED),
        Route::new(Get, "/docs/{asset}", TAG_DOCS, "docs_swagger_asset", "A Swagger UI file")
            .param(asset_param(swagger_names))
            .answer(
                Answer::new(200, "The file, with its content type.")
                    .content("text/javascript; charset=utf-8", string())
                    .content("text/css; charset=utf-8", string())
                    .content("image/png", string().content_media_type("image/png")),
            )
            .errors(DOCS_DISABLED)
            .errors(&[(ErrorCode::NotFound, "Not Found (no such file)")]),
        Route::new(Get, "/redoc", TAG_DOCS, "docs_redoc", "ReDoc")
            .describe("The ReDoc page: the embedded ReDoc 3 bundle (an ES module) is loaded by `/redoc/init.js`, telemetry off.")
            .answer(html_page("The page."))
            .errors(DOCS_DISABLED),
        Route::new(Get, "/redoc/{asset}", TAG_DOCS, "docs_redoc_asset", "A ReDoc file")
            .param(asset_param(redoc_names))
            .answer(
                Answer::new(200, "The file, with its content type.")
                    .content("text/javascript; charset=utf-8", string())
                    .content("text/css; charset=utf-8", string())
                    .content("text/plain; charset=utf-8", string()),
            )
            .errors(DOCS_DISABLED)
            .errors(&[(ErrorCode::NotFound, "Not Found (no such file)")]),
        Route::new(Get, "/openapi.json", TAG_DOCS, "openapi", "This OpenAPI 3.1 document")
            .answer(Answer::new(200, "The document.").json(ObjectBuilder::new().schema_type(Type::Object)))
            .errors(DOCS_DISABLED),
        Route::new(Post, "/jobs/submit", TAG_JOBS, "jobs_submit", "Create a job")
            .describe("Role `client` or `admin`. Checks run in the order of limits-and-bad-input.md §3.1: authentication and body, role, content type, JSON, fields, binary, transports, path variables, argument policy, idempotency, queue, admission, commit. \
The answer is sent once the job is durable; `status` is `pending`, or `assigned` when the scheduler placed it in the same commit.\n\n\
**Idempotency:** the pair (requester, key) names at most one job. A repeat with the same key and an identical request (binary, arguments, paths, working directory, priority, stdin) returns the stored job with `Idempotent-Replayed: true`. A repeated signature is answered the same way.")
            .hmac(true)
            .param(parameter(ParameterIn::Header, "Idempotency-Key", false, string().min_length(Some(1)).max_length(Some(128)), "Same as the body's `idempotency_key` (1–128 printable ASCII characters); if both are given they must be equal (`422 invalid_body`)."))
            .body("application/json", schema_ref("JobRequest"), "The job. Unknown fields are refused.")
            .answer(
                Answer::new(200, "The job, durable (or the stored job of an idempotent repeat).")
                    .json(schema_ref("JobRecord"))
                    .header("Idempotent-Replayed", "`true` when this answers a repeat (same idempotency key or repeated signature) with the job created before.", string().enum_values(Some(["true"]))),
            )
            .errors(&[(ErrorCode::RoleNotAllowed, "Role 'worker' may not submit jobs")])
            .errors(JSON_BODY)
            .errors(&[
                (ErrorCode::InvalidBody, "`limits.max_paths`, `limits.max_arguments`, `limits.max_argument_bytes`, `limits.max_job_bytes` exceeded; `priority` outside −1000…1000; `heartbeat_interval` not 0 or 1…3600; `Idempotency-Key` header and body differ"),
                (ErrorCode::UnsupportedBinary, "Unsupported binary name: <name> (not in `allowed_binaries`)"),
                (ErrorCode::NoSupportedTransport, "No supported transports (`supported_transports` lacks `http_polling`)"),
                (ErrorCode::InvalidPathVariable, "Invalid path variable name: <name>"),
                (ErrorCode::InvalidPathVariable, "Working directory uses path variable '<Var>' that is not listed in paths"),
                (ErrorCode::PathEscape, "Path escapes its variable root: <argument>"),
                (ErrorCode::ArgumentNotAllowed, "Argument <i> not allowed: <rule>: <argument> (argument policy)"),
                (ErrorCode::IdempotencyConflict, "Idempotency key reused with a different request"),
                (ErrorCode::QueueFull, "Job queue full (`limits.max_pending_jobs`)"),
            ])
            .errors(COMMIT),
        Route::new(Get, "/jobs", TAG_JOBS, "jobs_list", "The caller's recent jobs")
            .describe("The caller's own jobs (also for admins), newest `job_id` first: active jobs always, finished jobs if `last_update > now − window`. Role `client` or `admin`.")
            .hmac(false)
            .param(query("window", integer(Some(0), None).default(Some(3600.into())), "Seconds: finished jobs updated within the window are included."))
            .param(query("since_id", ulid(), "Paging backwards: only jobs with `job_id < since_id`. Invalid → `400 invalid_cursor`."))
            .param(query("limit", integer(Some(1), None).default(Some(1000.into())), "1 to `limits.max_list_items` (the default is lowered to it when smaller)."))
            .param(query("status", string().examples(["pending,running"]), "Comma-separated statuses to keep: `pending`, `assigned`, `running`, `canceling`, `completed`, `failed`, `canceled`."))
            .answer(Answer::new(200, "The jobs.").json(array_of("JobRecord")))
            .errors(&[(ErrorCode::RoleNotAllowed, "Role 'worker' may not list jobs")])
            .errors(&[(ErrorCode::InvalidCursor, "Invalid since_id")])
            .errors(QUERY),
        Route::new(Get, "/jobs/{job_id}/status", TAG_JOBS, "jobs_status", "One job")
            .describe("The requester, the job's current worker, or an admin.")
            .hmac(false)
            .param(job_id_param())
            .answer(Answer::new(200, "The job.").json(schema_ref("JobRecord")))
            .errors(JOB_PATH)
            .errors(job_not_owned("status")),
        Route::new(Post, "/jobs/{job_id}/cancel", TAG_JOBS, "jobs_cancel", "Cancel a job")
            .describe("The requester or an admin. `pending` → `canceled` at once; `assigned`/`running` → `canceling` and the worker is told; `canceling` → unchanged, the cancel is re-sent. A finished job is left alone (`detail: \"Job already finished\"`). Durable before the answer.")
            .hmac(true)
            .param(job_id_param())
            .answer(Answer::new(200, "`{\"status\": \"ok\", \"detail\": null}`, or `detail: \"Job already finished\"`.").json(schema_ref("CommandResponse")))
            .errors(JOB_PATH)
            .errors(job_not_owned("cancel"))
            .errors(COMMIT),
        Route::new(Post, "/jobs/{job_id}/client_heartbeat", TAG_JOBS, "jobs_client_heartbeat", "Requester sign of life")
            .describe("The requester or an admin. Sets `client_last_seen`; with `monitor`, sets the job's `monitor` flag (flushed before the answer).")
            .hmac(true)
            .param(job_id_param())
            .param(query("monitor", boolean(None), "Set the job's `monitor` flag. Booleans accept `true false 1 0 yes no on off t f y n`, any case."))
            .answer(Answer::new(200, "`{\"status\": \"ok\", \"detail\": null}`, or `detail: \"Job already finished\"`.").json(schema_ref("CommandResponse")))
            .errors(JOB_PATH)
            .errors(job_not_owned("heartbeat"))
            .errors(QUERY)
            .errors(COMMIT),
        Route::new(Get, "/jobs/{job_id}/logs", TAG_JOBS, "jobs_logs", "Stored output as log entries")
            .describe("The requester or an admin. One entry per stored output chunk, oldest first; a job whose output reached `limits.max_output_bytes_per_job` also gets a synthetic `[dffmpeg] output truncated at <n> bytes` entry.")
            .hmac(false)
            .param(job_id_param())
            .param(query("since_message_id", ulid(), "Only entries with a larger id. Invalid → `400 invalid_cursor` (checked before the job lookup)."))
            .param(query("limit", integer(Some(1), None), "Only the newest `limit` entries (capped at `limits.max_list_items`), returned oldest first. Without it: all, capped at `limits.max_list_items`."))
            .answer(Answer::new(200, "The entries and the cursor to continue from.").json(schema_ref("LogsResponse")))
            .errors(&[(ErrorCode::InvalidCursor, "Invalid since_message_id")])
            .errors(JOB_PATH)
            .errors(job_not_owned("logs"))
            .errors(QUERY),
        Route::new(Get, "/poll/jobs/{job_id}", TAG_STREAMS, "poll_job", "Upstream's polling channel (long poll or NDJSON)")
            .describe("The requester or an admin. With `Accept: application/x-ndjson` the answer is a stream: each line `{\"messages\": […]}` (≤ 1000 messages) as soon as messages exist, a bare newline after `wait` seconds without one, until the client closes it or the coordinator shuts down. \
Otherwise a long poll: messages after the cursor at once (≤ 1000), else wait up to `wait` seconds (capped at `limits.max_poll_wait`) for one, else `{\"messages\": []}`. Progress is never sent here. An open stream or a poll is a sign of life of the requester.")
            .hmac(false)
            .param(job_id_param())
            .param(query("last_message_id", ulid(), "Cursor: only messages with a larger id. Without it, every message from the beginning. Invalid → `400 invalid_cursor`."))
            .param(query("wait", integer(None, None).default(Some(0.into())), "Long poll: seconds to wait for a message. Streaming: keepalive interval in seconds; ≤ 0 means 15."))
            .answer(
                Answer::new(200, "Long poll: one `PollResponse`. Streaming (`Accept: application/x-ndjson`): `PollResponse` lines; an empty line is a keepalive.")
                    .json(schema_ref("PollResponse"))
                    .content("application/x-ndjson", schema_ref("PollResponse")),
            )
            .errors(&[(ErrorCode::InvalidCursor, "Invalid last_message_id")])
            .errors(JOB_PATH)
            .errors(job_not_owned("poll"))
            .errors(QUERY)
            .errors(STREAMS),
        Route::new(Get, "/jobs/{job_id}/events", TAG_STREAMS, "jobs_events", "NDJSON stream of status, output, progress and notices")
            .describe("The requester or an admin. The first line is always `{\"type\": \"job\", \"job\": JobRecord}`; then stored events in id order, then (with `follow=true`) live events until the terminal `status` line. `progress` lines are live only. \
Output past `limits.max_output_bytes_per_job` is relayed live without `id` and with `\"stored\": false`. An empty line is a keepalive. An open stream is a sign of life of the requester; shutdown ends it (resume with `after`).")
            .hmac(false)
            .param(job_id_param())
            .param(query("after", ulid(), "Resume after this event id. Invalid → `400 invalid_cursor`. Without it the stream starts at the job's first event."))
            .param(query("follow", boolean(Some(true)), "Keep the stream open for live events until the job is terminal; `false`: send the stored events and end."))
            .param(query("keepalive", integer(Some(1), Some(60)).default(Some(15.into())), "Seconds of silence after which an empty line is sent."))
            .param(query("types", string().examples(["status,output"]), "Comma-separated subset of `status,output,progress,notice` (default: all)."))
            .answer(Answer::new(200, "`application/x-ndjson`: one `EventLine` per line; an empty line is a keepalive.").content("application/x-ndjson", schema_ref("EventLine")))
            .errors(&[(ErrorCode::InvalidCursor, "Invalid after")])
            .errors(JOB_PATH)
            .errors(job_not_owned("events"))
            .errors(QUERY)
            .errors(STREAMS),
        Route::new(Post, "/jobs/{job_id}/stdin", TAG_JOBS, "jobs_stdin", "Forward stdin bytes to the running process")
            .describe("The requester only, for a job submitted with `stdin: true`. Bytes are relayed to the current attempt, not stored. A chunk entirely before the next expected byte is a duplicate and is answered `200` without effect.")
            .hmac(true)
            .param(job_id_param())
            .param(parameter(ParameterIn::Query, "offset", true, integer(Some(0), None), "Byte offset of this chunk in the job's stdin stream."))
            .param(query("eof", boolean(Some(false)), "Close the process's stdin after this chunk (an empty body with `eof=true` just closes it)."))
            .body("application/octet-stream", string().content_media_type("application/octet-stream"), "Raw bytes (`Content-Type: application/octet-stream` or absent), at most `limits.max_body_bytes`.")
            .answer(Answer::new(200, "Queued on the worker session (or a duplicate chunk).").json(schema_ref("StdinResponse")))
            .errors(JOB_PATH)
            .errors(job_not_owned("stdin"))
            .errors(QUERY)
            .errors(&[
                (ErrorCode::UnsupportedMediaType, "Unsupported Content-Type '<type>'; send application/octet-stream"),
                (ErrorCode::StdinNotEnabled, "Job was not submitted with stdin"),
                (ErrorCode::JobNotStarted, "Job has not started yet (retry later)"),
                (ErrorCode::JobFinished, "Job already finished (terminal or canceling)"),
                (ErrorCode::StdinOffset, "Expected stdin offset <n>; the body has `expected_offset` = <n>"),
                (ErrorCode::StdinWindowFull, "Stdin window full (`limits.stdin_window_bytes` forwarded but not yet written)"),
            ]),
        Route::new(Get, "/workers", TAG_WORKERS, "workers_list", "Worker list")
            .describe("Any role. Online and draining workers, plus offline ones seen within `window`; online/draining first, then `last_seen` descending, then `worker_id`.")
            .hmac(false)
            .param(query("window", integer(Some(0), None).default(Some(86_400.into())), "Seconds: offline workers seen within the window are included."))
            .answer(Answer::new(200, "The workers.").json(array_of("WorkerInfo")))
            .errors(QUERY),
        Route::new(Get, "/workers/{worker_id}", TAG_WORKERS, "workers_show", "One worker")
            .describe("Any role.")
            .hmac(false)
            .param(parameter(ParameterIn::Path, "worker_id", true, string().pattern(Some(IDENTITY_PATTERN)), "The worker's identity id (1–64 characters `[A-Za-z0-9._@-]`, first a letter or digit)."))
            .answer(Answer::new(200, "The worker.").json(schema_ref("WorkerInfo")))
            .errors(&[(ErrorCode::WorkerNotFound, "Worker not found (also for a malformed id)")]),
        Route::new(Post, "/admin/janitor", TAG_ADMIN, "admin_janitor", "Run a janitor action now")
            .describe("Role `admin`. The action runs on the janitor's queue right away.")
            .hmac(true)
            .body("application/json", schema_ref("JanitorRequest"), "The action.")
            .answer(Answer::new(202, "`{\"message\": \"Action accepted\", \"action\": \"<action>\"}`.").json(schema_ref("JanitorResponse")))
            .errors(&[(ErrorCode::RoleNotAllowed, "Admin role required")])
            .errors(JSON_BODY)
            .errors(&[(ErrorCode::Overloaded, "Coordinator overloaded; retry later (the janitor's queue is full)")]),
        Route::new(Get, "/worker/ws", TAG_WORKERS, "worker_session", "Worker WebSocket session")
            .describe("Role `worker`. The upgrade is signed like any request (empty body) and replay-checked; every refusal is an HTTP answer before any `101`. The protocol on the socket (binary MessagePack frames) is in worker-protocol.md.")
            .hmac(true)
            .param(parameter(ParameterIn::Header, "Upgrade", true, string().enum_values(Some(["websocket"])), "WebSocket upgrade."))
            .param(parameter(ParameterIn::Header, "Sec-WebSocket-Version", true, string().enum_values(Some(["13"])), "WebSocket version."))
            .param(parameter(ParameterIn::Header, "Sec-WebSocket-Key", true, string(), "WebSocket handshake key."))
            .answer(Answer::new(101, "Switching Protocols: the worker session starts."))
            .errors(&[
                (ErrorCode::RoleNotAllowed, "Worker role required"),
                (ErrorCode::WebsocketRequired, "WebSocket upgrade required (a plain GET)"),
                (ErrorCode::TooManySessions, "Too many worker sessions (`worker_session.max_sessions`)"),
            ]),
    ]
}

/// Schemas written here rather than derived: bodies without a `protocol` type.
fn local_schemas() -> Vec<(&'static str, RefOr<Schema>)> {
    let counts = || -> RefOr<Schema> {
        ObjectBuilder::new()
            .property("current", integer(Some(0), None))
            .property("last_1m", integer(Some(0), None))
            .property("last_5m", integer(Some(0), None))
            .required("current")
            .required("last_1m")
            .required("last_5m")
            .into()
    };
    let counts_map = || -> RefOr<Schema> {
        ObjectBuilder::new()
            .additional_properties(Some(counts()))
            .into()
    };
    vec![
        (
            "MetricsJson",
            ObjectBuilder::new()
                .description(Some("Upstream's job counts (dashboard-and-metrics.md §3.5): active jobs, and terminal jobs updated in the last 300 s."))
                .property("total", counts())
                .property("per_binary", counts_map())
                .property("per_worker", counts_map())
                .required("total")
                .required("per_binary")
                .required("per_worker")
                .into(),
        ),
        (
            "StdinResponse",
            ObjectBuilder::new()
                .description(Some("Answer of `POST /jobs/{job_id}/stdin`."))
                .property("status", string().enum_values(Some(["ok"])))
                .property(
                    "detail",
                    ObjectBuilder::new().schema_type(SchemaType::Array(vec![Type::String, Type::Null])),
                )
                .property(
                    "next_offset",
                    integer(Some(0), None).description(Some("The next byte offset the coordinator expects.")),
                )
                .required("status")
                .required("detail")
                .required("next_offset")
                .into(),
        ),
    ]
}

/// Adds `T` and every schema it references.
fn add_schema<T: ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) {
    schemas.push((T::name().into_owned(), <T as PartialSchema>::schema()));
    T::schemas(schemas);
}

/// The OpenAPI 3.1 document of the coordinator's API (api.md §4.4).
pub(crate) fn document() -> OpenApi {
    let mut paths = PathsBuilder::new();
    let mut items: BTreeMap<&'static str, PathItem> = BTreeMap::new();
    for route in routes() {
        let (path, method) = (route.path, route.method.clone());
        let operation = route.operation();
        match items.get_mut(path) {
            Some(item) => item.merge_operations(PathItem::new(method, operation)),
            None => {
                items.insert(path, PathItem::new(method, operation));
            }
        }
    }
    for (path, item) in items {
        paths = paths.path(path, item);
    }
    let mut schemas = Vec::new();
    add_schema::<JobRequest>(&mut schemas);
    add_schema::<JobRecord>(&mut schemas);
    add_schema::<CommandResponse>(&mut schemas);
    add_schema::<LogsResponse>(&mut schemas);
    add_schema::<PollResponse>(&mut schemas);
    add_schema::<EventLine>(&mut schemas);
    add_schema::<WorkerInfo>(&mut schemas);
    add_schema::<HealthResponse>(&mut schemas);
    add_schema::<JanitorRequest>(&mut schemas);
    add_schema::<JanitorResponse>(&mut schemas);
    add_schema::<protocol::ErrorBody>(&mut schemas);
    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas)
        .schemas_from_iter(local_schemas())
        .security_scheme(
            SCHEME_CLIENT_ID,
            header_scheme(HEADER_CLIENT_ID, "The identity's `client_id`."),
        )
        .security_scheme(
            SCHEME_TIMESTAMP,
            header_scheme(
                HEADER_TIMESTAMP,
                "Unix time in whole seconds, ASCII decimal; within `security.timestamp_tolerance_seconds` (300) of the coordinator's clock.",
            ),
        )
        .security_scheme(
            SCHEME_SIGNATURE,
            header_scheme(
                HEADER_SIGNATURE,
                "Standard base64 (44 characters) of HMAC-SHA256(key, `METHOD|path|timestamp|sha256hex(body)`), or with a nonce `METHOD|path|timestamp|sha256hex(body)|query|nonce`.",
            ),
        )
        .security_scheme(
            SCHEME_NONCE,
            header_scheme(
                HEADER_NONCE,
                "Optional: 16–64 characters `[A-Za-z0-9_-]`; switches to the extended signed string, which also covers the query and makes every signature unique.",
            ),
        )
        .build();
    let tags = [
        (TAG_SYSTEM, "Health and metrics; no HMAC."),
        (
            TAG_DOCS,
            "This document and its two viewers; no authentication.",
        ),
        (TAG_JOBS, "Submit, list, inspect and control jobs (HMAC)."),
        (
            TAG_STREAMS,
            "Follow a job: upstream's polling channel and the event stream (HMAC).",
        ),
        (TAG_WORKERS, "Workers and the worker session (HMAC)."),
        (TAG_ADMIN, "Administrative actions (HMAC, role admin)."),
    ]
    .map(|(name, description)| {
        TagBuilder::new()
            .name(name)
            .description(Some(description))
            .build()
    });
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("dffmpeg coordinator")
                .version(protocol::VERSION)
                .description(Some(API_DESCRIPTION))
                .license(Some(
                    LicenseBuilder::new()
                        .name("MIT")
                        .identifier(Some("MIT"))
                        .build(),
                )),
        )
        .paths(paths.build())
        .components(Some(components))
        .tags(Some(tags))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route of api.md §2 the document covers (all but `/`, the dashboard and the removed worker routes).
    const DOCUMENTED: &[(&str, &str)] = &[
        ("get", "/health"),
        ("get", "/metrics"),
        ("get", "/docs"),
        ("get", "/docs/{asset}"),
        ("get", "/redoc"),
        ("get", "/redoc/{asset}"),
        ("get", "/openapi.json"),
        ("post", "/jobs/submit"),
        ("get", "/jobs"),
        ("get", "/jobs/{job_id}/status"),
        ("post", "/jobs/{job_id}/cancel"),
        ("post", "/jobs/{job_id}/client_heartbeat"),
        ("get", "/jobs/{job_id}/logs"),
        ("get", "/poll/jobs/{job_id}"),
        ("get", "/jobs/{job_id}/events"),
        ("post", "/jobs/{job_id}/stdin"),
        ("get", "/workers"),
        ("get", "/workers/{worker_id}"),
        ("post", "/admin/janitor"),
        ("get", "/worker/ws"),
    ];

    fn json() -> serde_json::Value {
        let text = serde_json::to_string(&document()).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn refs<'a>(value: &'a serde_json::Value, found: &mut Vec<&'a str>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, item) in map {
                    match (key.as_str(), item) {
                        ("$ref", serde_json::Value::String(target)) => found.push(target),
                        _ => refs(item, found),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
            _ => {}
        }
    }

    #[test]
    fn document_is_openapi_3_1_with_title_and_version() {
        let doc = json();
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1"),
            "{}",
            doc["openapi"]
        );
        assert_eq!(doc["info"]["title"], "dffmpeg coordinator");
        assert_eq!(doc["info"]["version"], protocol::VERSION);
    }

    #[test]
    fn every_client_route_is_present_with_its_method_and_nothing_else() {
        let doc = json();
        let paths = doc["paths"].as_object().unwrap();
        for (method, path) in DOCUMENTED {
            let operation = &paths.get(*path).unwrap_or_else(|| panic!("{path} missing"))[*method];
            assert!(operation.is_object(), "{method} {path} missing");
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
        }
        let count: usize = paths
            .values()
            .map(|item| item.as_object().unwrap().len())
            .sum();
        assert_eq!(count, DOCUMENTED.len(), "undocumented extra operations");
        for excluded in ["/", "/status", "/worker/register", "/poll/worker"] {
            assert!(
                !paths.contains_key(excluded),
                "{excluded} must not be documented"
            );
        }
    }

    #[test]
    fn every_reference_resolves_and_hmac_routes_name_the_headers() {
        let doc = json();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.contains(&"#/components/schemas/ErrorBody"));
        for target in found {
            let name = target.strip_prefix("#/components/schemas/").unwrap();
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{target} does not resolve"
            );
        }
        let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
        let headers: Vec<&str> = schemes
            .values()
            .map(|scheme| scheme["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            headers,
            [
                HEADER_CLIENT_ID,
                HEADER_NONCE,
                HEADER_SIGNATURE,
                HEADER_TIMESTAMP
            ]
        );
        let submit = &doc["paths"]["/jobs/submit"]["post"];
        assert_eq!(submit["security"].as_array().unwrap().len(), 2);
        assert!(submit["security"][0].get(SCHEME_SIGNATURE).is_some());
        assert!(submit["security"][1].get(SCHEME_NONCE).is_some());
        assert!(doc["paths"]["/health"]["get"].get("security").is_none());
    }

    #[test]
    fn error_responses_list_their_codes_under_the_right_status() {
        let doc = json();
        let submit = &doc["paths"]["/jobs/submit"]["post"]["responses"];
        for (status, code) in [
            ("400", "unsupported_binary"),
            ("401", "auth_bad_signature"),
            ("401", "auth_replayed"),
            ("403", "role_not_allowed"),
            ("409", "idempotency_conflict"),
            ("413", "body_too_large"),
            ("415", "unsupported_media_type"),
            ("422", "malformed_json"),
            ("429", "replay_cache_full"),
            ("503", "queue_full"),
            ("500", "internal"),
        ] {
            let description = submit[status]["description"].as_str().unwrap_or_default();
            assert!(
                description.contains(&format!("`{code}`")),
                "{status} lacks {code}: {description}"
            );
        }
        assert!(submit["503"]["headers"]["Retry-After"].is_object());
        let stdin = &doc["paths"]["/jobs/{job_id}/stdin"]["post"]["responses"];
        assert!(
            stdin["409"]["description"]
                .as_str()
                .unwrap()
                .contains("`stdin_offset`")
        );
        let docs = &doc["paths"]["/docs"]["get"]["responses"];
        assert!(
            docs["404"]["description"]
                .as_str()
                .unwrap()
                .contains("`api_docs_disabled`")
        );
        let health = &doc["paths"]["/health"]["get"]["responses"];
        assert!(health["503"]["content"]["application/json"]["schema"]["oneOf"].is_array());
        assert!(doc["paths"]["/worker/ws"]["get"]["responses"]["101"].is_object());
        assert!(doc["paths"]["/admin/janitor"]["post"]["responses"]["202"].is_object());
    }

    #[test]
    fn swagger_page_links_only_its_own_files_and_has_no_inline_script() {
        let page = swagger_index().unwrap();
        assert!(!page.contains("\"./"), "{page}");
        let mut links = 0;
        for attribute in ["href=\"", "src=\""] {
            for (start, _) in page.match_indices(attribute) {
                let rest = &page[start + attribute.len()..];
                let target = &rest[..rest.find('"').unwrap()];
                let name = target
                    .strip_prefix("/docs/")
                    .unwrap_or_else(|| panic!("{target}"));
                assert!(
                    SWAGGER_ASSETS.iter().any(|(known, _)| *known == name),
                    "{name}"
                );
                links += 1;
            }
        }
        assert!(links >= 5, "{page}");
        assert_eq!(
            page.matches("<script").count(),
            page.matches("<script src=\"/docs/").count()
        );
        let initializer = swagger_file("swagger-initializer.js").unwrap().unwrap();
        let initializer = String::from_utf8(initializer.bytes.into_owned()).unwrap();
        assert!(initializer.contains("\"/openapi.json\""), "{initializer}");
        assert!(!initializer.contains("{{config}}"));
    }

    #[test]
    fn swagger_table_names_exist_in_the_vendored_dist() {
        for (name, _) in SWAGGER_ASSETS {
            let file = swagger_file(name)
                .unwrap()
                .unwrap_or_else(|| panic!("{name}"));
            assert!(!file.bytes.is_empty(), "{name}");
        }
    }

    #[test]
    fn redoc_page_loads_only_its_module() {
        let page = std::str::from_utf8(REDOC_PAGE).unwrap();
        assert_eq!(page.matches("<script").count(), 1);
        assert!(page.contains("<script type=\"module\" src=\"/redoc/init.js\"></script>"));
        let init = REDOC_ASSETS
            .iter()
            .find(|(name, _, _)| *name == "init.js")
            .unwrap()
            .2;
        let init = std::str::from_utf8(init).unwrap();
        assert!(init.contains("import { init } from \"./redoc.standalone.js\""));
        assert!(init.contains("disableTelemetry: true"));
        let bundle = REDOC_ASSETS
            .iter()
            .find(|(name, _, _)| *name == "redoc.standalone.js")
            .unwrap()
            .2;
        let tail = std::str::from_utf8(&bundle[bundle.len() - 200..]).unwrap();
        assert!(tail.contains("export{") && tail.contains("init"), "{tail}");
    }
}
