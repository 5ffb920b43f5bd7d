//! YAML text → a program's typed tree, with the one-line errors of config.md §1 and limits-and-bad-input.md §6.
//!
//! A file is read twice, both times by serde-saphyr. The first pass builds an outline (every key and sequence item
//! with its position, values dropped): it alone reports syntax errors, a top level that is not a mapping,
//! duplicate keys with their full dotted path, and upstream keys; it also yields the [`KeyMap`] through which a
//! program reports its own range and cross-key problems at the right line. The second pass deserializes the
//! typed tree through `serde_path_to_error`, so that a type error, an unknown key or a value refused by a typed
//! helper is reported with its dotted key. Both passes run under serde-saphyr's default budget (depth 64, 250 000
//! nodes, alias-replay limits), which also bounds the outline.
//!
//! Not here: reading files (`files`), the values themselves (`values`), any program's keys.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::options::{DuplicateKeyPolicy, NonFiniteFloatPolicy};
use serde_saphyr::{MessageFormatter, Spanned, UserMessageFormatter};

use crate::error::{ConfigError, Location, shown};
use crate::upstream::{self, UpstreamAction, UpstreamKey};

/// Message of the outline pass for a mapping key that is a list or a mapping.
const KEY_NOT_SCALAR: &str = "mapping keys must be plain scalars";

/// A successfully parsed file.
#[derive(Debug)]
pub struct Parsed<T> {
    /// The typed tree.
    pub value: T,
    /// Where each key of the file is, for errors found after parsing.
    pub keys: KeyMap,
    /// One line per upstream key accepted with a warning, `<key>: <warning>`, in file order.
    pub warnings: Vec<String>,
}

/// The position of every key written in a file, by dotted path (`janitor.interval`, sequence items
/// `allowed_metrics_ips[1]`). Programs use it to report problems found after parsing at the key's line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyMap {
    file: String,
    locations: HashMap<String, Location>,
}

impl KeyMap {
    /// A map for `file` that knows no key (errors then read `<file>: <key>: …`).
    pub fn new(file: &str) -> KeyMap {
        KeyMap {
            file: file.to_owned(),
            locations: HashMap::new(),
        }
    }

    /// The file as shown in messages.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Where `key` is written: the key itself for a mapping entry, the item for a sequence item.
    pub fn location(&self, key: &str) -> Option<Location> {
        self.locations.get(key).copied()
    }

    /// Whether `key` is written in the file.
    pub fn contains(&self, key: &str) -> bool {
        self.locations.contains_key(key)
    }

    /// `<file>:<l>:<c>: <key>: <message>`, or `<file>: <key>: <message>` when the key is not in the file.
    pub fn error(&self, key: &str, message: impl fmt::Display) -> ConfigError {
        ConfigError::at(&self.file, self.location(key), format!("{key}: {message}"))
    }

    /// `<file>: <message>`, for problems that involve several keys.
    pub fn file_error(&self, message: impl fmt::Display) -> ConfigError {
        ConfigError::in_file(&self.file, message.to_string())
    }
}

/// Parses `text` (the content of `path_as_shown`) into `T`. An empty file, or one holding only comments, gives
/// `T`'s defaults (`T` should be `#[serde(default)]`). No upstream keys.
pub fn load_yaml<T: DeserializeOwned>(path_as_shown: &str, text: &str) -> Result<T, ConfigError> {
    parse(path_as_shown, text, &[]).map(|parsed| parsed.value)
}

/// Parses `text` (the content of `path_as_shown`) into `T`, applying the `upstream` key declarations.
pub fn parse<T: DeserializeOwned>(
    path_as_shown: &str,
    text: &str,
    upstream: &[UpstreamKey],
) -> Result<Parsed<T>, ConfigError> {
    let file = path_as_shown;
    let root = outline(file, text)?;
    let mut walk = Walk {
        file,
        upstream,
        keys: KeyMap::new(file),
        warnings: Vec::new(),
    };
    match &root.value {
        Node::Null => {}
        Node::Map(entries) => walk.map(entries, "")?,
        Node::Seq(_) | Node::Scalar => {
            return Err(ConfigError::at(
                file,
                Some(Location::START),
                "expected a mapping of settings",
            ));
        }
    }
    // A null document (empty, comments only, `~`) means all defaults.
    let typed_text = if matches!(root.value, Node::Null) {
        ""
    } else {
        text
    };
    let value = typed(file, typed_text, &walk.keys, upstream)?;
    Ok(Parsed {
        value,
        keys: walk.keys,
        warnings: walk.warnings,
    })
}

