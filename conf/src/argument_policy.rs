//! The `argument_policy` section (config.md §2.3, limits-and-bad-input.md §4), shared word for word by the
//! coordinator and the worker, which checks jobs again before running them. This module parses and checks the
//! section's entries; applying the policy to job arguments is not its business.

use serde::Deserialize;
use serde::de::Deserializer;

use crate::error::shown;
use crate::values::checked_strings;

/// The URL schemes FFmpeg knows (limits-and-bad-input.md §4.3), lower case.
#[rustfmt::skip]
pub const FFMPEG_URL_SCHEMES: &[&str] = &[
    "amqp", "async", "bluray", "cache", "concat", "concatf", "crypto", "data", "dtls", "fd", "ffrtmpcrypt",
    "ffrtmphttp", "file", "ftp", "gopher", "gophers", "hls", "http", "httpproxy", "https", "icecast", "ipfs", "ipns",
    "md5", "mmsh", "mmst", "pipe", "prompeg", "rist", "rtmp", "rtmpe", "rtmps", "rtmpt", "rtmpte", "rtmpts", "rtp",
    "rtsp", "rtsps", "sap", "sctp", "sftp", "smb", "srt", "srtp", "subfile", "tcp", "tee", "tls", "udp", "udplite",
    "unix", "zmq",
];

/// The `argument_policy` settings. Every switch is off by default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArgumentPolicy {
    /// Refuse arguments that are URLs whose scheme is not in `allowed_protocols`.
    pub deny_url_inputs: bool,
    /// Schemes still allowed when `deny_url_inputs` is on, lower-cased at load (they compare case-insensitively).
    #[serde(deserialize_with = "protocols")]
    pub allowed_protocols: Vec<String>,
    /// Refuse absolute paths that are not under a path variable.
    pub deny_unmapped_absolute_paths: bool,
    /// Absolute path prefixes that pass `deny_unmapped_absolute_paths` (hardware devices).
    #[serde(deserialize_with = "absolute_prefixes")]
    pub allowed_absolute_paths: Vec<String>,
    /// Refuse filter graphs that name files.
    pub deny_file_reading_filters: bool,
    /// Option names, with their dash, refused anywhere in the arguments (compared case-sensitively).
    #[serde(deserialize_with = "option_names")]
    pub denied_options: Vec<String>,
}

impl Default for ArgumentPolicy {
    fn default() -> ArgumentPolicy {
        ArgumentPolicy {
            deny_url_inputs: false,
            allowed_protocols: vec!["file".to_owned(), "pipe".to_owned()],
            deny_unmapped_absolute_paths: false,
            allowed_absolute_paths: vec!["/dev/null".to_owned(), "/dev/dri/".to_owned()],
            deny_file_reading_filters: false,
            denied_options: Vec::new(),
        }
    }
}

impl ArgumentPolicy {
    /// The warnings of limits-and-bad-input.md §6 for `allowed_protocols` entries FFmpeg does not know:
    /// `<section>.allowed_protocols: 'htpp' is not a URL scheme FFmpeg knows`. `section` is the section's dotted
    /// path, `argument_policy` for both programs.
    pub fn warnings(&self, section: &str) -> Vec<String> {
        self.allowed_protocols
            .iter()
            .filter(|scheme| !FFMPEG_URL_SCHEMES.contains(&scheme.as_str()))
            .map(|scheme| {
                format!(
                    "{section}.allowed_protocols: '{}' is not a URL scheme FFmpeg knows",
                    shown(scheme)
                )
            })
            .collect()
    }
}

/// Whether `text` is an option name of limits-and-bad-input.md §4.6: `-[A-Za-z0-9_]{1,63}`.
pub(crate) fn is_option_name(text: &str) -> bool {
    text.strip_prefix('-').is_some_and(|name| {
        (1..=63).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

fn protocols<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    checked_strings(deserializer, |scheme| Ok(scheme.to_ascii_lowercase()))
}

fn absolute_prefixes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    checked_strings(deserializer, |prefix| {
        if prefix.starts_with('/') {
            Ok(prefix.to_owned())
        } else {
            Err(format!(
                "expected an absolute path prefix such as \"/dev/dri/\", got '{}'",
                shown(prefix)
            ))
        }
    })
}

fn option_names<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    checked_strings(deserializer, |name| {
        if is_option_name(name) {
            Ok(name.to_owned())
        } else {
            Err(format!(
                "expected an option name such as \"-dump_attachment\", got '{}'",
                shown(name)
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_names_follow_the_spec() {
        for good in [
            "-dump_attachment",
            "-a",
            "-x_1",
            &format!("-{}", "a".repeat(63)),
        ] {
            assert!(is_option_name(good), "{good}");
        }
        for bad in [
            "dump_attachment",
            "-",
            "--x",
            "-a-b",
            "-a:b",
            &format!("-{}", "a".repeat(64)),
            "-é",
        ] {
            assert!(!is_option_name(bad), "{bad}");
        }
    }

    #[test]
    fn unknown_schemes_warn() {
        let policy = ArgumentPolicy {
            allowed_protocols: vec!["file".into(), "htpp".into()],
            ..ArgumentPolicy::default()
        };
        assert_eq!(
            policy.warnings("argument_policy"),
            vec![
                "argument_policy.allowed_protocols: 'htpp' is not a URL scheme FFmpeg knows"
                    .to_owned()
            ]
        );
        assert!(
            ArgumentPolicy::default()
                .warnings("argument_policy")
                .is_empty()
        );
    }
}
