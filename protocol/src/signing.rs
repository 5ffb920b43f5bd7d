//! HMAC-SHA256 request signing, wire-compatible with upstream dffmpeg 0.4 (auth.md §2.2), plus the nonce extension
//! (auth.md §2.3). Pure functions: callers supply the clock reading and the random nonce source.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

pub const HEADER_CLIENT_ID: &str = "x-dffmpeg-client-id";
pub const HEADER_TIMESTAMP: &str = "x-dffmpeg-timestamp";
pub const HEADER_SIGNATURE: &str = "x-dffmpeg-signature";
pub const HEADER_NONCE: &str = "x-dffmpeg-nonce";
/// Every `x-dffmpeg-*` header the coordinator looks at.
pub const AUTH_HEADERS: [&str; 4] = [
    HEADER_CLIENT_ID,
    HEADER_TIMESTAMP,
    HEADER_SIGNATURE,
    HEADER_NONCE,
];

/// SHA-256 of the empty body, in lowercase hex.
pub const EMPTY_BODY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// A 32-byte HMAC key. Its `Debug` never shows the bytes, and the bytes are wiped on drop (auth.md §6.5).
#[derive(Clone, PartialEq, Eq)]
pub struct HmacKey([u8; 32]);

/// Why a key string is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected standard base64 of exactly 32 bytes (44 characters ending in '=')")]
pub struct KeyFormatError;

impl HmacKey {
    pub fn from_bytes(bytes: [u8; 32]) -> HmacKey {
        HmacKey(bytes)
    }

    /// 32 bytes from the operating system's CSPRNG.
    pub fn generate() -> HmacKey {
        HmacKey(rand::random::<[u8; 32]>())
    }

    /// Strict standard base64 with padding that decodes to exactly 32 bytes (auth.md §6.1).
    pub fn parse(text: &str) -> Result<HmacKey, KeyFormatError> {
        if text.len() != 44 {
            return Err(KeyFormatError);
        }
        let bytes = STANDARD.decode(text).map_err(|_| KeyFormatError)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyFormatError)?;
        Ok(HmacKey(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key in the format `dffmpeg-admin` prints: 44 characters of standard base64.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        <HmacSha256 as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length")
    }
}

impl Drop for HmacKey {
    fn drop(&mut self) {
        self.0 = [0; 32];
        // Keeps the optimiser from dropping the wipe as a dead store.
        std::hint::black_box(&self.0);
    }
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacKey(<redacted>)")
    }
}

/// Lowercase hex SHA-256 of `body`.
pub fn body_sha256_hex(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let mut out = String::with_capacity(64);
    for byte in digest.iter() {
        out.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(byte & 0x0F), 16).unwrap_or('0'));
    }
    out
}

/// The nonce extension's extra parts: the raw query string (without `?`) and the nonce header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonceParts<'a> {
    pub query: &'a str,
    pub nonce: &'a str,
}

/// The signed text: `METHOD|path|timestamp|sha256hex(body)`, plus `|query|nonce` with the nonce extension.
pub fn canonical_string(
    method: &str,
    path: &str,
    timestamp: &str,
    body: &[u8],
    extension: Option<NonceParts<'_>>,
) -> String {
    let mut text = format!(
        "{}|{}|{}|{}",
        method.to_ascii_uppercase(),
        path,
        timestamp,
        body_sha256_hex(body)
    );
    if let Some(NonceParts { query, nonce }) = extension {
        text.push('|');
        text.push_str(query);
        text.push('|');
        text.push_str(nonce);
    }
    text
}

