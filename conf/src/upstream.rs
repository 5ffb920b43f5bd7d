//! Keys of upstream dffmpeg 0.4 that mean nothing here (config.md §1 "upstream keys"): a program declares them
//! with what to do, and `yaml` applies the declaration while it reads a file. A key accepted with a warning still
//! needs a field in the program's tree ([`crate::Ignored`]) so that `deny_unknown_fields` lets it through; such
//! keys are left out of the "expected one of" list of an unknown-key error.

/// What to do when an upstream key is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamAction {
    /// Accept the key and its value, whatever they are, and return the warning `<key>: <text>`.
    Warn(&'static str),
    /// Refuse the file with `<file>:<l>:<c>: <key>: <text>`.
    Refuse(&'static str),
}

/// One upstream key: a dotted path (`database.defaults`), or with a leading `*.` the same path under any parent,
/// the top level included (`*.auth.encryption_keys` matches `auth.encryption_keys` and
/// `coordinator.auth.encryption_keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamKey {
    /// The dotted path, optionally starting with `*.`.
    pub pattern: &'static str,
    /// What its presence does.
    pub action: UpstreamAction,
}

impl UpstreamKey {
    /// An upstream key accepted with a warning.
    pub const fn warn(pattern: &'static str, warning: &'static str) -> UpstreamKey {
        UpstreamKey {
            pattern,
            action: UpstreamAction::Warn(warning),
        }
    }

    /// An upstream key that is refused.
    pub const fn refuse(pattern: &'static str, message: &'static str) -> UpstreamKey {
        UpstreamKey {
            pattern,
            action: UpstreamAction::Refuse(message),
        }
    }

    /// Whether the dotted `path` of a key (sequence items written `[i]`) is this key.
    pub fn matches(&self, path: &str) -> bool {
        match self.pattern.strip_prefix("*.") {
            Some(tail) => {
                path == tail
                    || path
                        .strip_suffix(tail)
                        .is_some_and(|head| head.ends_with('.'))
            }
            None => path == self.pattern,
        }
    }
}

/// The first declaration matching `path`.
pub(crate) fn find<'a>(upstream: &'a [UpstreamKey], path: &str) -> Option<&'a UpstreamKey> {
    upstream.iter().find(|key| key.matches(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_exact_and_any_parent() {
        let exact = UpstreamKey::warn("transports", "x");
        assert!(exact.matches("transports"));
        assert!(!exact.matches("a.transports"));
        assert!(!exact.matches("transports.http"));
        let anywhere = UpstreamKey::refuse("*.auth.encryption_keys", "x");
        assert!(anywhere.matches("auth.encryption_keys"));
        assert!(anywhere.matches("coordinator.auth.encryption_keys"));
        assert!(anywhere.matches("list[0].auth.encryption_keys"));
        assert!(!anywhere.matches("oauth.encryption_keys"));
        assert!(!anywhere.matches("auth.encryption_keys_file"));
    }
}
