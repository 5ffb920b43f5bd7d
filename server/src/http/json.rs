//! JSON request bodies from the verified bytes (limits-and-bad-input.md §3.2): the content type, then syntax
//! (`422 malformed_json` with line and column), then shape (`422 invalid_body` with the field path, in serde's
//! wording with JSON words for types).

use axum::http::{HeaderMap, header};
use serde::Deserialize as _;
use serde::de::DeserializeOwned;

use protocol::ErrorCode;

use crate::error::ApiError;

/// `application/json` (parameters ignored), `application/*+json`, or no `Content-Type` at all.
pub(crate) fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("");
    let media = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let ok = media == "application/json"
        || (media.starts_with("application/") && media.ends_with("+json"));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "Unsupported Content-Type '{}'; send application/json",
                text.trim()
            ),
        ))
    }
}

/// Serde's wording with JSON words for types and `'…'` for backticks.
pub(crate) fn json_words(message: &str) -> String {
    let mut text = message.to_owned();
    for (from, to) in [
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected an object"),
        ("expected i64", "expected an integer"),
        ("expected i32", "expected an integer"),
        ("expected u64", "expected an integer"),
        ("expected u32", "expected an integer"),
        ("expected a string", "expected a string"),
        ("expected a boolean", "expected a boolean"),
        ("invalid type: sequence", "invalid type: array"),
        ("invalid type: map", "invalid type: object"),
        ("invalid type: unit value", "invalid type: null"),
    ] {
        text = text.replace(from, to);
    }
    if let Some(start) = text.find("expected struct ") {
        text.replace_range(start.., "expected an object");
    }
    // `unknown field `x`, expected one of …` → `unknown field 'x'`
    if text.starts_with("unknown field")
        && let Some(end) = text.find(", expected")
    {
        text.truncate(end);
    }
    if text.starts_with("unknown variant")
        && let Some(end) = text.find(", expected")
    {
        let expected = text[end + 2..].to_owned();
        text.truncate(end);
        text.push_str(", ");
        text.push_str(&expected);
    }
    text.replace('`', "'")
}

/// Parses `body` as `T`, with the errors of limits-and-bad-input.md §3.2.
pub(crate) fn parse<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, ApiError> {
    check_content_type(headers)?;
    let malformed = |line: usize, column: usize, reason: &str| {
        ApiError::new(
            ErrorCode::MalformedJson,
            format!("Malformed JSON at line {line} column {column}: {reason}"),
        )
    };
    let text = std::str::from_utf8(body).map_err(|err| {
        let before = &body[..err.valid_up_to()];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
        malformed(line, column, "invalid UTF-8")
    })?;
    if text.starts_with('\u{feff}') {
        return Err(malformed(1, 1, "byte-order mark"));
    }
    // Syntax first, over the whole document (nesting over 128 included), so a syntax error is never reported
    // as a shape error of an earlier field; the typed pass below then only meets shape errors.
    let mut syntax = serde_json::Deserializer::from_str(text);
    if let Err(err) = serde_json::Value::deserialize(&mut syntax).and_then(|_| syntax.end()) {
        return Err(malformed(err.line(), err.column(), &without_position(&err)));
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let message = json_words(&without_position(err.inner()));
        // An unknown field is reported at the object that holds it, not at the field itself.
        let path = match (message.starts_with("unknown field"), path.rfind('.')) {
            (true, Some(idx)) => path[..idx].to_owned(),
            (true, None) => String::new(),
            (false, _) => path,
        };
        if path == "." || path.is_empty() {
            ApiError::new(ErrorCode::InvalidBody, message)
        } else {
            ApiError::new(ErrorCode::InvalidBody, format!("{path}: {message}"))
        }
    })
}

/// serde_json's message without its ` at line L column C` suffix.
fn without_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    text.split(" at line ").next().unwrap_or(&text).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::rest::JobRequest;

    fn detail(body: &str) -> (ErrorCode, String) {
        let err = parse::<JobRequest>(&HeaderMap::new(), body.as_bytes()).unwrap_err();
        (err.code, err.detail)
    }

    #[test]
    fn shapes_and_syntax() {
        assert_eq!(
            detail(r#"{"binary_name":"ffmpeg","arguments":"x"}"#),
            (
                ErrorCode::InvalidBody,
                "arguments: invalid type: string \"x\", expected an array".into()
            )
        );
        assert_eq!(
            detail(r#"{"binary_name":"ffmpeg","arguments":["a", 3]}"#),
            (
                ErrorCode::InvalidBody,
                "arguments[1]: invalid type: integer `3`, expected a string".replace('`', "'")
            )
        );
        assert_eq!(
            detail(r#"{"binary_name":"ffmpeg","x":1}"#),
            (ErrorCode::InvalidBody, "unknown field 'x'".into())
        );
        assert_eq!(
            detail(r#"{"arguments":[]}"#),
            (ErrorCode::InvalidBody, "missing field 'binary_name'".into())
        );
        assert_eq!(
            detail(r#"{"binary_name":"a","arguments":[],"arguments":[]}"#),
            (ErrorCode::InvalidBody, "duplicate field 'arguments'".into())
        );
        assert_eq!(detail("[1]").0, ErrorCode::InvalidBody);
        assert_eq!(
            detail(r#"{"binary_name":"ffmpeg","priority":1.5}"#).0,
            ErrorCode::InvalidBody
        );
        assert_eq!(
            detail(r#"{"binary_name":"ffmpeg","monitor":"yes"}"#).0,
            ErrorCode::InvalidBody
        );
        let (code, text) = detail(r#"{"binary_name": "ffmpeg""#);
        assert_eq!(code, ErrorCode::MalformedJson);
        assert!(
            text.starts_with("Malformed JSON at line 1 column "),
            "{text}"
        );
        assert_eq!(detail("").0, ErrorCode::MalformedJson);
        assert_eq!(
            detail(r#"{"binary_name":"ffmpeg"} x"#).0,
            ErrorCode::MalformedJson
        );
        assert_eq!(detail("\u{feff}{}").0, ErrorCode::MalformedJson);
        assert_eq!(
            detail(r#"{"binary_name":"\ud800"}"#).0,
            ErrorCode::MalformedJson
        );
        assert_eq!(
            detail(&format!("{}1{}", "[".repeat(200), "]".repeat(200))).0,
            ErrorCode::MalformedJson
        );
        let err =
            parse::<JobRequest>(&HeaderMap::new(), b"{\"binary_name\":\"\xff\"}").unwrap_err();
        assert_eq!(err.code, ErrorCode::MalformedJson);
    }

    #[test]
    fn content_types() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(check_content_type(&headers).is_ok());
        headers.insert(
            header::CONTENT_TYPE,
            "Application/Problem+JSON".parse().unwrap(),
        );
        assert!(check_content_type(&headers).is_ok());
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert_eq!(
            check_content_type(&headers).unwrap_err().detail,
            "Unsupported Content-Type 'text/plain'; send application/json"
        );
    }
}
