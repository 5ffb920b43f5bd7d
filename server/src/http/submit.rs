//! `POST /jobs/submit` checks after parsing (api.md §5.1, limits-and-bad-input.md §3.1 step 12): field limits,
//! binary, transports, path variables and path escapes, in that order, producing the `ValidJob` the scheduler takes.

use sha2::{Digest, Sha256};

use protocol::ErrorCode;
use protocol::ids::check_simple_name;
use protocol::rest::{JobRequest, TRANSPORT_HTTP_POLLING};

use crate::error::ApiError;
use crate::scheduler::ValidJob;
use crate::settings::Settings;

/// The variable a `$Var…` or `file:$Var…` string names, and the rest after the name.
pub fn variable_of(text: &str) -> Option<(&str, &str)> {
    let rest = text
        .strip_prefix("file:")
        .unwrap_or(text)
        .strip_prefix('$')?;
    let end = rest.find('/').unwrap_or(rest.len());
    Some((&rest[..end], &rest[end..]))
}

fn escapes(rest: &str) -> bool {
    rest.split('/').any(|segment| segment == "..")
}

fn printable_ascii(text: &str) -> bool {
    text.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// SHA-256 over the fields that make two submits identical (api.md §5.1), each length-prefixed.
pub fn fingerprint(job: &ValidJob) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    field(job.binary.as_bytes());
    field(&(job.arguments.len() as u64).to_be_bytes());
    for argument in &job.arguments {
        field(argument.as_bytes());
    }
    field(&(job.paths.len() as u64).to_be_bytes());
    for path in &job.paths {
        field(path.as_bytes());
    }
    match &job.working_directory {
        Some(directory) => {
            field(b"1");
            field(directory.as_bytes());
        }
        None => field(b"0"),
    }
    field(&job.priority.to_be_bytes());
    field(&[u8::from(job.stdin)]);
    hasher.finalize().into()
}

