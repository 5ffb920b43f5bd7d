//! The admin service (storage.md §7): every admin command implemented once, over the store, reached through
//! `dffmpeg-coordinator --admin-stdio` (one session on stdin/stdout while the coordinator is stopped). Each command
//! is one atomic durable change; a refused command changes nothing. Running online, it also updates the identity
//! cache before answering, so a change takes effect on the next request.

use ipnet::IpNet;
use serde_bytes::ByteBuf;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use protocol::admin::{
    AdminCommand, AdminError, AdminErrorCode, AdminRequestLine, AdminResponseLine, HelloResult,
    IdentityInfo, MAX_ADMIN_LINE_BYTES, Role, UserAddArgs,
};
use protocol::signing::HmacKey;

use crate::identity::{CachedIdentity, IdentityCache};
use crate::store::records::{Identity, IdentityV1, KeyStorage, from_micros, micros};
use crate::store::{Batch, Store};

/// Networks allowed when none are given: everywhere.
pub const DEFAULT_CIDRS: [&str; 2] = ["0.0.0.0/0", "::/0"];

/// A new identity record.
pub fn new_identity(role: Role, cidrs: Vec<String>, key: HmacKey, now: OffsetDateTime) -> Identity {
    IdentityV1 {
        role,
        key: KeyStorage::Plain(ByteBuf::from(key.as_bytes().to_vec())),
        cidrs,
        created_at: micros(now),
        updated_at: micros(now),
    }
}

/// Normalises CIDRs (auth.md §5): a bare address becomes `/32` or `/128`; host bits set are refused with the
/// network meant; duplicates are dropped, order kept; none means everywhere.
pub fn normalise_cidrs(cidrs: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for text in cidrs {
        let trimmed = text.trim();
        let net = match trimmed.parse::<IpNet>() {
            Ok(net) => {
                if net.trunc() != net {
                    return Err(format!(
                        "invalid CIDR '{trimmed}': host bits set; did you mean {}?",
                        net.trunc()
                    ));
                }
                net
            }
            Err(_) => match trimmed.parse::<std::net::IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => {
                    return Err(format!(
                        "invalid CIDR '{trimmed}': not an IP address or network"
                    ));
                }
            },
        };
        let text = net.to_string();
        if !out.contains(&text) {
            out.push(text);
        }
    }
    if out.is_empty() {
        out = DEFAULT_CIDRS
            .iter()
            .map(|cidr| (*cidr).to_owned())
            .collect();
    }
    Ok(out)
}

/// Checks a client id for `user add` (cli.md §2.3).
pub fn check_client_id(client_id: &str) -> Result<(), String> {
    if client_id == protocol::ids::RESERVED_IDENTITY {
        return Err(format!("client id '{client_id}' is reserved"));
    }
    protocol::ids::check_identity_id(client_id).map_err(|_| {
        format!("invalid client id '{client_id}': use 1–64 characters A–Z a–z 0–9 . _ @ -, starting with a letter or digit")
    })
}

fn invalid(message: impl Into<String>) -> AdminError {
    AdminError::new(AdminErrorCode::InvalidArgument, message)
}

fn not_found(client_id: &str) -> AdminError {
    AdminError::new(
        AdminErrorCode::UserNotFound,
        format!("User '{client_id}' not found."),
    )
}

fn internal(err: impl std::fmt::Display) -> AdminError {
    tracing::error!(error = %err, "admin command failed");
    AdminError::new(
        AdminErrorCode::Internal,
        "the command failed; see the coordinator's log",
    )
}

fn key_of(identity: &Identity) -> Option<HmacKey> {
    match &identity.key {
        KeyStorage::Plain(bytes) => Some(HmacKey::from_bytes(bytes.as_slice().try_into().ok()?)),
    }
}

fn info(client_id: &str, identity: &Identity, show_key: bool) -> IdentityInfo {
    IdentityInfo {
        client_id: client_id.to_owned(),
        role: identity.role,
        allowed_cidrs: identity.cidrs.clone(),
        key_storage: "plain".to_owned(),
        key_id: None,
        created_at: from_micros(identity.created_at),
        updated_at: from_micros(identity.updated_at),
        hmac_key: if show_key {
            key_of(identity).map(|key| key.to_base64())
        } else {
            None
        },
    }
}

