//! `dffmpeg-admin user add` (cli.md §2.2): checks every input before anything is contacted (exit 2), reaches the
//! coordinator through `client::admin`, sends one `user.add` per id in one pipeline, and prints each outcome in the
//! order given. The coordinator does the work and re-validates; nothing here touches the store.

use std::io::Write;

use client::admin::{AdminConnection, AdminError, AdminTarget, AdminTransport, RemoteError};
use protocol::admin::{AdminCommand, AdminErrorCode, IdentityInfo, Role, UserAddArgs};
use protocol::ids::{RESERVED_IDENTITY, check_identity_id};
use protocol::signing::HmacKey;
use serde_json::Value;

use crate::cidr::normalise_cidrs;
use crate::config::{self, SearchOrder};
use crate::{EXIT_FAILURE, EXIT_USAGE, Failure, GlobalArgs, exit_code_for};

/// `user add` after the checks of cli.md §2.1 step 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ValidUserAdd {
    pub(crate) client_ids: Vec<String>,
    pub(crate) role: Role,
    /// Normalised, without duplicates; empty means the coordinator's default.
    pub(crate) cidrs: Vec<String>,
    pub(crate) key: Option<String>,
}

/// Checks role, CIDRs, client ids and key, in that order; the error is the one line to print (exit 2).
pub(crate) fn validate(
    client_ids: &[String],
    role: &str,
    cidrs: &[String],
    key: Option<&str>,
) -> Result<ValidUserAdd, String> {
    let role = Role::parse(role)
        .ok_or_else(|| format!("invalid role '{role}'; expected client, worker or admin"))?;
    let cidrs = normalise_cidrs(cidrs)?;
    for client_id in client_ids {
        if check_identity_id(client_id).is_err() {
            return Err(format!(
                "invalid client id '{client_id}': use 1–64 characters A–Z a–z 0–9 . _ @ -, starting with a letter \
                 or digit"
            ));
        }
        if client_id == RESERVED_IDENTITY {
            return Err(format!("client id '{client_id}' is reserved"));
        }
    }
    if let Some(key) = key {
        if let Err(err) = HmacKey::parse(key) {
            return Err(format!("invalid key: {err}"));
        }
        if client_ids.len() != 1 {
            return Err("--key can only be used with a single client id".to_owned());
        }
    }
    Ok(ValidUserAdd {
        client_ids: client_ids.to_vec(),
        role,
        cidrs,
        key: key.map(str::to_owned),
    })
}

/// Runs a validated `user add`; returns the exit code.
pub(crate) async fn run(global: &GlobalArgs, request: ValidUserAdd) -> Result<u8, Failure> {
    let admin_config = config::load(&SearchOrder::from_process(global.config.clone()))
        .map_err(|message| Failure::new(EXIT_FAILURE, message))?;
    if admin_config.file.is_none() {
        eprintln!("dffmpeg-admin: warning: no configuration file found; using defaults");
    }
    let mut target = AdminTarget::new(&admin_config.admin_socket, &admin_config.database_path);
    target.config_file = admin_config.file.clone();
    let mut connection = client::admin::connect(&target)
        .await
        .map_err(Failure::from)?;
    if global.verbose {
        print_way(&connection);
    }
    let commands: Vec<AdminCommand> = request
        .client_ids
        .iter()
        .map(|client_id| {
            AdminCommand::UserAdd(UserAddArgs {
                client_id: client_id.clone(),
                role: request.role,
                cidrs: request.cidrs.clone(),
                key: request.key.clone(),
            })
        })
        .collect();
    let outcomes = connection
        .pipeline(&commands)
        .await
        .map_err(Failure::from)?;
    let exit = print_outcomes(global.json, &request.client_ids, outcomes)?;
    connection.close().await.map_err(Failure::from)?;
    Ok(exit)
}

fn print_way(connection: &AdminConnection) {
    match connection.transport() {
        AdminTransport::Socket { path } => eprintln!(
            "dffmpeg-admin: using the admin socket {} (coordinator {})",
            path.display(),
            connection.hello().coordinator_version
        ),
        AdminTransport::OneShot { .. } => {
            eprintln!("dffmpeg-admin: coordinator not running; opened the store directly")
        }
    }
}