/// Validates a parsed submit for `requester`. `header_key` is the `Idempotency-Key` header, if any.
pub fn validate(
    request: JobRequest,
    header_key: Option<&str>,
    requester: &str,
    settings: &Settings,
) -> Result<ValidJob, ApiError> {
    let limits = &settings.limits;
    if request.binary_name.is_empty() {
        return Err(ApiError::invalid_body("binary_name: must not be empty"));
    }
    if request.arguments.len() > limits.max_arguments {
        return Err(ApiError::invalid_body(format!(
            "arguments: more than {} items (limits.max_arguments)",
            limits.max_arguments
        )));
    }
    for (idx, argument) in request.arguments.iter().enumerate() {
        if argument.len() > limits.max_argument_bytes {
            return Err(ApiError::invalid_body(format!(
                "arguments[{idx}]: longer than {} bytes (limits.max_argument_bytes)",
                limits.max_argument_bytes
            )));
        }
        if argument.contains('\0') {
            return Err(ApiError::invalid_body(format!(
                "arguments[{idx}]: contains a NUL character"
            )));
        }
    }
    if request.paths.len() > limits.max_paths {
        return Err(ApiError::invalid_body(format!(
            "paths: more than {} items (limits.max_paths)",
            limits.max_paths
        )));
    }
    if let Some(directory) = &request.working_directory {
        if directory.len() > 4096 {
            return Err(ApiError::invalid_body(
                "working_directory: longer than 4096 bytes",
            ));
        }
        if directory.contains('\0') {
            return Err(ApiError::invalid_body(
                "working_directory: contains a NUL character",
            ));
        }
    }
    let heartbeat_interval = match request.heartbeat_interval {
        None | Some(0) => settings.default_job_heartbeat_interval,
        Some(seconds @ 1..=3600) => seconds as u32,
        Some(_) => {
            return Err(ApiError::invalid_body(
                "heartbeat_interval: must be 0 or between 1 and 3600",
            ));
        }
    };
    if !(-1000..=1000).contains(&request.priority) {
        return Err(ApiError::invalid_body(
            "priority: must be between -1000 and 1000",
        ));
    }
    if let Some(key) = &request.idempotency_key
        && (key.is_empty() || key.len() > 128 || !printable_ascii(key))
    {
        return Err(ApiError::invalid_body(
            "idempotency_key: must be 1–128 printable ASCII characters",
        ));
    }
    let idempotency_key = match (request.idempotency_key.clone(), header_key) {
        (Some(body), Some(header)) if body != header => {
            return Err(ApiError::invalid_body(
                "idempotency_key: differs from the Idempotency-Key header",
            ));
        }
        (Some(body), _) => Some(body),
        (None, Some(header)) => {
            if header.is_empty() || header.len() > 128 || !printable_ascii(header) {
                return Err(ApiError::invalid_body(
                    "Idempotency-Key: must be 1–128 printable ASCII characters",
                ));
            }
            Some(header.to_owned())
        }
        (None, None) => None,
    };
    let total: usize = request.binary_name.len()
        + request.arguments.iter().map(String::len).sum::<usize>()
        + request.paths.iter().map(String::len).sum::<usize>()
        + request.working_directory.as_ref().map_or(0, String::len)
        + request
            .supported_transports
            .iter()
            .flatten()
            .map(String::len)
            .sum::<usize>()
        + idempotency_key.as_ref().map_or(0, String::len);
    if total > limits.max_job_bytes {
        return Err(ApiError::invalid_body(format!(
            "request: strings total {total} bytes, more than {} (limits.max_job_bytes)",
            limits.max_job_bytes
        )));
    }
    if !settings.allowed_binaries.contains(&request.binary_name) {
        return Err(ApiError::new(
            ErrorCode::UnsupportedBinary,
            format!("Unsupported binary name: {}", request.binary_name),
        ));
    }
    let transports_ok = match &request.supported_transports {
        None => true,
        Some(list) => list.iter().any(|name| name == TRANSPORT_HTTP_POLLING),
    };
    if !transports_ok {
        return Err(ApiError::new(
            ErrorCode::NoSupportedTransport,
            "No supported transports",
        ));
    }
    for name in &request.paths {
        if check_simple_name(name).is_err() {
            return Err(ApiError::new(
                ErrorCode::InvalidPathVariable,
                format!("Invalid path variable name: {name}"),
            ));
        }
    }
    let mut paths = request.paths.clone();
    paths.sort();
    paths.dedup();
    if let Some(directory) = &request.working_directory
        && let Some((name, _)) = variable_of(directory)
        && !paths.iter().any(|path| path == name)
    {
        return Err(ApiError::new(
            ErrorCode::InvalidPathVariable,
            format!("Working directory uses path variable '{name}' that is not listed in paths"),
        ));
    }
    for text in request
        .arguments
        .iter()
        .chain(request.working_directory.iter())
    {
        if let Some((name, rest)) = variable_of(text)
            && paths.iter().any(|path| path == name)
            && escapes(rest)
        {
            return Err(ApiError::new(
                ErrorCode::PathEscape,
                format!("Path escapes its variable root: {text}"),
            ));
        }
    }
    let mut job = ValidJob {
        requester: requester.to_owned(),
        binary: request.binary_name,
        arguments: request.arguments,
        paths,
        working_directory: request.working_directory,
        monitor: request.monitor,
        heartbeat_interval,
        priority: request.priority as i32,
        idempotency_key,
        stdin: request.stdin,
        fingerprint: [0; 32],
        replay: None,
    };
    job.fingerprint = fingerprint(&job);
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_and_escapes() {
        assert_eq!(variable_of("$Media/in.mp4"), Some(("Media", "/in.mp4")));
        assert_eq!(variable_of("file:$Media"), Some(("Media", "")));
        assert_eq!(variable_of("in.mp4"), None);
        assert!(escapes("/a/../b"));
        assert!(escapes("/.."));
        assert!(!escapes("/a..b/c"));
    }
}