/// Serves admin commands over a store.
#[derive(Debug, Clone)]
pub struct AdminService {
    store: Store,
    /// The running coordinator's cache (socket mode); `None` in one-shot mode.
    identities: Option<IdentityCache>,
    mode: &'static str,
}

impl AdminService {
    /// The one-shot service of `--admin-stdio`.
    pub fn stdio(store: Store) -> AdminService {
        AdminService {
            store,
            identities: None,
            mode: "stdio",
        }
    }

    async fn write(&self, client_id: &str, identity: Option<&Identity>) -> Result<(), AdminError> {
        let mut batch = Batch::new();
        match identity {
            Some(identity) => batch.put_identity(client_id, identity),
            None => batch.delete_identity(client_id),
        }
        self.store.commit_durable(batch).await.map_err(internal)?;
        if let Some(cache) = &self.identities {
            match identity.and_then(CachedIdentity::from_stored) {
                Some(cached) => cache.insert(client_id, cached),
                None => cache.remove(client_id),
            }
        }
        Ok(())
    }

    fn existing(&self, client_id: &str) -> Result<Identity, AdminError> {
        self.store
            .identity(client_id)
            .map_err(internal)?
            .ok_or_else(|| not_found(client_id))
    }

    async fn user_add(&self, args: UserAddArgs) -> Result<Value, AdminError> {
        check_client_id(&args.client_id).map_err(invalid)?;
        let cidrs = normalise_cidrs(&args.cidrs).map_err(invalid)?;
        let key = match &args.key {
            Some(text) => HmacKey::parse(text)
                .map_err(|_| invalid("invalid key: expected standard base64 of exactly 32 bytes (44 characters ending in '=')"))?,
            None => HmacKey::generate(),
        };
        if self
            .store
            .identity(&args.client_id)
            .map_err(internal)?
            .is_some()
        {
            return Err(AdminError::new(
                AdminErrorCode::UserExists,
                format!("User '{}' already exists.", args.client_id),
            ));
        }
        let identity = new_identity(args.role, cidrs, key, OffsetDateTime::now_utc());
        self.write(&args.client_id, Some(&identity)).await?;
        Ok(json!(info(&args.client_id, &identity, true)))
    }

    /// Runs one command.
    pub async fn handle(&self, command: AdminCommand) -> Result<Value, AdminError> {
        match command {
            AdminCommand::Hello(_) => Ok(json!(HelloResult {
                coordinator_version: protocol::VERSION.to_owned(),
                mode: self.mode.to_owned(),
            })),
            AdminCommand::UserAdd(args) => self.user_add(args).await,
            AdminCommand::UserList(args) => {
                let identities = self.store.identities().map_err(internal)?;
                Ok(json!(
                    identities
                        .iter()
                        .map(|(id, identity)| info(id, identity, args.show_key))
                        .collect::<Vec<_>>()
                ))
            }
            AdminCommand::UserShow(args) => {
                let identity = self.existing(&args.client_id)?;
                Ok(json!(info(&args.client_id, &identity, args.show_key)))
            }
            AdminCommand::UserRotateKey(args) => {
                let mut identity = self.existing(&args.client_id)?;
                identity.key =
                    KeyStorage::Plain(ByteBuf::from(HmacKey::generate().as_bytes().to_vec()));
                identity.updated_at = micros(OffsetDateTime::now_utc());
                self.write(&args.client_id, Some(&identity)).await?;
                Ok(json!(info(&args.client_id, &identity, true)))
            }
            AdminCommand::UserDelete(args) => {
                self.existing(&args.client_id)?;
                self.write(&args.client_id, None).await?;
                Ok(json!({}))
            }
            AdminCommand::UserSetCidrs(args) => {
                let cidrs = normalise_cidrs(&args.cidrs).map_err(invalid)?;
                let mut identity = self.existing(&args.client_id)?;
                identity.cidrs = cidrs;
                identity.updated_at = micros(OffsetDateTime::now_utc());
                self.write(&args.client_id, Some(&identity)).await?;
                Ok(json!(info(&args.client_id, &identity, false)))
            }
            other => Err(invalid(format!(
                "'{}' is not available in this build",
                other.name()
            ))),
        }
    }

