//! The admin protocol (storage.md §7.1): newline-delimited JSON between `dffmpeg-admin` and the coordinator, over the
//! admin socket or `dffmpeg-coordinator --admin-stdio`. One request and one response per line.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::rest::JanitorAction;
use crate::timefmt::rfc3339;

/// The only version of the admin protocol.
pub const ADMIN_PROTOCOL_VERSION: u32 = 1;
/// A request line longer than this is refused (limits-and-bad-input.md §2.2).
pub const MAX_ADMIN_LINE_BYTES: usize = 1024 * 1024;

/// An identity's role (auth.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Client,
    Worker,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Worker => "worker",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "client" => Some(Role::Client),
            "worker" => Some(Role::Worker),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// One request line: `{"v":1,"id":7,"command":"user.add","args":{…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminRequestLine {
    pub v: u32,
    pub id: u64,
    pub command: String,
    #[serde(default)]
    pub args: Value,
}

/// One response line: `ok` with `result`, or not `ok` with `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminResponseLine {
    pub v: u32,
    pub id: u64,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<AdminError>,
}

impl AdminResponseLine {
    pub fn success(id: u64, result: Value) -> AdminResponseLine {
        AdminResponseLine {
            v: ADMIN_PROTOCOL_VERSION,
            id,
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    pub fn failure(id: u64, error: AdminError) -> AdminResponseLine {
        AdminResponseLine {
            v: ADMIN_PROTOCOL_VERSION,
            id,
            ok: false,
            result: None,
            error: Some(error),
        }
    }
}

/// A stable admin error code (storage.md §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminErrorCode {
    UserExists,
    UserNotFound,
    JobNotFound,
    WorkerNotFound,
    WorkerNotConnected,
    InvalidArgument,
    CoordinatorNotRunning,
    EncryptionNotConfigured,
    Internal,
    #[serde(other)]
    Unknown,
}

/// The error of a failed command, with the message `dffmpeg-admin` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminError {
    pub code: AdminErrorCode,
    pub message: String,
}

impl AdminError {
    pub fn new(code: AdminErrorCode, message: impl Into<String>) -> AdminError {
        AdminError {
            code,
            message: message.into(),
        }
    }
}

/// `hello` args.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloArgs {
    pub client_version: String,
}

/// `hello` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloResult {
    pub coordinator_version: String,
    /// `socket` or `stdio`.
    pub mode: String,
}

/// `user.list` args.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UserListArgs {
    #[serde(default)]
    pub show_key: bool,
}

/// `user.show` args.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserShowArgs {
    pub client_id: String,
    #[serde(default)]
    pub show_key: bool,
}

/// `user.add` args. Empty `cidrs` means everywhere (`0.0.0.0/0`, `::/0`); `key: null` generates one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAddArgs {
    pub client_id: String,
    pub role: Role,
    #[serde(default)]
    pub cidrs: Vec<String>,
    #[serde(default)]
    pub key: Option<String>,
}

/// Args naming one identity (`user.rotate_key`, `user.delete`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientIdArgs {
    pub client_id: String,
}

/// `user.set_cidrs` args.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSetCidrsArgs {
    pub client_id: String,
    pub cidrs: Vec<String>,
}

/// `job.list` args.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct JobListArgs {
    #[serde(default)]
    pub window: Option<u64>,
    #[serde(default)]
    pub status: Option<Vec<String>>,
    #[serde(default)]
    pub requester: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Args naming one job (`job.show`, `job.cancel`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobIdArgs {
    pub job_id: String,
}

/// `job.cancel` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCancelResult {
    /// `canceled`, `canceling` or `already_finished`.
    pub outcome: String,
}

/// `worker.list` args.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct WorkerListArgs {
    #[serde(default)]
    pub window: Option<u64>,
}

/// `worker.drain` args.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerDrainArgs {
    pub worker_id: String,
}

/// `janitor.run` args.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JanitorRunArgs {
    pub action: JanitorAction,
}

/// `security.re_encrypt` args.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ReEncryptArgs {
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub key_id: Option<String>,
    #[serde(default)]
    pub decrypt: bool,
}

/// An identity as the admin protocol shows it (cli.md §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityInfo {
    pub client_id: String,
    pub role: Role,
    pub allowed_cidrs: Vec<String>,
    /// `plain` or `sealed`.
    pub key_storage: String,
    pub key_id: Option<String>,
    #[serde(with = "rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Only after `user.add`, `user.rotate_key` and with `show_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_key: Option<String>,
}

/// Every command the coordinator serves, with its arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum AdminCommand {
    Hello(HelloArgs),
    UserList(UserListArgs),
    UserShow(UserShowArgs),
    UserAdd(UserAddArgs),
    UserRotateKey(ClientIdArgs),
    UserDelete(ClientIdArgs),
    UserSetCidrs(UserSetCidrsArgs),
    JobList(JobListArgs),
    JobShow(JobIdArgs),
    JobCancel(JobIdArgs),
    WorkerList(WorkerListArgs),
    WorkerDrain(WorkerDrainArgs),
    JanitorRun(JanitorRunArgs),
    SecurityReEncrypt(ReEncryptArgs),
}

