//! Wire time formats: RFC 3339 UTC with microseconds and `Z` (api.md §1), and Unix milliseconds (`time_ms` of the
//! worker protocol).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// `2026-11-24T18:24:07.490073Z`.
pub fn format_rfc3339(value: OffsetDateTime) -> String {
    let utc = value.to_offset(time::UtcOffset::UTC);
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    utc.format(&format)
        .unwrap_or_else(|_| utc.unix_timestamp().to_string())
}

/// Any RFC 3339 time.
pub fn parse_rfc3339(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// Unix milliseconds, saturating.
pub fn to_unix_ms(value: OffsetDateTime) -> i64 {
    i64::try_from(value.unix_timestamp_nanos() / 1_000_000).unwrap_or(if value.year() < 1970 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// The time of a Unix millisecond count, or `None` outside the representable range.
pub fn from_unix_ms(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

/// `#[serde(with = "rfc3339")]` for `OffsetDateTime`.
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(
        value: &OffsetDateTime,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_rfc3339(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_rfc3339(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid RFC 3339 time '{text}'")))
    }

    /// `#[serde(with = "rfc3339::option")]` for `Option<OffsetDateTime>`.
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};
        use time::OffsetDateTime;

        pub fn serialize<S: Serializer>(
            value: &Option<OffsetDateTime>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(value) => serializer.serialize_str(&super::super::format_rfc3339(*value)),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<OffsetDateTime>, D::Error> {
            let text = Option::<String>::deserialize(deserializer)?;
            text.map(|text| {
                super::super::parse_rfc3339(&text).ok_or_else(|| {
                    serde::de::Error::custom(format!("invalid RFC 3339 time '{text}'"))
                })
            })
            .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_with_microseconds_and_z() {
        let value = datetime!(2026-11-24 18:24:07.490073 UTC);
        assert_eq!(format_rfc3339(value), "2026-11-24T18:24:07.490073Z");
        assert_eq!(
            format_rfc3339(datetime!(2026-11-24 18:24:07 UTC)),
            "2026-11-24T18:24:07.000000Z"
        );
        assert_eq!(parse_rfc3339("2026-11-24T18:24:07.490073Z"), Some(value));
        assert_eq!(
            from_unix_ms(to_unix_ms(value)),
            Some(datetime!(2026-11-24 18:24:07.490 UTC))
        );
    }
}
