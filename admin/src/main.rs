//! `dffmpeg-admin`, the operator CLI (cli.md §2): parses the command line, runs the command through the admin
//! protocol, and turns every failure into one stderr line and an exit code. The coordinator does the work; this
//! program never opens the store itself.

mod cidr;
mod cli;
mod config;
mod user;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use client::admin::AdminError;

use crate::cli::{Cli, Command, GlobalArgs, UserCommand};

/// Generic failure.
const EXIT_FAILURE: u8 = 1;
/// Bad input (also the protocol's `invalid_argument`).
const EXIT_USAGE: u8 = 2;
/// The store is locked and the admin socket is silent.
const EXIT_LOCKED: u8 = 3;
/// The admin socket refused this user.
const EXIT_PERMISSION: u8 = 4;

/// A failure to report: one line after `dffmpeg-admin: `, and the exit code.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

/// The exit code of an admin protocol failure (cli.md §2.3).
fn exit_code_for(err: &AdminError) -> u8 {
    match err {
        AdminError::Remote(remote)
            if remote.code == protocol::admin::AdminErrorCode::InvalidArgument =>
        {
            EXIT_USAGE
        }
        AdminError::DatabaseLocked { .. } => EXIT_LOCKED,
        AdminError::PermissionDenied { .. } | AdminError::PeerRefused { .. } => EXIT_PERMISSION,
        _ => EXIT_FAILURE,
    }
}

fn main() -> ExitCode {
    install_panic_hook();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    let code = match run(&cli, &matches) {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("dffmpeg-admin: {}", failure.message);
            failure.code
        }
    };
    ExitCode::from(code)
}

fn run(cli: &Cli, matches: &clap::ArgMatches) -> Result<u8, Failure> {
    match &cli.command {
        Command::User(UserCommand::Add(add)) => {
            let cidrs = cli::user_add_matches(matches)
                .map(cli::ordered_cidrs)
                .unwrap_or_default();
            let request = user::validate(&add.client_ids, &add.role, &cidrs, add.key.as_deref())
                .map_err(|message| Failure::new(EXIT_USAGE, message))?;
            block_on(&cli.global, |global| user::run(global, request))
        }
    }
}

/// Runs one command on a single-threaded runtime: the admin does one thing at a time.
fn block_on<'a, F, Fut>(global: &'a GlobalArgs, command: F) -> Result<u8, Failure>
where
    F: FnOnce(&'a GlobalArgs) -> Fut,
    Fut: Future<Output = Result<u8, Failure>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Failure::new(EXIT_FAILURE, format!("starting the runtime: {err}")))?;
    runtime.block_on(command(global))
}

/// A panic is a bug: one line instead of a backtrace (cli.md §6); the process then exits 101.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("panic");
        eprintln!("dffmpeg-admin: internal error: {message}; please report it");
    }));
}
