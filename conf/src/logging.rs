//! Log output shared by the daemons: the `log_format` setting and the tracing subscriber (`RUST_LOG` wins over the
//! configured level; colour only on a terminal without `NO_COLOR`, cli.md §6). Not here: what is logged.

use std::io::IsTerminal;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Log line format on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber (once; later calls do nothing). `rust_log` is the value of `RUST_LOG`. Returns a
/// warning to log when it does not parse: `RUST_LOG: invalid filter '<value>'; using log_level`.
pub fn init_logging<W>(
    level: &str,
    format: LogFormat,
    rust_log: Option<&str>,
    writer: W,
) -> Option<String>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let from_level = || EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let mut warning = None;
    let filter = match rust_log.map(str::trim) {
        Some(value) if !value.is_empty() => EnvFilter::try_new(value).unwrap_or_else(|_| {
            warning = Some(format!(
                "RUST_LOG: invalid filter '{value}'; using log_level"
            ));
            from_level()
        }),
        _ => from_level(),
    };
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