fn outline(file: &str, text: &str) -> Result<Spanned<Node>, ConfigError> {
    let options = serde_saphyr::options! {
        with_snippet: false,
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
        non_finite_float_policy: NonFiniteFloatPolicy::PassThrough,
    };
    serde_saphyr::with_deserializer_from_str_with_options(text, options, |deserializer| {
        Spanned::<Node>::deserialize(deserializer)
    })
    .map_err(|err| {
        let err = original(&err);
        let location = err.location().and_then(Location::from_saphyr);
        match err {
            serde_saphyr::Error::Message { msg, .. } if msg == KEY_NOT_SCALAR => {
                ConfigError::at(file, location, KEY_NOT_SCALAR)
            }
            other => ConfigError::at(
                file,
                location,
                format!("invalid YAML: {}", yaml_message(other)),
            ),
        }
    })
}

fn typed<T: DeserializeOwned>(
    file: &str,
    text: &str,
    keys: &KeyMap,
    upstream: &[UpstreamKey],
) -> Result<T, ConfigError> {
    let options = serde_saphyr::options! {
        with_snippet: false,
        non_finite_float_policy: NonFiniteFloatPolicy::PassThrough,
    };
    let mut path = String::new();
    serde_saphyr::with_deserializer_from_str_with_options(text, options, |deserializer| {
        serde_path_to_error::deserialize(deserializer).map_err(|err| {
            path = dotted(err.path());
            err.into_inner()
        })
    })
    .map_err(|err| typed_error(file, keys, upstream, &path, &err))
}

/// The dotted form of a serde path: `janitor.interval`, `allowed_metrics_ips[1]`.
fn dotted(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            serde_path_to_error::Segment::Seq { index } => {
                out.push_str(&format!("[{index}]"));
            }
            serde_path_to_error::Segment::Map { key } => push_key(&mut out, key),
            serde_path_to_error::Segment::Enum { variant } => push_key(&mut out, variant),
            serde_path_to_error::Segment::Unknown => push_key(&mut out, "?"),
        }
    }
    out
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

fn joined(parent: &str, key: &str) -> String {
    let mut path = parent.to_owned();
    push_key(&mut path, key);
    path
}

/// The section holding `path`'s last key: `janitor` for `janitor.interval`, `` for `port`.
fn parent(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(idx) => &path[..idx],
        None => "",
    }
}

/// The error beneath alias and snippet wrappers.
fn original(mut err: &serde_saphyr::Error) -> &serde_saphyr::Error {
    loop {
        match err {
            serde_saphyr::Error::AliasError { error, .. } => err = error,
            serde_saphyr::Error::WithSnippet { error, .. } => err = error,
            other => return other,
        }
    }
}

/// serde-saphyr's own text for an error, without its location suffix.
fn yaml_message(err: &serde_saphyr::Error) -> String {
    match err {
        serde_saphyr::Error::MultipleDocuments { .. } => {
            "more than one document in the file".to_owned()
        }
        other => UserMessageFormatter.format_message(other).into_owned(),
    }
}

