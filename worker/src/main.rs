//! `dffmpeg-worker` (cli.md §3): loads the configuration, then either prints the `--check` lines or builds the
//! worker and runs its session until it drains or must stop. Exit codes of cli.md §3.4: 0 after a drain or a forced
//! stop (and a passing `--check`), 1 for configuration errors, no usable binary, close 4005 or 4000 and a failing
//! `--check`, 2 for usage errors (clap), 3 for close 4002. Failures print one line, `dffmpeg-worker: …`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use dffmpeg_worker::config::Config;
use dffmpeg_worker::{RunError, Worker, WorkerSignal, check};
use tokio::sync::mpsc;

/// Runs the jobs a dffmpeg coordinator assigns to this machine.
#[derive(Debug, Parser)]
#[command(name = "dffmpeg-worker", version)]
struct Cli {
    /// Configuration file (default: $DFFMPEG_WORKER_CONFIG, ./dffmpeg-worker.yaml, ~/.config/dffmpeg/worker.yaml,
    /// /etc/dffmpeg/worker.yaml; DFFMPEG_WORKER_ID, DFFMPEG_HMAC_KEY and DFFMPEG_COORDINATOR_URL override it).
    #[arg(short = 'c', long = "config", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Check the binaries, the path variables and the credentials, print one line each, and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse(); // a usage error: clap prints it and exits 2
    install_panic_hook();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("dffmpeg-worker: starting the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("dffmpeg-worker: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

/// 3 for an unsupported protocol version, 1 for everything else (cli.md §3.4).
fn exit_code(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<RunError>())
        .map_or(1, RunError::exit_code)
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let loaded = Config::load(cli.config.as_deref()).context("loading configuration")?;
    let rust_log = std::env::var("RUST_LOG").ok();
    let rust_log_warning = conf::init_logging(
        &loaded.config.log_level,
        loaded.config.log_format,
        rust_log.as_deref(),
        std::io::stderr,
    );
    if cli.check {
        let report = check::run(&loaded.config, &loaded.identity).await;
        for line in &report.lines {
            println!("{line}");
        }
        return Ok(if report.ok { 0 } else { 1 });
    }
    let source = loaded
        .source
        .as_ref()
        .map_or_else(|| "none".to_owned(), |path| path.display().to_string());
    tracing::info!(
        version = protocol::VERSION,
        worker_id = %loaded.identity.client_id,
        config = %source,
        "starting"
    );
    for warning in loaded.warnings.iter().chain(rust_log_warning.iter()) {
        tracing::warn!("{warning}");
    }
    let worker = Worker::build(loaded.config, loaded.identity).await?;
    let (signals_tx, signals_rx) = mpsc::channel(8);
    tokio::spawn(forward_signals(signals_tx));
    worker.run_until(signals_rx).await?;
    Ok(0)
}

/// SIGTERM, SIGINT and SIGHUP, in the order they arrive.
async fn forward_signals(signals: mpsc::Sender<WorkerSignal>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("installing the signal handlers failed");
        return;
    };
    loop {
        let received = tokio::select! {
            _ = term.recv() => WorkerSignal::Terminate,
            _ = int.recv() => WorkerSignal::Interrupt,
            _ = hup.recv() => WorkerSignal::Hangup,
        };
        if signals.send(received).await.is_err() {
            return;
        }
    }
}

/// cli.md §6: one line, `dffmpeg-worker: internal error: <message>; please report it`, also logged.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned());
        let location = info
            .location()
            .map(|location| format!(" at {}:{}", location.file(), location.line()))
            .unwrap_or_default();
        tracing::error!(message = %message, location = %location, "panic");
        eprintln!("dffmpeg-worker: internal error: {message}{location}; please report it");
    }));
}
