//! `dffmpeg-worker --check` (cli.md §3.1): one line per binary, per path variable and for the coordinator, and
//! whether the worker could start (at least one usable binary, and credentials the coordinator accepts).
//!
//! Not here: printing (the binary prints the lines) and anything the session does.

use std::time::Duration;

use crate::config::{Config, Identity};
use crate::health::{BinaryHealth, Health, HealthChecker, RootHealth};

/// How long the coordinator check may take.
const COORDINATOR_TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of `--check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The lines to print, binaries first, then path variables, then the coordinator.
    pub lines: Vec<String>,
    /// Exit 0 when true: a binary is usable and the credentials were accepted.
    pub ok: bool,
}

/// Runs the checks.
pub async fn run(config: &Config, identity: &Identity) -> CheckReport {
    let health = HealthChecker::new(config).check(None).await;
    let mut lines = health_lines(&health);
    let base_url = config.coordinator.base_url();
    let accepted = match coordinator_check(&base_url, identity).await {
        Ok(()) => {
            lines.push(format!(
                "coordinator {base_url} ok: credentials of {} accepted",
                identity.client_id
            ));
            true
        }
        Err(reason) => {
            lines.push(format!("coordinator {base_url} failed: {reason}"));
            false
        }
    };
    CheckReport {
        lines,
        ok: accepted && !health.usable_binaries().is_empty(),
    }
}

/// `binary NAME PATH ok: VERSION` / `binary NAME PATH unavailable: ERROR`, then `path NAME ROOT ok` /
/// `path NAME ROOT unhealthy: REASON`.
pub fn health_lines(health: &Health) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, binary) in &health.binaries {
        lines.push(match binary {
            BinaryHealth::Ready {
                path,
                version: Some(version),
            } => format!("binary {name} {} ok: {version}", path.display()),
            BinaryHealth::Ready {
                path,
                version: None,
            } => format!("binary {name} {} ok (version unknown)", path.display()),
            BinaryHealth::Unavailable { path, error } => format!(
                "binary {name} {} unavailable: {error}",
                path.as_ref()
                    .map_or_else(|| name.clone(), |path| path.display().to_string())
            ),
        });
    }
    for (name, root) in &health.paths {
        lines.push(match root {
            RootHealth::Healthy { configured, .. } => {
                format!("path {name} {} ok", configured.display())
            }
            RootHealth::Unhealthy { configured, reason } => {
                format!("path {name} {} unhealthy: {reason}", configured.display())
            }
        });
    }
    lines
}

/// A signed `GET /workers/{client_id}`: 200 or 404 means the credentials were accepted.
async fn coordinator_check(base_url: &str, identity: &Identity) -> Result<(), String> {
    let api = client::Client::new(base_url, identity.client_id.clone(), identity.key.clone())
        .map_err(|error| error.to_string())?
        .with_request_timeout(COORDINATOR_TIMEOUT);
    match api.worker(&identity.client_id).await {
        Ok(_) => Ok(()),
        // A 2xx answer that this build cannot read still accepted the credentials.
        Err(client::Error::Decode(_)) => Ok(()),
        Err(error) if error.status() == Some(404) => Ok(()),
        Err(error) => Err(error_chain(&error)),
    }
}

/// An error and its sources on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