/// Turns an error of the typed pass into the line of config.md §1.
fn typed_error(
    file: &str,
    keys: &KeyMap,
    upstream: &[UpstreamKey],
    path: &str,
    err: &serde_saphyr::Error,
) -> ConfigError {
    use serde_saphyr::Error as E;

    let err = original(err);
    let saphyr_location = err.location().and_then(Location::from_saphyr);
    let at = |key: &str, message: String| {
        ConfigError::at(file, keys.location(key).or(saphyr_location), message)
    };
    let expected = |what: &str| {
        if path.is_empty() {
            ConfigError::at(
                file,
                Some(Location::START),
                "expected a mapping of settings",
            )
        } else {
            at(path, format!("{path}: expected {what}"))
        }
    };
    match err {
        E::SerdeUnknownField {
            field, expected, ..
        } => {
            // The path ends with the unknown key, except when it failed before being entered.
            let full = if path == field.as_str() || path.ends_with(&format!(".{field}")) {
                path.to_owned()
            } else {
                joined(path, field)
            };
            let section = parent(&full);
            let valid: Vec<&str> = expected
                .iter()
                .copied()
                .filter(|name| upstream::find(upstream, &joined(section, name)).is_none())
                .collect();
            let message = if valid.is_empty() {
                format!("unknown key '{}'", shown(&full))
            } else {
                format!(
                    "unknown key '{}'; expected one of: {}",
                    shown(&full),
                    valid.join(", ")
                )
            };
            at(&full, message)
        }
        E::SerdeUnknownVariant {
            variant, expected, ..
        } => at(
            path,
            format!(
                "{path}: expected one of {}, got '{}'",
                expected.join(", "),
                shown(variant)
            ),
        ),
        E::SerdeMissingField { field, .. } => {
            let full = joined(path, field);
            at(path, format!("missing key '{full}'"))
        }
        E::DuplicateMappingKey { key, .. } => {
            let full = joined(path.trim_end_matches(".?"), key.as_deref().unwrap_or("?"));
            ConfigError::at(
                file,
                saphyr_location,
                format!("duplicate key '{}'", shown(&full)),
            )
        }
        E::Message { msg, .. } => {
            if path.is_empty() {
                ConfigError::at(file, saphyr_location, msg.clone())
            } else {
                at(path, format!("{path}: {msg}"))
            }
        }
        E::SerdeInvalidType { expected: what, .. }
        | E::SerdeInvalidValue { expected: what, .. } => expected(&friendly_expected(what)),
        E::SerdeInvalidLength { expected: what, .. } => expected(&friendly_expected(what)),
        E::InvalidScalar { ty, .. } => expected(&scalar_type(ty)),
        E::Unexpected { expected: what, .. } => expected(&friendly_expected(what)),
        E::NullIntoString { .. }
        | E::TaggedScalarCannotDeserializeIntoString { .. }
        | E::QuotingRequired { .. } => expected("a string"),
        E::InvalidBooleanStrict { .. } => expected("a boolean (true or false)"),
        E::NonFiniteFloat { .. } => expected("a finite number"),
        E::InvalidCharNull { .. } | E::InvalidCharNotSingleScalar { .. } => {
            expected("a single character")
        }
        E::UnexpectedValueForUnitEnumVariant { .. }
        | E::ExternallyTaggedEnumExpectedScalarOrMapping { .. } => {
            expected("one of the listed names")
        }
        other => ConfigError::at(
            file,
            saphyr_location,
            format!("invalid YAML: {}", yaml_message(other)),
        ),
    }
}

/// Serde's "expected" phrases in the words of a configuration file.
fn friendly_expected(what: &str) -> String {
    if what.starts_with("struct ") || what == "mapping start" || what == "a map" {
        "a mapping".to_owned()
    } else if what == "a sequence" || what == "sequence start" {
        "a list".to_owned()
    } else if what == "string scalar" || what == "a string" {
        "a string".to_owned()
    } else if what.starts_with("enum ") {
        "one of the listed names".to_owned()
    } else if what == "path string" {
        "a path".to_owned()
    } else if what == "a boolean" {
        "a boolean (true or false)".to_owned()
    } else {
        what.to_owned()
    }
}

fn scalar_type(ty: &str) -> String {
    match ty {
        "bool" | "boolean" => "a boolean (true or false)".to_owned(),
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative integer".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer".to_owned(),
        "f32" | "f64" | "floating point" => "a number".to_owned(),
        "char" => "a single character".to_owned(),
        other => format!("a value of type {other}"),
    }
}

