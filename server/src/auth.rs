//! Request authentication (auth.md §3–§5) in the order of limits-and-bad-input.md §3.1: the declared body (size,
//! encoding), the header-only HMAC steps 1–6, then the body is read (deadline, size, memory budget), then the
//! signature, the replay claim and — in the handler — the role. No body is buffered for an unknown identity or a
//! stale timestamp. Also the client-IP resolution through trusted proxies shared with the IP allow-lists.

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use http_body_util::BodyExt;
use time::OffsetDateTime;
use tokio::time::Instant;

use protocol::admin::Role;
use protocol::signing::{self, NonceParts};
use protocol::{ErrorCode, JobId};

use crate::error::ApiError;
use crate::identity::{Claim, ClaimGuard};
use crate::settings::TrustedProxy;
use crate::state::AppState;
use crate::store::Batch;
use crate::store::records::ReplayRecord;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub client_id: String,
    pub role: Role,
    pub ip: Option<IpAddr>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// Whether a request changes state, for the replay check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Not checked for replays (`GET`s other than the WebSocket upgrade).
    Read,
    /// A repeated signature is refused with `401 auth_replayed`.
    Mutating,
    /// A repeated signature gets the job the first request created (api.md §5.1).
    Submit,
}

/// A verified request: the caller, the exact body bytes, and the replay claim.
#[derive(Debug)]
pub struct Verified {
    pub caller: Caller,
    pub body: Bytes,
    /// Held while the request is handled; finished with the created job (submits) or dropped.
    pub claim: Option<ClaimGuard>,
    /// The entry to persist for this signature (with the submit commit, or on its own).
    pub replay: Option<ReplayRecord>,
    /// A submit whose signature was used before: the job the first one created.
    pub repeated_submit: Option<JobId>,
}

fn auth_error(code: ErrorCode) -> ApiError {
    let detail = match code {
        ErrorCode::AuthRequired => "Authentication required",
        ErrorCode::AuthIncomplete => "Incomplete HMAC authentication provided",
        ErrorCode::AuthUnknownClient => "Invalid user",
        ErrorCode::AuthIpNotAllowed => "Client IP not allowed",
        ErrorCode::AuthBadTimestamp => "Invalid timestamp",
        ErrorCode::AuthClockSkew => "Request timestamp outside allowed window",
        ErrorCode::AuthBadSignature => "Invalid HMAC signature",
        ErrorCode::AuthReplayed => "Replayed request",
        _ => "Authentication required",
    };
    ApiError::new(code, detail)
}

/// `::ffff:a.b.c.d` is `a.b.c.d` everywhere (auth.md §5).
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The caller's IP (auth.md §5): the peer, or from `X-Forwarded-For` when the peer is a trusted proxy. `None`
/// when the chosen entry is not an IP address (it then matches no network).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[TrustedProxy]) -> Option<IpAddr> {
    let peer = canonical_ip(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|rule| rule.contains(&ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let entries: Vec<String> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|entry| entry.trim().to_owned())
        .filter(|entry| !entry.is_empty())
        .collect();
    if entries.is_empty() {
        return Some(peer);
    }
    let parse = |entry: &str| entry.parse::<IpAddr>().ok().map(canonical_ip);
    if trusted.contains(&TrustedProxy::Any) {
        return parse(&entries[0]);
    }
    for entry in entries.iter().rev() {
        match parse(entry) {
            Some(ip) if is_trusted(ip) => continue,
            other => return other,
        }
    }
    parse(&entries[0])
}

fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &str,
) -> Result<Option<&'a axum::http::HeaderValue>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(auth_error(ErrorCode::AuthIncomplete));
    }
    Ok(first)
}

/// Percent-decodes a URL path (the signed path is the decoded one, auth.md §2.2).
pub fn decoded_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut idx = 0;
    while idx < bytes.len() {
        if bytes[idx] == b'%' && idx + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[idx + 1..idx + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(byte) = hex {
                out.push(byte);
                idx += 3;
                continue;
            }
        }
        out.push(bytes[idx]);
        idx += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The checks of limits-and-bad-input.md §3.1 step 5, made before authentication.
pub fn check_declared_body(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        && let Ok(length) = length.trim().parse::<u64>()
        && length > state.settings.limits.max_body_bytes
    {
        return Err(body_too_large(state));
    }
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let text = value.to_str().unwrap_or("?").trim();
        if !text.eq_ignore_ascii_case("identity") {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!("Unsupported Content-Encoding '{text}'; send the body uncompressed"),
            ));
        }
    }
    Ok(())
}

