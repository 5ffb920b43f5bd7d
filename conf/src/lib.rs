//! Configuration plumbing shared by the coordinator, the worker and the client (config.md §1,
//! limits-and-bad-input.md §6): reading a file, parsing YAML into a program's typed tree with one-line errors
//! that name the file, line, column and dotted key, the typed values every program uses (durations, sizes, IP
//! networks, ranged numbers), upstream-key handling and the search order of candidate files.
//!
//! It deliberately knows no program's keys: each program declares its own tree (`#[serde(deny_unknown_fields)]`),
//! its upstream keys and its cross-key rules, and reports them through [`KeyMap`]. The one section shared word for
//! word by the coordinator and the worker, `argument_policy`, lives here ([`ArgumentPolicy`]) so both parse it alike,
//! as does `log_format` with the log subscriber both daemons install ([`init_logging`]).

mod argument_policy;
mod error;
mod files;
mod logging;
mod upstream;
mod values;
mod yaml;

pub use argument_policy::{ArgumentPolicy, FFMPEG_URL_SCHEMES};
pub use error::{ConfigError, Location, shown};
pub use files::{MAX_FILE_BYTES, Places, candidates, locate, read_file, resolve_path};
pub use logging::{LogFormat, init_logging};
pub use upstream::{UpstreamAction, UpstreamKey};
pub use values::{
    ByteSize, Ignored, Network, TimeSpan, checked_strings, duration, float, format_duration,
    format_size, int, net, parse_duration, parse_network, parse_size, size,
};
pub use yaml::{KeyMap, Parsed, load_yaml, parse};