/// The outline of a YAML node: what the walk needs, values dropped.
#[derive(Debug)]
enum Node {
    Null,
    Scalar,
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Key>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Key>>()? {
            let value = map.next_value::<Spanned<Node>>()?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

/// A mapping key as text.
#[derive(Debug)]
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_any(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a plain scalar key")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Key, E> {
        Ok(Key(value.to_string()))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Key, E> {
        Ok(Key(value.to_string()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Key, E> {
        Ok(Key(value.to_string()))
    }

    fn visit_i128<E: de::Error>(self, value: i128) -> Result<Key, E> {
        Ok(Key(value.to_string()))
    }

    fn visit_u128<E: de::Error>(self, value: u128) -> Result<Key, E> {
        Ok(Key(value.to_string()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Key, E> {
        Ok(Key(value.to_string()))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Key, E> {
        Ok(Key(value.to_owned()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
        Ok(Key("null".to_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Key, A::Error> {
        Err(de::Error::custom(KEY_NOT_SCALAR))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Key, A::Error> {
        Err(de::Error::custom(KEY_NOT_SCALAR))
    }
}

/// The walk over the outline: records positions, refuses duplicates and refused upstream keys, collects warnings.
struct Walk<'a> {
    file: &'a str,
    upstream: &'a [UpstreamKey],
    keys: KeyMap,
    warnings: Vec<String>,
}

impl Walk<'_> {
    fn map(
        &mut self,
        entries: &[(Spanned<Key>, Spanned<Node>)],
        path: &str,
    ) -> Result<(), ConfigError> {
        let mut seen = HashSet::with_capacity(entries.len());
        for (key, value) in entries {
            let full = joined(path, &key.value.0);
            let location = Location::from_saphyr(key.referenced);
            if !seen.insert(key.value.0.as_str()) {
                return Err(ConfigError::at(
                    self.file,
                    location,
                    format!("duplicate key '{}'", shown(&full)),
                ));
            }
            if let Some(location) = location {
                self.keys.locations.insert(full.clone(), location);
            }
            match upstream::find(self.upstream, &full).map(|key| key.action) {
                Some(UpstreamAction::Refuse(message)) => {
                    return Err(ConfigError::at(
                        self.file,
                        location,
                        format!("{full}: {message}"),
                    ));
                }
                Some(UpstreamAction::Warn(warning)) => {
                    self.warnings.push(format!("{full}: {warning}"));
                    continue;
                }
                None => {}
            }
            self.node(&value.value, &full)?;
        }
        Ok(())
    }

    fn node(&mut self, node: &Node, path: &str) -> Result<(), ConfigError> {
        match node {
            Node::Map(entries) => self.map(entries, path),
            Node::Seq(items) => {
                for (idx, item) in items.iter().enumerate() {
                    let full = format!("{path}[{idx}]");
                    if let Some(location) = Location::from_saphyr(item.referenced) {
                        self.keys.locations.insert(full.clone(), location);
                    }
                    self.node(&item.value, &full)?;
                }
                Ok(())
            }
            Node::Null | Node::Scalar => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ipnet::IpNet;
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Janitor {
        #[serde(deserialize_with = "crate::duration::at_least::<_, 1000>")]
        interval: Duration,
        #[serde(deserialize_with = "crate::duration::deserialize")]
        jitter: Duration,
        #[serde(deserialize_with = "crate::float::at_least::<_, 1>")]
        worker_threshold_factor: f64,
    }

    impl Default for Janitor {
        fn default() -> Janitor {
            Janitor {
                interval: Duration::from_secs(10),
                jitter: Duration::from_millis(500),
                worker_threshold_factor: 1.5,
            }
        }
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(rename_all = "lowercase")]
    enum LogFormat {
        #[default]
        Text,
        Json,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Settings {
        #[serde(deserialize_with = "crate::int::ranged::<_, u16, 0, 65535>")]
        port: u16,
        log_format: LogFormat,
        janitor: Janitor,
        #[serde(deserialize_with = "crate::int::ranged::<_, u64, 16, 1_000_000>")]
        max_connections: u64,
        #[serde(deserialize_with = "crate::net::list")]
        allowed_metrics_ips: Vec<IpNet>,
        #[serde(deserialize_with = "crate::size::ranged::<_, { 64 << 10 }, { 64 << 20 }>")]
        max_body_bytes: u64,
        enabled: bool,
        names: Vec<String>,
        argument_policy: crate::ArgumentPolicy,
        handshake_delay_seconds: crate::Ignored,
    }

    impl Default for Settings {
        fn default() -> Settings {
            Settings {
                port: 8000,
                log_format: LogFormat::Text,
                janitor: Janitor::default(),
                max_connections: 4096,
                allowed_metrics_ips: Vec::new(),
                max_body_bytes: 1 << 20,
                enabled: true,
                names: Vec::new(),
                argument_policy: crate::ArgumentPolicy::default(),
                handshake_delay_seconds: crate::Ignored,
            }
        }
    }

    const UPSTREAM: &[UpstreamKey] = &[
        UpstreamKey::warn("handshake_delay_seconds", "has no effect"),
        UpstreamKey::refuse("database.defaults", "not supported; set database.path"),
        UpstreamKey::refuse("*.auth.encryption_keys", "replaced by encryption.keys_file"),
    ];

    fn parse_settings(text: &str) -> Result<Parsed<Settings>, ConfigError> {
        parse("c.yaml", text, UPSTREAM)
    }

    fn error_line(text: &str) -> String {
        match parse_settings(text) {
            Ok(parsed) => panic!("{text:?} parsed: {parsed:?}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn empty_files_mean_defaults() {
        for text in ["", "\n\n", "# nothing here\n", "---\n", "~\n", "\u{feff}"] {
            let parsed = parse_settings(text).unwrap();
            assert_eq!(parsed.value, Settings::default(), "{text:?}");
            assert!(parsed.warnings.is_empty());
        }
    }

    #[test]
    fn parses_values() {
        let text = "port: 0x1F40\nlog_format: json\njanitor:\n  interval: 5m\n  jitter: 0.3\n  \
                    worker_threshold_factor: 2\nmax_connections: '16'\nallowed_metrics_ips: [10.0.0.0/8, \"::1\"]\n\
                    max_body_bytes: 64KiB\nenabled: false\nnames: [a, 1]\n";
        let parsed = parse_settings(text).unwrap();
        assert_eq!(
            parsed.value,
            Settings {
                port: 8000,
                log_format: LogFormat::Json,
                janitor: Janitor {
                    interval: Duration::from_secs(300),
                    jitter: Duration::from_millis(300),
                    worker_threshold_factor: 2.0,
                },
                max_connections: 16,
                allowed_metrics_ips: vec![
                    "10.0.0.0/8".parse().unwrap(),
                    "::1/128".parse().unwrap()
                ],
                max_body_bytes: 64 << 10,
                enabled: false,
                names: vec!["a".into(), "1".into()],
                ..Settings::default()
            }
        );
        let keys = &parsed.keys;
        assert_eq!(keys.location("port"), Some(Location { line: 1, column: 1 }));
        assert_eq!(
            keys.location("janitor.jitter"),
            Some(Location { line: 5, column: 3 })
        );
        assert_eq!(
            keys.location("allowed_metrics_ips[1]"),
            Some(Location {
                line: 8,
                column: 35
            })
        );
        assert!(keys.contains("janitor"));
        assert!(!keys.contains("janitor.worker"));
        assert_eq!(
            keys.error("janitor.jitter", "too much").to_string(),
            "c.yaml:5:3: janitor.jitter: too much"
        );
        assert_eq!(keys.error("nowhere", "x").to_string(), "c.yaml: nowhere: x");
        assert_eq!(
            keys.file_error("a (1) must be at most b (0)").to_string(),
            "c.yaml: a (1) must be at most b (0)"
        );
        assert_eq!(keys.file(), "c.yaml");
    }

    #[test]
    fn unknown_keys_list_their_section() {
        assert_eq!(
            error_line("janitor:\n  intervall: 3\n"),
            "c.yaml:2:3: unknown key 'janitor.intervall'; expected one of: interval, jitter, \
             worker_threshold_factor"
        );
        // Upstream keys accepted with a warning are not offered.
        assert_eq!(
            error_line("x: 1\n"),
            "c.yaml:1:1: unknown key 'x'; expected one of: port, log_format, janitor, max_connections, \
             allowed_metrics_ips, max_body_bytes, enabled, names, argument_policy"
        );
        assert_eq!(
            error_line("argument_policy: {deny: true}\n"),
            "c.yaml:1:19: unknown key 'argument_policy.deny'; expected one of: deny_url_inputs, \
             allowed_protocols, deny_unmapped_absolute_paths, allowed_absolute_paths, \
             deny_file_reading_filters, denied_options"
        );
        assert_eq!(
            error_line("\"a\\nb\": 1\n"),
            "c.yaml:1:1: unknown key 'a\\nb'; expected one of: port, log_format, janitor, max_connections, \
             allowed_metrics_ips, max_body_bytes, enabled, names, argument_policy"
        );
    }

    #[test]
    fn wrong_types_name_the_expected_type() {
        let cases = [
            (
                "janitor:\n  interval: soon\n",
                "c.yaml:2:3: janitor.interval: expected a duration (seconds, or a string such as \"10s\")",
            ),
            ("janitor: 3\n", "c.yaml:1:1: janitor: expected a mapping"),
            ("names: a\n", "c.yaml:1:1: names: expected a list"),
            (
                "names: [a, {b: 1}]\n",
                "c.yaml:1:12: names[1]: expected a string",
            ),
            (
                "enabled: maybe\n",
                "c.yaml:1:1: enabled: expected a boolean (true or false)",
            ),
            ("port: x\n", "c.yaml:1:1: port: expected an integer"),
            ("port: 1.5\n", "c.yaml:1:1: port: expected an integer"),
            (
                "max_body_bytes: 1KB\n",
                "c.yaml:1:1: max_body_bytes: expected a size (bytes, or a string such as \"64KiB\")",
            ),
            (
                "janitor:\n  worker_threshold_factor: .nan\n",
                "c.yaml:2:3: janitor.worker_threshold_factor: expected a finite number",
            ),
            (
                "log_format: xml\n",
                "c.yaml:1:1: log_format: expected one of text, json, got 'xml'",
            ),
            (
                "allowed_metrics_ips: [10.0.0.0/8, 10.0.0.1/8]\n",
                "c.yaml:1:35: allowed_metrics_ips[1]: invalid network '10.0.0.1/8': host bits set; did you mean 10.0.0.0/8?",
            ),
            (
                "argument_policy:\n  denied_options: [dump_attachment]\n",
                "c.yaml:2:20: argument_policy.denied_options[0]: expected an option name such as \"-dump_attachment\", got 'dump_attachment'",
            ),
            (
                "argument_policy:\n  allowed_absolute_paths: [dev/dri]\n",
                "c.yaml:2:28: argument_policy.allowed_absolute_paths[0]: expected an absolute path prefix such as \"/dev/dri/\", got 'dev/dri'",
            ),
        ];
        for (text, line) in cases {
            assert_eq!(error_line(text), line, "{text:?}");
        }
    }

    #[test]
    fn ranges_are_checked_while_parsing() {
        let cases = [
            (
                "max_connections: 4\n",
                "c.yaml:1:1: max_connections: must be between 16 and 1000000, got 4",
            ),
            (
                "port: 70000\n",
                "c.yaml:1:1: port: must be between 0 and 65535, got 70000",
            ),
            (
                "port: -1\n",
                "c.yaml:1:1: port: must be between 0 and 65535, got -1",
            ),
            (
                "janitor:\n  interval: 500ms\n",
                "c.yaml:2:3: janitor.interval: must be at least 1s, got 500ms",
            ),
            (
                "janitor:\n  worker_threshold_factor: 0.5\n",
                "c.yaml:2:3: janitor.worker_threshold_factor: must be at least 1, got 0.5",
            ),
            (
                "max_body_bytes: 128MiB\n",
                "c.yaml:1:1: max_body_bytes: must be between 64KiB and 64MiB, got 128MiB",
            ),
        ];
        for (text, line) in cases {
            assert_eq!(error_line(text), line, "{text:?}");
        }
    }

    #[test]
    fn syntax_duplicates_and_shape() {
        assert_eq!(
            error_line("- a\n"),
            "c.yaml:1:1: expected a mapping of settings"
        );
        assert_eq!(
            error_line("just text\n"),
            "c.yaml:1:1: expected a mapping of settings"
        );
        assert_eq!(
            error_line("\n\n- a\n"),
            "c.yaml:1:1: expected a mapping of settings"
        );
        assert_eq!(
            error_line("janitor:\n  interval: 1\n  interval: 2\n"),
            "c.yaml:3:3: duplicate key 'janitor.interval'"
        );
        assert_eq!(
            error_line("port: 1\nport: 2\n"),
            "c.yaml:2:1: duplicate key 'port'"
        );
        assert_eq!(
            error_line("janitor: {interval: 3, interval: 4}\n"),
            "c.yaml:1:24: duplicate key 'janitor.interval'"
        );
        assert_eq!(
            error_line("port: [\n"),
            "c.yaml:1:7: invalid YAML: unclosed bracket '['"
        );
        assert_eq!(
            error_line("a: b: c\n"),
            "c.yaml:1:5: invalid YAML: mapping values are not allowed in this context"
        );
        assert_eq!(
            error_line("port: 1\n---\nport: 2\n"),
            "c.yaml:3:1: invalid YAML: more than one document in the file"
        );
        assert_eq!(
            error_line("port: *nope\n"),
            "c.yaml:1:7: invalid YAML: reference to unknown value"
        );
        assert_eq!(
            error_line("? [a]\n: 1\n"),
            "c.yaml:1:3: mapping keys must be plain scalars"
        );
        // Syntax errors win over unknown keys that come first.
        assert_eq!(
            error_line("unknown: 1\nport: [\n"),
            "c.yaml:2:7: invalid YAML: unclosed bracket '['"
        );
    }

    #[test]
    fn alias_bombs_are_refused_in_one_line() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..12 {
            let prev = level - 1;
            text.push_str(&format!(
                "a{level}: &a{level} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let line = error_line(&text);
        assert!(line.starts_with("c.yaml:"), "{line}");
        assert!(line.contains(": invalid YAML: "), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn upstream_keys() {
        let parsed = parse_settings("handshake_delay_seconds: {any: [thing]}\nport: 1\n").unwrap();
        assert_eq!(
            parsed.warnings,
            vec!["handshake_delay_seconds: has no effect".to_owned()]
        );
        assert_eq!(parsed.value.port, 1);
        assert_eq!(
            error_line("database:\n  defaults: {}\n"),
            "c.yaml:2:3: database.defaults: not supported; set database.path"
        );
        assert_eq!(
            error_line("auth:\n  encryption_keys: [k]\n"),
            "c.yaml:2:3: auth.encryption_keys: replaced by encryption.keys_file"
        );
        assert_eq!(
            error_line("coordinator:\n  auth:\n    encryption_keys: [k]\n"),
            "c.yaml:3:5: coordinator.auth.encryption_keys: replaced by encryption.keys_file"
        );
    }

    #[test]
    fn load_yaml_without_upstream_keys() {
        let settings: Settings = load_yaml("c.yaml", "port: 9\n").unwrap();
        assert_eq!(settings.port, 9);
        assert_eq!(
            load_yaml::<Settings>("c.yaml", "handshake_delay_seconds: 1\n")
                .unwrap()
                .port,
            8000,
            "a field of type Ignored accepts the key even when it is not declared"
        );
    }

    fn yamlish() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("port".to_owned()),
            Just("janitor".to_owned()),
            Just("interval".to_owned()),
            Just("allowed_metrics_ips".to_owned()),
            Just("argument_policy".to_owned()),
            Just("denied_options".to_owned()),
            Just(": ".to_owned()),
            Just("\n".to_owned()),
            Just("\n  ".to_owned()),
            Just("- ".to_owned()),
            Just("[".to_owned()),
            Just("]".to_owned()),
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just(", ".to_owned()),
            Just("&a ".to_owned()),
            Just("*a".to_owned()),
            Just("<<: ".to_owned()),
            Just("!!str ".to_owned()),
            Just("'".to_owned()),
            Just("\"".to_owned()),
            Just("10s".to_owned()),
            Just("1e999".to_owned()),
            Just("-1".to_owned()),
            Just("10.0.0.1/8".to_owned()),
            Just("---\n".to_owned()),
            Just("? ".to_owned()),
            Just("~".to_owned()),
            "[ -~]{0,6}",
        ];
        proptest::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat())
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics_and_errors_are_one_line(text in "\\PC{0,200}") {
            if let Err(err) = parse_settings(&text) {
                prop_assert!(!err.to_string().contains('\n'));
            }
        }

        #[test]
        fn yaml_like_text_never_panics_and_errors_are_one_line(text in yamlish()) {
            if let Err(err) = parse_settings(&text) {
                let line = err.to_string();
                prop_assert!(!line.contains('\n'), "{}", line);
                prop_assert!(line.starts_with("c.yaml"), "{}", line);
            }
        }
    }
}
