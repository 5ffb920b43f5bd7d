//! Command-line flags of `dffmpeg-coordinator` (cli.md §1).

use std::path::PathBuf;

use clap::Parser;

/// The dffmpeg coordinator: queues ffmpeg/ffprobe jobs and pushes them to workers.
#[derive(Debug, Parser)]
#[command(name = "dffmpeg-coordinator", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (default: $DFFMPEG_COORDINATOR_CONFIG, ./dffmpeg-coordinator.yaml,
    /// ~/.config/dffmpeg/coordinator.yaml, /etc/dffmpeg/coordinator.yaml; none: built-in defaults)
    #[arg(short = 'c', long = "config", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Bind address (overrides `host`)
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Bind port; 0 picks a free port (overrides `port`)
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Development mode: debug logging and the API docs on (also DFFMPEG_COORDINATOR_DEV=1)
    #[arg(long)]
    pub dev: bool,
    /// One admin session on stdin/stdout, for dffmpeg-admin while the coordinator is stopped
    #[arg(long, hide = true)]
    pub admin_stdio: bool,
}