/// The standard-base64 signature of a canonical string.
pub fn sign(key: &HmacKey, canonical: &str) -> String {
    let mut mac = key.mac();
    mac.update(canonical.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Decodes an `x-dffmpeg-signature` value: 44 characters of padded standard base64 decoding to 32 bytes.
pub fn decode_signature(text: &str) -> Option<[u8; 32]> {
    if text.len() != 44 {
        return None;
    }
    STANDARD.decode(text).ok()?.try_into().ok()
}

/// Constant-time check of a decoded signature against a canonical string.
pub fn verify(key: &HmacKey, canonical: &str, signature: &[u8; 32]) -> bool {
    let mut mac = key.mac();
    mac.update(canonical.as_bytes());
    mac.verify_slice(signature).is_ok()
}

/// `x-dffmpeg-timestamp` must match `-?[0-9]{1,19}` and fit in i64 (auth.md §3 step 5).
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<i64>().ok()
}

/// A nonce is 16–64 characters `[A-Za-z0-9_-]` (auth.md §2.1).
pub fn nonce_is_valid(text: &str) -> bool {
    (16..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A fresh nonce: 16 random bytes, base64url without padding (22 characters).
pub fn new_nonce() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

/// The header values of one signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub client_id: String,
    pub timestamp: String,
    pub signature: String,
    pub nonce: Option<String>,
}

impl SignedHeaders {
    /// `(name, value)` pairs ready to put on a request.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            (HEADER_CLIENT_ID, self.client_id.clone()),
            (HEADER_TIMESTAMP, self.timestamp.clone()),
            (HEADER_SIGNATURE, self.signature.clone()),
        ];
        if let Some(nonce) = &self.nonce {
            pairs.push((HEADER_NONCE, nonce.clone()));
        }
        pairs
    }
}

/// One request to sign. `nonce: None` signs as upstream's clients do (the query is then not signed).
#[derive(Debug, Clone, Copy)]
pub struct RequestToSign<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub body: &'a [u8],
    pub timestamp: i64,
    pub nonce: Option<&'a str>,
}

