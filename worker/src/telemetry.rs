//! The tracing subscriber of `dffmpeg-worker`: `RUST_LOG` wins over `log_level`; text or JSON lines on the given
//! writer (stderr in the binary). Not here: what is logged.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// Installs the global subscriber (once; later calls do nothing). `rust_log` is the value of `RUST_LOG`. Returns a
/// warning to log when it does not parse: `RUST_LOG: invalid filter '<value>'; using log_level`.
pub fn init<W>(level: &str, format: LogFormat, rust_log: Option<&str>, writer: W) -> Option<String>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let from_level = || EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let mut warning = None;
    let filter = match rust_log.map(str::trim) {
        Some(value) if !value.is_empty() => match EnvFilter::try_new(value) {
            Ok(filter) => filter,
            Err(_) => {
                warning = Some(format!(
                    "RUST_LOG: invalid filter '{value}'; using log_level"
                ));
                from_level()
            }
        },
        _ => from_level(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    warning
}
