//! The one-line configuration error of limits-and-bad-input.md §6 and the source position it may carry. How
//! positions are found is `yaml`'s business; this module only formats.

use std::fmt;

/// A 1-based line and column (in characters) of a YAML file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    /// 1-based line.
    pub line: u64,
    /// 1-based column, counted in characters.
    pub column: u64,
}

impl Location {
    /// The start of a file, `1:1`.
    pub const START: Location = Location { line: 1, column: 1 };

    /// `None` for serde-saphyr's unknown location (0:0).
    pub(crate) fn from_saphyr(location: serde_saphyr::Location) -> Option<Location> {
        (location.line() > 0 && location.column() > 0).then(|| Location {
            line: location.line(),
            column: location.column(),
        })
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A configuration error. Its `Display` is the one line a program prints after `loading configuration: `:
/// `<file>:<l>:<c>: <message>`, `<file>: <message>` when the position is unknown or the problem spans keys, or the
/// bare message when no file is involved (a default value that does not fit, for example).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file as it was found or named (`./dffmpeg-coordinator.yaml`, the `--config` argument, …).
    pub file: Option<String>,
    /// Where in the file, when known.
    pub location: Option<Location>,
    /// What is wrong, lowercase and without a trailing period. Never contains a line break.
    pub message: String,
}

impl ConfigError {
    /// An error at a position of a file.
    pub fn at(file: &str, location: Option<Location>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: Some(file.to_owned()),
            location,
            message: one_line(message.into()),
        }
    }

    /// An error about a whole file (`<file>: <message>`).
    pub fn in_file(file: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::at(file, None, message)
    }

    /// An error that involves no file.
    pub fn bare(message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: None,
            location: None,
            message: one_line(message.into()),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, &self.location) {
            (Some(file), Some(location)) => write!(f, "{file}:{location}: {}", self.message),
            (Some(file), None) => write!(f, "{file}: {}", self.message),
            (None, _) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Messages are printed as one line whatever they quote.
fn one_line(message: String) -> String {
    if message.chars().any(char::is_control) {
        message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    } else {
        message
    }
}

/// Quotes text taken from the file (a key, a value) so that it stays on one line and short: control characters
/// are escaped and anything beyond 80 characters is cut with `…`.
pub fn shown(text: &str) -> String {
    const MAX_CHARS: usize = 80;
    let mut out = String::with_capacity(text.len().min(MAX_CHARS * 2));
    for (idx, c) in text.chars().enumerate() {
        if idx == MAX_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_each_shape() {
        let at = ConfigError::at(
            "c.yaml",
            Some(Location {
                line: 4,
                column: 11,
            }),
            "x: bad",
        );
        assert_eq!(at.to_string(), "c.yaml:4:11: x: bad");
        assert_eq!(
            ConfigError::in_file("c.yaml", "bad").to_string(),
            "c.yaml: bad"
        );
        assert_eq!(
            ConfigError::bare("admin_socket: long").to_string(),
            "admin_socket: long"
        );
    }

    #[test]
    fn stays_on_one_line() {
        assert_eq!(ConfigError::bare("a\nb\r").to_string(), "a b ");
        assert_eq!(shown("a\nb"), "a\\nb");
        assert_eq!(shown(&"x".repeat(100)).chars().count(), 81);
    }
}