fn body_too_large(state: &AppState) -> ApiError {
    ApiError::new(
        ErrorCode::BodyTooLarge,
        format!(
            "Request body too large (limit {} bytes)",
            state.settings.limits.max_body_bytes
        ),
    )
}

/// Reads the body within the request deadline, the size limit and the memory budget.
pub async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    deadline: Instant,
) -> Result<Bytes, ApiError> {
    let limit = state.settings.limits.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared == Some(0) {
        return Ok(Bytes::new());
    }
    let reserve = u32::try_from(declared.unwrap_or(limit).min(limit))
        .unwrap_or(u32::MAX)
        .max(1);
    let Ok(Ok(_permit)) = tokio::time::timeout_at(
        deadline,
        state.body_budget.clone().acquire_many_owned(reserve),
    )
    .await
    else {
        return Err(ApiError::overloaded());
    };
    let limited = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match tokio::time::timeout_at(deadline, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => Err(body_too_large(state)),
        Ok(Err(_)) => Err(ApiError::new(
            ErrorCode::MalformedJson,
            "Malformed JSON at line 1 column 1: the body ended early",
        )),
        Err(_) => Err(ApiError::new(
            ErrorCode::RequestTimeout,
            format!(
                "Request not received within {} s",
                state.settings.limits.request_timeout.as_secs()
            ),
        )),
    }
}

