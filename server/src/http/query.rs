//! Strict query-string parsing (limits-and-bad-input.md §2.2, §3.2): each known parameter at most once, unknown
//! names ignored, an empty cursor counts as absent, upstream's boolean spellings, and `422 invalid_query` with the
//! parameter's name for everything else.

use std::collections::HashMap;

use protocol::{EventId, JobId};

use crate::error::ApiError;

/// The decoded parameters of one request.
#[derive(Debug, Default)]
pub struct Query {
    values: HashMap<String, Vec<Option<String>>>,
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut idx = 0;
    while idx < bytes.len() {
        match bytes[idx] {
            b'%' => {
                let hex = bytes.get(idx + 1..idx + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                idx += 3;
            }
            b'+' => {
                out.push(b' ');
                idx += 1;
            }
            byte => {
                out.push(byte);
                idx += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

impl Query {
    /// Splits and decodes a raw query string. A value that does not decode is kept as `None` and refused when its
    /// parameter is read.
    pub fn parse(raw: Option<&str>) -> Query {
        let mut query = Query::default();
        for pair in raw.unwrap_or("").split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let Some(name) = percent_decode(name) else {
                continue;
            };
            query
                .values
                .entry(name)
                .or_default()
                .push(percent_decode(value));
        }
        query
    }

    /// The raw value of `name`: `None` when absent; an error when repeated or undecodable.
    pub fn raw(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.values.get(name).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([Some(value)]) => Ok(Some(value.as_str())),
            Some([None]) => Err(ApiError::invalid_query(name, "invalid percent-encoding")),
            Some(_) => Err(ApiError::invalid_query(name, "given more than once")),
        }
    }

    /// An integer parameter in `range` (a value outside i64 is refused).
    pub fn int(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<Option<i64>, ApiError> {
        let Some(raw) = self.raw(name)? else {
            return Ok(None);
        };
        let value: i64 = raw
            .trim()
            .parse()
            .map_err(|_| ApiError::invalid_query(name, "expected an integer"))?;
        if !range.contains(&value) {
            let reason = match (*range.start(), *range.end()) {
                (start, i64::MAX) => format!("must be at least {start}"),
                (start, end) => format!("must be between {start} and {end}"),
            };
            return Err(ApiError::invalid_query(name, &reason));
        }
        Ok(Some(value))
    }

    /// A boolean: `true false 1 0 yes no on off t f y n`, any case.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        let Some(raw) = self.raw(name)? else {
            return Ok(None);
        };
        match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "t" | "y" => Ok(Some(true)),
            "false" | "0" | "no" | "off" | "f" | "n" => Ok(Some(false)),
            _ => Err(ApiError::invalid_query(name, "expected a boolean")),
        }
    }

    /// A cursor (event id); empty counts as absent, malformed is `400 invalid_cursor` with `detail`.
    pub fn event_cursor(&self, name: &str, detail: &str) -> Result<Option<EventId>, ApiError> {
        match self.raw(name)? {
            None | Some("") => Ok(None),
            Some(raw) => EventId::parse(raw)
                .map(Some)
                .map_err(|_| ApiError::new(protocol::ErrorCode::InvalidCursor, detail)),
        }
    }

    /// A job-id cursor (`since_id`).
    pub fn job_cursor(&self, name: &str, detail: &str) -> Result<Option<JobId>, ApiError> {
        match self.raw(name)? {
            None | Some("") => Ok(None),
            Some(raw) => JobId::parse(raw)
                .map(Some)
                .map_err(|_| ApiError::new(protocol::ErrorCode::InvalidCursor, detail)),
        }
    }

    /// A comma-separated list whose items must each parse; an empty item is refused.
    pub fn list<T>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<Vec<T>>, ApiError> {
        let Some(raw) = self.raw(name)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for item in raw.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(ApiError::invalid_query(name, "empty item"));
            }
            match parse(item) {
                Some(value) => out.push(value),
                None => {
                    return Err(ApiError::invalid_query(
                        name,
                        &format!("unknown value '{item}'"),
                    ));
                }
            }
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_undecodable_values_and_ranges_are_refused() {
        let query = Query::parse(Some(
            "wait=1&wait=2&x=%zz&window=-1&big=9223372036854775808&b=YES&since_id=",
        ));
        assert_eq!(
            query.raw("wait").unwrap_err().detail,
            "Invalid query parameter 'wait': given more than once"
        );
        assert!(query.raw("x").is_err());
        assert!(query.raw("unknown").unwrap().is_none());
        assert_eq!(
            query.int("window", 0..=i64::MAX).unwrap_err().detail,
            "Invalid query parameter 'window': must be at least 0"
        );
        assert!(query.int("big", i64::MIN..=i64::MAX).is_err());
        assert_eq!(query.bool("b").unwrap(), Some(true));
        assert_eq!(
            query.job_cursor("since_id", "Invalid since_id").unwrap(),
            None
        );
    }

    #[test]
    fn lists_refuse_empty_and_unknown_items() {
        let query = Query::parse(Some(
            "status=pending,running&bad=pending,,x&types=status%2Coutput",
        ));
        let parse = |text: &str| text.parse::<protocol::rest::JobStatus>().ok();
        assert_eq!(query.list("status", parse).unwrap().unwrap().len(), 2);
        assert!(query.list("bad", parse).is_err());
        assert_eq!(
            query
                .list("types", |t| Some(t.to_owned()))
                .unwrap()
                .unwrap(),
            vec!["status", "output"]
        );
    }
}
