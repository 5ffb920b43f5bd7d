//! The command line of `dffmpeg-admin` (cli.md §2): clap definitions only. Values the program checks itself (role,
//! CIDRs, client ids, keys) are taken as plain strings here, so a bad one gets cli.md §2.3's message rather than
//! clap's.

use std::path::PathBuf;

use clap::{ArgMatches, Args, Parser, Subcommand};

/// Operator CLI of the dffmpeg coordinator: identities and keys. Works whether the coordinator runs (admin socket)
/// or not (opens the store through `dffmpeg-coordinator --admin-stdio`).
#[derive(Debug, Parser)]
#[command(name = "dffmpeg-admin", version, arg_required_else_help = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options accepted before or after the command.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// The coordinator's configuration file (default: the coordinator's search order).
    #[arg(short = 'c', long = "config", value_name = "PATH", global = true)]
    pub(crate) config: Option<PathBuf>,
    /// Print the command's result as JSON.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Say on stderr which way the coordinator was reached.
    #[arg(short = 'v', long, global = true)]
    pub(crate) verbose: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Manage identities (clients, workers, admins).
    #[command(subcommand, arg_required_else_help = true)]
    User(UserCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Add one or more identities and print each one's new HMAC key.
    Add(UserAddArgs),
}

/// `user add <client_id>… [--role ROLE] [--cidr CIDR]… [--key KEY]`.
#[derive(Debug, Args)]
pub(crate) struct UserAddArgs {
    /// Identity ids: 1–64 characters A–Z a–z 0–9 . _ @ -, starting with a letter or digit.
    #[arg(value_name = "CLIENT_ID", required = true)]
    pub(crate) client_ids: Vec<String>,
    /// client, worker or admin.
    #[arg(long, value_name = "ROLE", default_value = "client")]
    pub(crate) role: String,
    /// An allowed network (repeatable); a bare address means that host. Default: everywhere.
    #[arg(long = "cidr", value_name = "CIDR")]
    pub(crate) cidr: Vec<String>,
    /// Upstream's spelling of --cidr, taking one or more values.
    #[arg(long = "allowed-cidrs", value_name = "CIDR", num_args = 1..)]
    pub(crate) allowed_cidrs: Vec<String>,
    /// Keep this existing key (standard base64 of 32 bytes) instead of generating one; one client id only.
    #[arg(long, value_name = "KEY")]
    pub(crate) key: Option<String>,
}

/// The CIDRs of `user add` in command-line order, `--cidr` and `--allowed-cidrs` interleaved as typed.
pub(crate) fn ordered_cidrs(add: &ArgMatches) -> Vec<String> {
    let mut indexed: Vec<(usize, String)> = Vec::new();
    for id in ["cidr", "allowed_cidrs"] {
        let values = add.get_many::<String>(id).into_iter().flatten();
        let indices = add.indices_of(id).into_iter().flatten();
        indexed.extend(indices.zip(values.cloned()));
    }
    indexed.sort_by_key(|(index, _)| *index);
    indexed.into_iter().map(|(_, value)| value).collect()
}

/// The matches of `user add`, when that is the command.
pub(crate) fn user_add_matches(matches: &ArgMatches) -> Option<&ArgMatches> {
    matches
        .subcommand_matches("user")?
        .subcommand_matches("add")
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    fn parse(args: &[&str]) -> (Cli, Vec<String>) {
        let matches = Cli::command().try_get_matches_from(args).unwrap();
        let cli = Cli::from_arg_matches(&matches).unwrap();
        let cidrs = user_add_matches(&matches)
            .map(ordered_cidrs)
            .unwrap_or_default();
        (cli, cidrs)
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn cidr_spellings_keep_their_order() {
        let (cli, cidrs) = parse(&[
            "dffmpeg-admin",
            "user",
            "add",
            "a",
            "--cidr",
            "10.0.0.0/8",
            "--allowed-cidrs",
            "192.168.1.0/24",
            "::1",
            "--cidr",
            "127.0.0.1",
            "--json",
        ]);
        assert_eq!(
            cidrs,
            vec!["10.0.0.0/8", "192.168.1.0/24", "::1", "127.0.0.1"]
        );
        assert!(cli.global.json);
        let Command::User(UserCommand::Add(add)) = cli.command;
        assert_eq!(add.client_ids, vec!["a"]);
        assert_eq!(add.role, "client");
    }

    #[test]
    fn globals_before_the_command_and_several_ids() {
        let (cli, cidrs) = parse(&[
            "dffmpeg-admin",
            "-c",
            "/x.yaml",
            "-v",
            "user",
            "add",
            "a",
            "b",
            "--role",
            "root",
        ]);
        assert_eq!(cli.global.config, Some(PathBuf::from("/x.yaml")));
        assert!(cli.global.verbose);
        assert!(cidrs.is_empty());
        let Command::User(UserCommand::Add(add)) = cli.command;
        assert_eq!(add.client_ids, vec!["a", "b"]);
        assert_eq!(
            add.role, "root",
            "the role is checked by the program, not the parser"
        );
    }
}
