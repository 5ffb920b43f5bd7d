//! Query strings and path segments as the client sends them. Values are percent-encoded here, once, so the string
//! that is signed (auth.md §2.3) is byte for byte the string on the wire. Also the percent-decoding of the path that
//! the canonical string uses (auth.md §2.2).

use std::fmt::Write as _;

/// Builds `a=1&b=x%20y` in the order the pairs are added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryString {
    text: String,
}

impl QueryString {
    /// An empty query.
    pub fn new() -> QueryString {
        QueryString::default()
    }

    /// Appends `name=value`, percent-encoding the value.
    pub fn push(&mut self, name: &str, value: impl AsRef<str>) -> &mut QueryString {
        if !self.text.is_empty() {
            self.text.push('&');
        }
        self.text.push_str(&encode_component(name));
        self.text.push('=');
        self.text.push_str(&encode_component(value.as_ref()));
        self
    }

    /// Appends `name=value` when the value is present.
    pub fn push_opt<V: ToString>(&mut self, name: &str, value: Option<V>) -> &mut QueryString {
        if let Some(value) = value {
            self.push(name, value.to_string());
        }
        self
    }

    /// The query without the leading `?` (empty when no pair was added).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `path?query`, or `path` alone for an empty query.
    pub fn append_to(&self, path: &str) -> String {
        if self.text.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", self.text)
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters and `,` (the list separator of `status` and
/// `types`, left readable).
pub fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b',') {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Percent-encodes one path segment (a worker id in `/workers/{id}`), so `/` and `?` inside it stay data.
pub fn encode_path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Decodes `%XX` sequences; a `%` not followed by two hex digits stays as it is. Invalid UTF-8 after decoding is
/// replaced with U+FFFD.
pub fn percent_decode(text: &str) -> String {
    fn hex(byte: u8) -> Option<u8> {
        char::from(byte)
            .to_digit(16)
            .and_then(|digit| u8::try_from(digit).ok())
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut idx = 0;
    while idx < bytes.len() {
        if bytes[idx] == b'%'
            && let (Some(high), Some(low)) = (
                bytes.get(idx + 1).copied().and_then(hex),
                bytes.get(idx + 2).copied().and_then(hex),
            )
        {
            out.push(high << 4 | low);
            idx += 3;
            continue;
        }
        out.push(bytes[idx]);
        idx += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_in_order_and_encodes_values() {
        let mut query = QueryString::new();
        query
            .push("window", "600")
            .push("status", "running,failed")
            .push("k", "a b&c=d/é");
        query
            .push_opt("since_id", None::<u32>)
            .push_opt("limit", Some(5));
        assert_eq!(
            query.as_str(),
            "window=600&status=running,failed&k=a%20b%26c%3Dd%2F%C3%A9&limit=5"
        );
        assert_eq!(
            query.append_to("/jobs"),
            format!("/jobs?{}", query.as_str())
        );
        assert_eq!(QueryString::new().append_to("/jobs"), "/jobs");
    }

    #[test]
    fn path_segments_keep_identity_characters() {
        assert_eq!(
            encode_path_segment("worker.01@host-a_b"),
            "worker.01@host-a_b"
        );
        assert_eq!(encode_path_segment("a/b?c d"), "a%2Fb%3Fc%20d");
    }

    #[test]
    fn decoding_is_the_inverse_and_tolerates_junk() {
        assert_eq!(percent_decode("/workers/a%2Fb%3Fc%20d"), "/workers/a/b?c d");
        assert_eq!(percent_decode("/x%C3%A9"), "/xé");
        assert_eq!(percent_decode("/100%"), "/100%");
        assert_eq!(percent_decode("/%zz%4"), "/%zz%4");
        assert_eq!(percent_decode("/%ff"), "/\u{fffd}");
    }
}