/// Authenticates a request: auth.md §3 steps 1–8 (the role, step 9, is the handler's).
pub async fn verify(
    state: &AppState,
    parts: &Parts,
    body: Body,
    peer: SocketAddr,
    kind: Kind,
    deadline: Instant,
) -> Result<Verified, ApiError> {
    let headers = &parts.headers;
    check_declared_body(state, headers)?;
    // Step 1: any x-dffmpeg-* header at all.
    if !signing::AUTH_HEADERS
        .iter()
        .any(|name| headers.contains_key(*name))
    {
        return Err(auth_error(ErrorCode::AuthRequired));
    }
    // Step 2: the three required headers, each at most once (the nonce too).
    let client_id = single_header(headers, signing::HEADER_CLIENT_ID)?;
    let timestamp = single_header(headers, signing::HEADER_TIMESTAMP)?;
    let signature = single_header(headers, signing::HEADER_SIGNATURE)?;
    let nonce = single_header(headers, signing::HEADER_NONCE)?;
    let (Some(client_id), Some(timestamp), Some(signature)) = (client_id, timestamp, signature)
    else {
        return Err(auth_error(ErrorCode::AuthIncomplete));
    };
    // Step 3: the identity.
    let client_id = client_id
        .to_str()
        .map_err(|_| auth_error(ErrorCode::AuthUnknownClient))?;
    if protocol::ids::check_identity_id(client_id).is_err() {
        return Err(auth_error(ErrorCode::AuthUnknownClient));
    }
    let Some(identity) = state.identities.get(client_id) else {
        return Err(auth_error(ErrorCode::AuthUnknownClient));
    };
    // Step 4: the caller's IP inside the identity's networks.
    let ip = client_ip(peer.ip(), headers, &state.settings.trusted_proxies);
    if !ip.is_some_and(|ip| identity.allows(ip)) {
        return Err(auth_error(ErrorCode::AuthIpNotAllowed));
    }
    // Steps 5 and 6: the timestamp.
    let timestamp = timestamp
        .to_str()
        .map_err(|_| auth_error(ErrorCode::AuthBadTimestamp))?;
    let Some(seconds) = signing::parse_timestamp(timestamp) else {
        return Err(auth_error(ErrorCode::AuthBadTimestamp));
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let tolerance = state.settings.timestamp_tolerance_seconds;
    if now.abs_diff(seconds) > tolerance.unsigned_abs() {
        return Err(auth_error(ErrorCode::AuthClockSkew));
    }
    let signature = signature
        .to_str()
        .map_err(|_| auth_error(ErrorCode::AuthBadSignature))?;
    let nonce = match nonce {
        Some(nonce) => Some(
            nonce
                .to_str()
                .map_err(|_| auth_error(ErrorCode::AuthBadSignature))?,
        ),
        None => None,
    };
    // The body, read only now.
    let body = read_body(state, headers, body, deadline).await?;
    // Step 7: the signature.
    let Some(signature) = signing::decode_signature(signature) else {
        return Err(auth_error(ErrorCode::AuthBadSignature));
    };
    if nonce.is_some_and(|nonce| !signing::nonce_is_valid(nonce)) {
        return Err(auth_error(ErrorCode::AuthBadSignature));
    }
    let path = decoded_path(parts.uri.path());
    let extension = nonce.map(|nonce| NonceParts {
        query: parts.uri.query().unwrap_or(""),
        nonce,
    });
    let canonical =
        signing::canonical_string(parts.method.as_str(), &path, timestamp, &body, extension);
    if !signing::verify(&identity.key, &canonical, &signature) {
        tracing::debug!(canonical = %canonical, "signature mismatch");
        return Err(auth_error(ErrorCode::AuthBadSignature));
    }
    let caller = Caller {
        client_id: client_id.to_owned(),
        role: identity.role,
        ip,
    };
    // Step 8: replays of mutating requests.
    if kind == Kind::Read || !state.settings.refuse_replays {
        return Ok(Verified {
            caller,
            body,
            claim: None,
            replay: None,
            repeated_submit: None,
        });
    }
    let expires_at = seconds.saturating_add(tolerance).saturating_add(1);
    let replay = ReplayRecord {
        client_id: client_id.to_owned(),
        signature,
        expires_at,
        job_id: None,
    };
    match state.replay.claim(client_id, signature, expires_at).await {
        Claim::Fresh(guard) => Ok(Verified {
            caller,
            body,
            claim: Some(guard),
            replay: Some(replay),
            repeated_submit: None,
        }),
        Claim::Seen(Some(job)) if kind == Kind::Submit => Ok(Verified {
            caller,
            body,
            claim: None,
            replay: None,
            repeated_submit: Some(job),
        }),
        Claim::Seen(_) => Err(auth_error(ErrorCode::AuthReplayed)),
        Claim::Full => Err(ApiError::new(
            ErrorCode::ReplayCacheFull,
            "Too many signed requests in the timestamp window; retry later",
        )),
    }
}

/// Writes a replay entry without a flush of its own (auth.md §4: it rides on the next flush).
pub fn persist_replay(state: &AppState, replay: Option<ReplayRecord>) {
    if let Some(replay) = replay {
        let mut batch = Batch::new();
        batch.put_replay(&replay);
        if let Err(err) = state.store.commit(batch) {
            tracing::warn!(error = %err, "writing a replay entry failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn trusted() -> Vec<TrustedProxy> {
        vec![
            TrustedProxy::Network("127.0.0.1/32".parse().unwrap()),
            TrustedProxy::Network("::1/128".parse().unwrap()),
        ]
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let remote: IpAddr = "10.0.0.9".parse().unwrap();
        assert_eq!(
            client_ip(remote, &xff(&["1.2.3.4"]), &trusted()),
            Some(remote)
        );
        assert_eq!(
            client_ip(local, &xff(&["1.2.3.4"]), &trusted()),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(
            client_ip(local, &xff(&["1.2.3.4, 127.0.0.1"]), &trusted()),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(
            client_ip(local, &xff(&["5.6.7.8", "1.2.3.4"]), &trusted()),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(
            client_ip(local, &xff(&["127.0.0.1, ::1"]), &trusted()),
            Some(local)
        );
        assert_eq!(client_ip(local, &xff(&["garbage"]), &trusted()), None);
        assert_eq!(client_ip(local, &HeaderMap::new(), &trusted()), Some(local));
        assert_eq!(
            client_ip(local, &xff(&["9.9.9.9, 1.2.3.4"]), &[TrustedProxy::Any]),
            Some("9.9.9.9".parse().unwrap())
        );
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(
            client_ip(mapped, &HeaderMap::new(), &trusted()),
            Some("10.1.2.3".parse().unwrap())
        );
        assert_eq!(client_ip(remote, &HeaderMap::new(), &[]), Some(remote));
    }

    #[test]
    fn paths_are_percent_decoded() {
        assert_eq!(decoded_path("/jobs/a%20b"), "/jobs/a b");
        assert_eq!(decoded_path("/jobs/%zz"), "/jobs/%zz");
        assert_eq!(decoded_path("/x%2"), "/x%2");
        assert_eq!(decoded_path("/x%41"), "/xA");
    }
}
