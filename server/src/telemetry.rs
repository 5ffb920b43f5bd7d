//! The tracing subscriber: `RUST_LOG` wins over the configured level; text or JSON lines on the given writer
//! (stderr in the binary).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// Installs the global subscriber. Returns a warning to log when `RUST_LOG` does not parse.
pub fn init<W>(level: &str, format: LogFormat, writer: W) -> Option<String>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let mut warning = None;
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => match EnvFilter::try_new(&value) {
            Ok(filter) => filter,
            Err(_) => {
                warning = Some(format!(
                    "RUST_LOG: invalid filter '{value}'; using log_level"
                ));
                EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"))
            }
        },
        _ => EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")),
    };
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        .with_ansi(colour);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    warning
}
