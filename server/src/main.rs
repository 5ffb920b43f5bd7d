//! `dffmpeg-coordinator`: loads the configuration, then serves (or runs one admin session with `--admin-stdio`).
//! Ordering and exit codes of cli.md §1.3: 2 for configuration errors, 3 for a locked store in `--admin-stdio`,
//! 1 for everything else; one line on stderr, never on stdout.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio::sync::mpsc;

use dffmpeg_coordinator::admin::AdminService;
use dffmpeg_coordinator::app::Application;
use dffmpeg_coordinator::cli::Cli;
use dffmpeg_coordinator::config::{self, Config};
use dffmpeg_coordinator::store;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let admin_stdio = cli.admin_stdio;
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned());
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(message = %message, location = %location, "panic");
        eprintln!("dffmpeg-coordinator: internal error: {message}{location}; please report it");
    }));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("dffmpeg-coordinator: starting the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dffmpeg-coordinator: {err:#}");
            ExitCode::from(exit_code(&err, admin_stdio))
        }
    }
}

fn exit_code(err: &anyhow::Error, admin_stdio: bool) -> u8 {
    for cause in err.chain() {
        if cause.is::<config::Error>() {
            return 2;
        }
        if admin_stdio
            && matches!(
                cause.downcast_ref::<store::Error>(),
                Some(store::Error::Locked { .. })
            )
        {
            return 3;
        }
    }
    1
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let loaded = Config::load(cli.config.as_deref()).context("loading configuration")?;
    loaded
        .config
        .refuse_unbuilt()
        .context("loading configuration")?;
    let mut config = loaded.config;
    if let Some(host) = cli.host {
        config.host = host;
    }
    if let Some(port) = cli.port {
        config.port = port;
    }
    let dev = cli.dev
        || config.dev_mode
        || std::env::var("DFFMPEG_COORDINATOR_DEV").is_ok_and(|value| value == "1");
    let rust_log_warning = conf::init_logging(
        config.log_level(dev),
        config.log_format,
        std::env::var("RUST_LOG").ok().as_deref(),
        std::io::stderr,
    );
    let source = loaded
        .source
        .as_ref()
        .map_or_else(|| "none".to_owned(), |path| path.display().to_string());
    if !cli.admin_stdio {
        tracing::info!(version = protocol::VERSION, config = %source, dev, "starting");
    }
    if loaded.source.is_none() && !cli.admin_stdio {
        tracing::info!("no configuration file found; using defaults");
    }
    for warning in loaded.warnings.iter().chain(rust_log_warning.iter()) {
        tracing::warn!("{warning}");
    }
    if cli.admin_stdio {
        return admin_stdio(config).await;
    }
    if dev {
        tracing::warn!("development mode: debug logging, configuration file watched, API docs on");
    }
    let app = Application::build(config, dev).await?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(forward_signals(tx));
    app.run(rx).await?;
    Ok(())
}

/// SIGTERM and SIGINT, named, in the order they arrive.
async fn forward_signals(tx: mpsc::Sender<String>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        if tx.send(name.to_owned()).await.is_err() {
            return;
        }
    }
}

/// One admin session on stdin/stdout over the store, opened directly (storage.md §7).
async fn admin_stdio(config: Config) -> anyhow::Result<()> {
    let cache = u64::from(config.database.cache_capacity_mb) << 20;
    let opened = store::Store::open(&config.database.path, cache).context("opening the store")?;
    let stop = tokio_util::sync::CancellationToken::new();
    let flusher = tokio::spawn(opened.flusher.run(stop.clone()));
    let service = AdminService::stdio(opened.store.clone());
    let served = service.serve(tokio::io::stdin(), tokio::io::stdout()).await;
    let flushed = opened.store.flush().await;
    stop.cancel();
    let _ = flusher.await;
    served.context("serving the admin session")?;
    flushed.map_err(|_| anyhow::anyhow!("the final flush failed"))?;
    opened
        .store
        .mark_clean_stop()
        .context("closing the store")?;
    Ok(())
}