impl AdminCommand {
    /// The wire name of the command.
    pub fn name(&self) -> &'static str {
        match self {
            AdminCommand::Hello(_) => "hello",
            AdminCommand::UserList(_) => "user.list",
            AdminCommand::UserShow(_) => "user.show",
            AdminCommand::UserAdd(_) => "user.add",
            AdminCommand::UserRotateKey(_) => "user.rotate_key",
            AdminCommand::UserDelete(_) => "user.delete",
            AdminCommand::UserSetCidrs(_) => "user.set_cidrs",
            AdminCommand::JobList(_) => "job.list",
            AdminCommand::JobShow(_) => "job.show",
            AdminCommand::JobCancel(_) => "job.cancel",
            AdminCommand::WorkerList(_) => "worker.list",
            AdminCommand::WorkerDrain(_) => "worker.drain",
            AdminCommand::JanitorRun(_) => "janitor.run",
            AdminCommand::SecurityReEncrypt(_) => "security.re_encrypt",
        }
    }

    /// The `args` object of the command.
    pub fn args(&self) -> Value {
        let value = match self {
            AdminCommand::Hello(args) => serde_json::to_value(args),
            AdminCommand::UserList(args) => serde_json::to_value(args),
            AdminCommand::UserShow(args) => serde_json::to_value(args),
            AdminCommand::UserAdd(args) => serde_json::to_value(args),
            AdminCommand::UserRotateKey(args) | AdminCommand::UserDelete(args) => {
                serde_json::to_value(args)
            }
            AdminCommand::UserSetCidrs(args) => serde_json::to_value(args),
            AdminCommand::JobList(args) => serde_json::to_value(args),
            AdminCommand::JobShow(args) | AdminCommand::JobCancel(args) => {
                serde_json::to_value(args)
            }
            AdminCommand::WorkerList(args) => serde_json::to_value(args),
            AdminCommand::WorkerDrain(args) => serde_json::to_value(args),
            AdminCommand::JanitorRun(args) => serde_json::to_value(args),
            AdminCommand::SecurityReEncrypt(args) => serde_json::to_value(args),
        };
        // Plain structs of strings, numbers and lists always convert.
        value.expect("admin args convert to JSON")
    }

    /// A request line for this command.
    pub fn to_line(&self, id: u64) -> AdminRequestLine {
        AdminRequestLine {
            v: ADMIN_PROTOCOL_VERSION,
            id,
            command: self.name().to_owned(),
            args: self.args(),
        }
    }

    /// Parses a request line's command and args; the error is the `invalid_argument` message.
    pub fn from_line(line: &AdminRequestLine) -> Result<AdminCommand, String> {
        fn args<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, String> {
            let value = if value.is_null() {
                Value::Object(Default::default())
            } else {
                value.clone()
            };
            serde_json::from_value(value).map_err(|err| format!("invalid args: {err}"))
        }
        if line.v != ADMIN_PROTOCOL_VERSION {
            return Err(format!(
                "unsupported admin protocol version {}; this coordinator speaks 1",
                line.v
            ));
        }
        let value = &line.args;
        Ok(match line.command.as_str() {
            "hello" => AdminCommand::Hello(args(value)?),
            "user.list" => AdminCommand::UserList(args(value)?),
            "user.show" => AdminCommand::UserShow(args(value)?),
            "user.add" => AdminCommand::UserAdd(args(value)?),
            "user.rotate_key" => AdminCommand::UserRotateKey(args(value)?),
            "user.delete" => AdminCommand::UserDelete(args(value)?),
            "user.set_cidrs" => AdminCommand::UserSetCidrs(args(value)?),
            "job.list" => AdminCommand::JobList(args(value)?),
            "job.show" => AdminCommand::JobShow(args(value)?),
            "job.cancel" => AdminCommand::JobCancel(args(value)?),
            "worker.list" => AdminCommand::WorkerList(args(value)?),
            "worker.drain" => AdminCommand::WorkerDrain(args(value)?),
            "janitor.run" => AdminCommand::JanitorRun(args(value)?),
            "security.re_encrypt" => AdminCommand::SecurityReEncrypt(args(value)?),
            other => return Err(format!("unknown command '{other}'")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_matches_the_spec_example() {
        let command = AdminCommand::UserAdd(UserAddArgs {
            client_id: "late".into(),
            role: Role::Client,
            cidrs: vec![],
            key: None,
        });
        let line = serde_json::to_string(&command.to_line(7)).unwrap();
        assert_eq!(
            line,
            r#"{"v":1,"id":7,"command":"user.add","args":{"client_id":"late","role":"client","cidrs":[],"key":null}}"#
        );
        let parsed: AdminRequestLine = serde_json::from_str(&line).unwrap();
        assert_eq!(AdminCommand::from_line(&parsed).unwrap(), command);
    }

    #[test]
    fn error_line_shape() {
        let line = AdminResponseLine::failure(
            8,
            AdminError::new(AdminErrorCode::UserExists, "User 'late' already exists."),
        );
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"v":1,"id":8,"ok":false,"error":{"code":"user_exists","message":"User 'late' already exists."}}"#
        );
    }

    #[test]
    fn unknown_commands_and_bad_args_are_refused() {
        let line = AdminRequestLine {
            v: 1,
            id: 1,
            command: "user.fly".into(),
            args: Value::Null,
        };
        assert!(
            AdminCommand::from_line(&line)
                .unwrap_err()
                .contains("unknown command")
        );
        let line = AdminRequestLine {
            v: 1,
            id: 1,
            command: "user.add".into(),
            args: serde_json::json!({"role": 3}),
        };
        assert!(
            AdminCommand::from_line(&line)
                .unwrap_err()
                .contains("invalid args")
        );
    }
}