    /// Serves one session of newline-delimited JSON until the input ends.
    pub async fn serve<R, W>(&self, input: R, mut output: W) -> std::io::Result<()>
    where
        R: tokio::io::AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut reader = BufReader::new(input);
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = (&mut reader)
                .take(MAX_ADMIN_LINE_BYTES as u64 + 1)
                .read_until(b'\n', &mut line)
                .await?;
            if read == 0 {
                return Ok(());
            }
            if line.len() > MAX_ADMIN_LINE_BYTES {
                let response =
                    AdminResponseLine::failure(0, invalid("request line longer than 1 MiB"));
                write_line(&mut output, &response).await?;
                return Ok(());
            }
            let trimmed = line.trim_ascii();
            if trimmed.is_empty() {
                continue;
            }
            let response = match serde_json::from_slice::<AdminRequestLine>(trimmed) {
                Err(err) => {
                    AdminResponseLine::failure(0, invalid(format!("malformed request: {err}")))
                }
                Ok(request) => match AdminCommand::from_line(&request) {
                    Err(message) => AdminResponseLine::failure(request.id, invalid(message)),
                    Ok(command) => match self.handle(command).await {
                        Ok(result) => AdminResponseLine::success(request.id, result),
                        Err(error) => AdminResponseLine::failure(request.id, error),
                    },
                },
            };
            write_line(&mut output, &response).await?;
        }
    }
}

use tokio::io::AsyncReadExt as _;

async fn write_line<W: AsyncWrite + Unpin>(
    output: &mut W,
    response: &AdminResponseLine,
) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(response).unwrap_or_default();
    bytes.push(b'\n');
    output.write_all(&bytes).await?;
    output.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_normalised_and_checked() {
        let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(normalise_cidrs(&[]).unwrap(), strings(&DEFAULT_CIDRS));
        assert_eq!(
            normalise_cidrs(&strings(&[
                "10.0.0.0/8",
                "192.168.1.7",
                "10.0.0.0/8",
                "::1"
            ]))
            .unwrap(),
            strings(&["10.0.0.0/8", "192.168.1.7/32", "::1/128"])
        );
        assert_eq!(
            normalise_cidrs(&strings(&["10.0.0.1/8"])).unwrap_err(),
            "invalid CIDR '10.0.0.1/8': host bits set; did you mean 10.0.0.0/8?"
        );
        assert_eq!(
            normalise_cidrs(&strings(&["lan"])).unwrap_err(),
            "invalid CIDR 'lan': not an IP address or network"
        );
    }

    #[test]
    fn client_ids() {
        assert!(check_client_id("client01").is_ok());
        assert_eq!(
            check_client_id("coordinator").unwrap_err(),
            "client id 'coordinator' is reserved"
        );
        assert!(
            check_client_id("a b")
                .unwrap_err()
                .starts_with("invalid client id 'a b': use 1–64")
        );
    }

    #[tokio::test]
    async fn a_stdio_session_adds_and_refuses_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let opened = Store::open(dir.path(), 8 << 20).unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let flusher = tokio::spawn(opened.flusher.run(stop.clone()));
        let service = AdminService::stdio(opened.store.clone());
        let input = concat!(
            r#"{"v":1,"id":1,"command":"hello","args":{"client_version":"0.1.0"}}"#,
            "\n",
            r#"{"v":1,"id":2,"command":"user.add","args":{"client_id":"late","role":"client","cidrs":[],"key":null}}"#,
            "\n",
            r#"{"v":1,"id":3,"command":"user.add","args":{"client_id":"late","role":"client","cidrs":[],"key":null}}"#,
            "\n",
        );
        let mut output = Vec::new();
        service.serve(input.as_bytes(), &mut output).await.unwrap();
        let lines: Vec<AdminResponseLine> = output
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].result.as_ref().unwrap()["mode"], "stdio");
        let added: IdentityInfo = serde_json::from_value(lines[1].result.clone().unwrap()).unwrap();
        assert_eq!(added.allowed_cidrs, vec!["0.0.0.0/0", "::/0"]);
        assert!(HmacKey::parse(added.hmac_key.as_deref().unwrap()).is_ok());
        assert_eq!(
            lines[2].error.as_ref().unwrap().code,
            AdminErrorCode::UserExists
        );
        assert_eq!(
            lines[2].error.as_ref().unwrap().message,
            "User 'late' already exists."
        );
        assert!(opened.store.identity("late").unwrap().is_some());
        stop.cancel();
        flusher.await.unwrap();
    }
}