/// Signs a request for `client_id` with `key`.
pub fn sign_request(client_id: &str, key: &HmacKey, request: RequestToSign<'_>) -> SignedHeaders {
    let timestamp = request.timestamp.to_string();
    let extension = request.nonce.map(|nonce| NonceParts {
        query: request.query,
        nonce,
    });
    let canonical = canonical_string(
        request.method,
        request.path,
        &timestamp,
        request.body,
        extension,
    );
    SignedHeaders {
        client_id: client_id.to_owned(),
        timestamp,
        signature: sign(key, &canonical),
        nonce: request.nonce.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "qHdOvnF4mlz6TSStMCoY6KvEpDQGpcteNU2LMGInyuY=";
    const KEY_B: &str = "agU939Kjy2TA/QuqjyZ0lHrjWrYGxB+pEb3LZUfqK5Y=";

    fn check(key: &str, canonical: &str, signature: &str) {
        let key = HmacKey::parse(key).unwrap();
        assert_eq!(sign(&key, canonical), signature, "signing {canonical}");
        let decoded = decode_signature(signature).unwrap();
        assert!(verify(&key, canonical, &decoded), "verifying {canonical}");
        let mut tampered = decoded;
        tampered[0] ^= 1;
        assert!(!verify(&key, canonical, &tampered));
    }

    #[test]
    fn vector_1_upstream_get_jobs_query_unsigned() {
        let canonical = canonical_string("GET", "/jobs", "1795544691", b"", None);
        assert_eq!(
            canonical,
            format!("GET|/jobs|1795544691|{EMPTY_BODY_SHA256}")
        );
        check(
            KEY_A,
            &canonical,
            "Ttx4hPrkP8olkV3zswH7I3nuHCsOEBmbf88oX5+rMN4=",
        );
    }

    #[test]
    fn vector_2_upstream_worker_deregister() {
        let body = br#"{"worker_id": "worker01"}"#;
        assert_eq!(
            body_sha256_hex(body),
            "ade17e6e36930f89fd679c37be49fa8fc44bf88c3d293ee020a2b72fa95728a3"
        );
        let canonical = canonical_string("POST", "/worker/deregister", "1795544728", body, None);
        check(
            KEY_B,
            &canonical,
            "2tNLx5SiREEHvrgkUfVBUnZMVHVh+w81ACGNJThtWtY=",
        );
    }

    #[test]
    fn vector_3_upstream_accept() {
        let canonical = canonical_string(
            "POST",
            "/jobs/01M87CT1T2MJA6V3QFZGED6NHR/accept",
            "1795544647",
            b"",
            None,
        );
        check(
            KEY_B,
            &canonical,
            "/ssGcj6ASIE0faleHB+AI7OZDIhz5o4l6geLOoHAQDE=",
        );
    }

    #[test]
    fn vector_4_submit_with_python_json_spacing() {
        let body = br#"{"binary_name": "ffprobe", "arguments": ["-v", "error", "-show_format", "$Media/in.mp4"], "paths": ["Media"], "working_directory": "$Media", "supported_transports": ["http_polling"], "monitor": true, "heartbeat_interval": null}"#;
        assert_eq!(
            body_sha256_hex(body),
            "52bd93fd1630bf92e89b05119253c424aee1fa00e2e793b3a0acee380b76c148"
        );
        let canonical = canonical_string("POST", "/jobs/submit", "1795544728", body, None);
        check(
            KEY_A,
            &canonical,
            "KEK3QCnD06z/xy2hmOEcUOCCLg9zV1wsElqHrJ3ZOVI=",
        );
        let key = HmacKey::parse(KEY_A).unwrap();
        let headers = sign_request(
            "client01",
            &key,
            RequestToSign {
                method: "POST",
                path: "/jobs/submit",
                query: "",
                body,
                timestamp: 1795544728,
                nonce: None,
            },
        );
        assert_eq!(
            headers.signature,
            "KEK3QCnD06z/xy2hmOEcUOCCLg9zV1wsElqHrJ3ZOVI="
        );
        assert_eq!(headers.timestamp, "1795544728");
    }

    #[test]
    fn vector_5_nonce_extension_signs_the_query() {
        let extension = NonceParts {
            query: "window=600",
            nonce: "3q2-7wAAAAB8Zx1bWfN0kA",
        };
        let canonical = canonical_string("GET", "/jobs", "1795544691", b"", Some(extension));
        assert_eq!(
            canonical,
            format!("GET|/jobs|1795544691|{EMPTY_BODY_SHA256}|window=600|3q2-7wAAAAB8Zx1bWfN0kA")
        );
        check(
            KEY_A,
            &canonical,
            "ZkhT9ZJFEc0Jo7Hs1OQ0x5iOin0psjY7gUYqE0W/rOE=",
        );
    }

    #[test]
    fn vector_6_worker_upgrade_without_query() {
        let extension = NonceParts {
            query: "",
            nonce: "3q2-7wAAAAB8Zx1bWfN0kA",
        };
        let canonical = canonical_string("GET", "/worker/ws", "1795544700", b"", Some(extension));
        check(
            KEY_B,
            &canonical,
            "ugvv55eI2MJALazEog6DgA/iUAxbzhDtYD2ePhJup6Y=",
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1795544728"), Some(1795544728));
        assert_eq!(parse_timestamp("-5"), Some(-5));
        assert_eq!(parse_timestamp("9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_timestamp("9223372036854775808"), None);
        assert_eq!(parse_timestamp("+5"), None);
        assert_eq!(parse_timestamp(" 5"), None);
        assert_eq!(parse_timestamp("5.0"), None);
        assert_eq!(parse_timestamp("1e9"), None);
        assert_eq!(parse_timestamp(""), None);
        assert_eq!(parse_timestamp("-"), None);
        assert_eq!(parse_timestamp("12345678901234567890"), None);
    }

    #[test]
    fn keys_nonces_and_signatures() {
        assert!(HmacKey::parse(KEY_A).is_ok());
        assert_eq!(
            HmacKey::parse("qHdOvnF4mlz6TSStMCoY6KvEpDQGpcteNU2LMGInyuY"),
            Err(KeyFormatError)
        );
        assert_eq!(
            HmacKey::parse("qHdOvnF4mlz6TSStMCoY6KvEpDQGpcteNU2LMGInyu-="),
            Err(KeyFormatError)
        );
        let generated = HmacKey::generate();
        assert_eq!(HmacKey::parse(&generated.to_base64()).unwrap(), generated);
        assert_eq!(format!("{generated:?}"), "HmacKey(<redacted>)");
        let nonce = new_nonce();
        assert_eq!(nonce.len(), 22);
        assert!(nonce_is_valid(&nonce));
        assert!(!nonce_is_valid("short"));
        assert!(!nonce_is_valid("has space in it here"));
        assert!(decode_signature("Ttx4hPrkP8olkV3zswH7I3nuHCsOEBmbf88oX5+rMN4=").is_some());
        assert!(decode_signature("Ttx4hPrkP8olkV3zswH7I3nuHCsOEBmbf88oX5+rMN4").is_none());
        assert!(decode_signature("not base64 at all, but forty-four chars....").is_none());
    }
}