/// Prints every id's outcome in order: text lines or errors as they come, the JSON document at the end. Returns
/// the exit code: 0, or the highest code among the failures (`invalid_argument` → 2, others → 1).
fn print_outcomes(
    json: bool,
    client_ids: &[String],
    outcomes: Vec<Result<Value, RemoteError>>,
) -> Result<u8, Failure> {
    let mut stdout = std::io::stdout().lock();
    let mut added: Vec<Value> = Vec::new();
    let mut exit = 0;
    for outcome in outcomes {
        match outcome {
            Ok(value) => {
                let identity: IdentityInfo =
                    serde_json::from_value(value.clone()).map_err(|err| {
                        Failure::new(
                            EXIT_FAILURE,
                            format!("invalid reply from the coordinator: {err}"),
                        )
                    })?;
                if !json {
                    let key = identity.hmac_key.as_deref().unwrap_or("");
                    writeln!(
                        stdout,
                        "User '{}' added successfully.\nHMAC Key: {key}",
                        identity.client_id
                    )
                    .and_then(|()| stdout.flush())
                    .map_err(write_failure)?;
                }
                added.push(value);
            }
            Err(error) => {
                eprintln!("dffmpeg-admin: {}", error.message);
                exit = exit.max(exit_code_for_remote(&error));
            }
        }
    }
    if json && !added.is_empty() {
        let document = if client_ids.len() == 1 {
            added.swap_remove(0)
        } else {
            Value::Array(added)
        };
        writeln!(stdout, "{document}")
            .and_then(|()| stdout.flush())
            .map_err(write_failure)?;
    } else if json && client_ids.len() > 1 {
        writeln!(stdout, "[]").map_err(write_failure)?;
    }
    Ok(exit)
}

fn write_failure(err: std::io::Error) -> Failure {
    Failure::new(EXIT_FAILURE, format!("writing the output: {err}"))
}

fn exit_code_for_remote(error: &RemoteError) -> u8 {
    if error.code == AdminErrorCode::InvalidArgument {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    }
}

impl From<AdminError> for Failure {
    fn from(err: AdminError) -> Failure {
        Failure::new(exit_code_for(&err), err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "qHdOvnF4mlz6TSStMCoY6KvEpDQGpcteNU2LMGInyuY=";

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|id| (*id).to_owned()).collect()
    }

    #[test]
    fn valid_input_is_normalised() {
        let valid = validate(
            &ids(&["a", "b.c@d-e_f"]),
            "worker",
            &ids(&["10.0.0.1", "10.0.0.1/32"]),
            None,
        )
        .unwrap();
        assert_eq!(valid.role, Role::Worker);
        assert_eq!(valid.cidrs, vec!["10.0.0.1/32"]);
        let valid = validate(&ids(&["late"]), "client", &[], Some(KEY)).unwrap();
        assert_eq!(valid.key.as_deref(), Some(KEY));
        assert!(valid.cidrs.is_empty());
    }

    #[test]
    fn messages_of_cli_md() {
        assert_eq!(
            validate(&ids(&["a"]), "root", &[], None).unwrap_err(),
            "invalid role 'root'; expected client, worker or admin"
        );
        assert_eq!(
            validate(&ids(&["a"]), "client", &ids(&["lan"]), None).unwrap_err(),
            "invalid CIDR 'lan': not an IP address or network"
        );
        assert_eq!(
            validate(&ids(&["a b"]), "client", &[], None).unwrap_err(),
            "invalid client id 'a b': use 1–64 characters A–Z a–z 0–9 . _ @ -, starting with a letter or digit"
        );
        assert!(validate(&ids(&["-a"]), "client", &[], None).is_err());
        assert!(validate(&ids(&[&"x".repeat(65)]), "client", &[], None).is_err());
        assert_eq!(
            validate(&ids(&["coordinator"]), "client", &[], None).unwrap_err(),
            "client id 'coordinator' is reserved"
        );
        assert_eq!(
            validate(&ids(&["a"]), "client", &[], Some("short")).unwrap_err(),
            "invalid key: expected standard base64 of exactly 32 bytes (44 characters ending in '=')"
        );
        assert_eq!(
            validate(&ids(&["a", "b"]), "client", &[], Some(KEY)).unwrap_err(),
            "--key can only be used with a single client id"
        );
        // Role is checked first, then CIDRs, then ids.
        assert!(
            validate(&ids(&["a b"]), "root", &ids(&["lan"]), None)
                .unwrap_err()
                .starts_with("invalid role")
        );
        assert!(
            validate(&ids(&["a b"]), "client", &ids(&["lan"]), None)
                .unwrap_err()
                .starts_with("invalid CIDR")
        );
    }
}
