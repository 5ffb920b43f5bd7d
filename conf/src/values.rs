//! Typed configuration values (config.md §1): durations, byte sizes, IP networks, ranged integers and numbers, and
//! a placeholder for accepted-but-ignored keys. Each comes as a parser, a newtype with `Deserialize` and `Display`,
//! and `deserialize_with` helpers so a program's tree can hold plain `std::time::Duration`, `u64` and `IpNet`.
//!
//! Range violations are reported while parsing, with the messages of limits-and-bad-input.md §6
//! (`must be between 16 and 1000000, got 4`); the key and its position are added by `yaml`.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, Visitor};

use crate::error::shown;

const DURATION_EXPECTED: &str = "a duration (seconds, or a string such as \"10s\")";
const SIZE_EXPECTED: &str = "a size (bytes, or a string such as \"64KiB\")";
const NETWORK_EXPECTED: &str = "an IP address or a CIDR network such as \"10.0.0.0/8\"";

const NANOS_PER_SEC: u128 = 1_000_000_000;
/// Duration units, largest first: suffix and length in nanoseconds.
const DURATION_UNITS: [(&str, u128); 5] = [
    ("d", 86_400 * NANOS_PER_SEC),
    ("h", 3_600 * NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("s", NANOS_PER_SEC),
    ("ms", 1_000_000),
];
/// Size units, largest first.
const SIZE_UNITS: [(&str, u64); 5] = [
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("B", 1),
];

fn duration_error() -> String {
    format!("expected {DURATION_EXPECTED}")
}

fn size_error() -> String {
    format!("expected {SIZE_EXPECTED}")
}

/// Parses a duration: a number of seconds (fractions allowed) or a number with a unit `ms`, `s`, `m`, `h`, `d`
/// (`500ms`, `10s`, `1.5h`, `7d`). Exact to the nanosecond; negative values are refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let number_len = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_len);
    let unit_nanos = match unit.trim_start() {
        "" | "s" => NANOS_PER_SEC,
        other => DURATION_UNITS
            .iter()
            .find(|(suffix, _)| *suffix == other)
            .map(|(_, nanos)| *nanos)
            .ok_or_else(duration_error)?,
    };
    let nanos = scaled_decimal(number, unit_nanos).ok_or_else(duration_error)?;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| "duration too large".to_owned())?;
    // The remainder is below 1e9 and fits.
    let subsec = u32::try_from(nanos % NANOS_PER_SEC).map_err(|_| duration_error())?;
    Ok(Duration::new(secs, subsec))
}

/// `digits[.digits] × unit`, exactly, truncated to whole units of the result. `None` for malformed text or overflow.
fn scaled_decimal(number: &str, unit: u128) -> Option<u128> {
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole_value: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    // Digits beyond 18 are below any unit's resolution here; 10^18 × the largest unit fits in u128.
    let fraction = &fraction[..fraction.len().min(18)];
    let fraction_value: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    let scale = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
    whole_value
        .checked_mul(unit)?
        .checked_add(fraction_value.checked_mul(unit)? / scale)
}

/// Formats a duration in the largest unit that shows it exactly (`10s`, `500ms`, `7d`), else in seconds with a
/// fraction (`1.25s`).
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    for (suffix, unit) in DURATION_UNITS {
        if nanos.is_multiple_of(unit) {
            return format!("{}{suffix}", nanos / unit);
        }
    }
    let fraction = format!("{:09}", duration.subsec_nanos());
    format!("{}.{}s", duration.as_secs(), fraction.trim_end_matches('0'))
}

/// Parses a size: a number of bytes, or an integer with a unit `B`, `KiB`, `MiB`, `GiB`, `TiB` (`64KiB`, `1MiB`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let number_len = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_len);
    if number.is_empty() {
        return Err(size_error());
    }
    let multiplier = match unit.trim_start() {
        "" => 1,
        other => SIZE_UNITS
            .iter()
            .find(|(suffix, _)| *suffix == other)
            .map(|(_, bytes)| *bytes)
            .ok_or_else(size_error)?,
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|value| value.checked_mul(multiplier))
        .ok_or_else(|| "size too large".to_owned())
}

/// Formats a size in the largest binary unit that shows it exactly (`768KiB`, `1MiB`), else in bytes (`1000B`).
pub fn format_size(bytes: u64) -> String {
    for (suffix, unit) in SIZE_UNITS {
        if bytes != 0 && bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    format!("{bytes}B")
}

/// Parses an entry of an IP list: a CIDR network, or a bare address meaning `/32` or `/128`. A network with host
/// bits set is refused with a suggestion: `invalid network '10.0.0.1/8': host bits set; did you mean 10.0.0.0/8?`.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    if text.contains('/') {
        let net: IpNet = text.parse().map_err(|_| {
            format!(
                "invalid network '{}': expected {NETWORK_EXPECTED}",
                shown(text)
            )
        })?;
        if net.trunc() != net {
            return Err(format!(
                "invalid network '{}': host bits set; did you mean {}?",
                shown(text),
                net.trunc()
            ));
        }
        Ok(net)
    } else {
        let addr: IpAddr = text.parse().map_err(|_| {
            format!(
                "invalid network '{}': expected {NETWORK_EXPECTED}",
                shown(text)
            )
        })?;
        Ok(IpNet::from(addr))
    }
}

/// A configured duration (config.md §1 "durations").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TimeSpan(pub Duration);

impl fmt::Display for TimeSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for TimeSpan {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TimeSpan, D::Error> {
        deserializer.deserialize_any(DurationVisitor).map(TimeSpan)
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(DURATION_EXPECTED)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Duration, E> {
        u64::try_from(value)
            .map(Duration::from_secs)
            .map_err(|_| E::custom(duration_error()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Duration, E> {
        if !value.is_finite() || value < 0.0 {
            return Err(E::custom(duration_error()));
        }
        // Display gives the shortest text that reads back as `value`, never an exponent: `0.3`, not 0.29999….
        parse_duration(&value.to_string()).map_err(E::custom)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Duration, E> {
        parse_duration(value).map_err(E::custom)
    }
}

/// A configured byte size (config.md §1 "sizes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_size(self.0))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ByteSize, D::Error> {
        deserializer.deserialize_any(SizeVisitor).map(ByteSize)
    }
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SIZE_EXPECTED)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<u64, E> {
        Ok(value)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<u64, E> {
        u64::try_from(value).map_err(|_| E::custom(size_error()))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<u64, E> {
        parse_size(value).map_err(E::custom)
    }
}

/// An entry of an IP list (`allowed_metrics_ips`, …): a network, a bare address being a one-address network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Network(pub IpNet);

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Network, D::Error> {
        deserializer.deserialize_any(NetworkVisitor).map(Network)
    }
}

struct NetworkVisitor;

impl Visitor<'_> for NetworkVisitor {
    type Value = IpNet;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(NETWORK_EXPECTED)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<IpNet, E> {
        parse_network(value).map_err(E::custom)
    }
}

/// The value of an upstream key that is accepted and ignored ([`crate::UpstreamAction::Warn`]): a struct field
/// of this type lets `deny_unknown_fields` pass the key, whatever its value. All values are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Ignored;

impl<'de> Deserialize<'de> for Ignored {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Ignored, D::Error> {
        IgnoredAny::deserialize(deserializer).map(|_| Ignored)
    }
}

/// `deserialize_with` body for a list of strings, each checked (and possibly rewritten) by `check`, whose `Err`
/// text becomes the message; an error names the entry (`allowed_binaries[1]: …`).
pub fn checked_strings<'de, D: Deserializer<'de>>(
    deserializer: D,
    check: fn(&str) -> Result<String, String>,
) -> Result<Vec<String>, D::Error> {
    struct Entry(String);

    struct EntryVisitor(fn(&str) -> Result<String, String>);

    impl Visitor<'_> for EntryVisitor {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<String, E> {
            (self.0)(value).map_err(E::custom)
        }
    }

    struct ListVisitor(fn(&str) -> Result<String, String>);

    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of strings")
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(Entry(entry)) = seq.next_element_seed(EntrySeed(self.0))? {
                out.push(entry);
            }
            Ok(out)
        }
    }

    struct EntrySeed(fn(&str) -> Result<String, String>);

    impl<'de> de::DeserializeSeed<'de> for EntrySeed {
        type Value = Entry;

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Entry, D::Error> {
            deserializer
                .deserialize_str(EntryVisitor(self.0))
                .map(Entry)
        }
    }

    deserializer.deserialize_seq(ListVisitor(check))
}

/// Range text shared by the ranged helpers: `must be between A and B, got X` or `must be at least A, got X`.
fn out_of_range(min: &str, max: Option<&str>, got: &str) -> String {
    match max {
        Some(max) => format!("must be between {min} and {max}, got {got}"),
        None => format!("must be at least {min}, got {got}"),
    }
}

/// `deserialize_with` helpers for [`std::time::Duration`] fields.
pub mod duration {
    use super::*;

    /// Any duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        TimeSpan::deserialize(deserializer).map(|span| span.0)
    }

    /// A duration or `null`.
    pub fn option<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<TimeSpan>::deserialize(deserializer).map(|span| span.map(|span| span.0))
    }

    /// A duration from `MIN_MS` to `MAX_MS` milliseconds inclusive (`u64::MAX`: no upper bound).
    pub fn ranged<'de, D: Deserializer<'de>, const MIN_MS: u64, const MAX_MS: u64>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let value = deserialize(deserializer)?;
        let (min, max) = (Duration::from_millis(MIN_MS), Duration::from_millis(MAX_MS));
        if value < min || (MAX_MS != u64::MAX && value > max) {
            let max = (MAX_MS != u64::MAX).then(|| format_duration(max));
            return Err(de::Error::custom(out_of_range(
                &format_duration(min),
                max.as_deref(),
                &format_duration(value),
            )));
        }
        Ok(value)
    }

    /// A duration of at least `MIN_MS` milliseconds.
    pub fn at_least<'de, D: Deserializer<'de>, const MIN_MS: u64>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        ranged::<D, MIN_MS, { u64::MAX }>(deserializer)
    }

    pub use super::format_duration as format;
}

/// `deserialize_with` helpers for byte-size fields held as `u64`.
pub mod size {
    use super::*;

    /// Any size.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        ByteSize::deserialize(deserializer).map(|size| size.0)
    }

    /// A size from `MIN` to `MAX` bytes inclusive (`u64::MAX`: no upper bound).
    pub fn ranged<'de, D: Deserializer<'de>, const MIN: u64, const MAX: u64>(
        deserializer: D,
    ) -> Result<u64, D::Error> {
        let value = deserialize(deserializer)?;
        if value < MIN || value > MAX {
            let max = (MAX != u64::MAX).then(|| format_size(MAX));
            return Err(de::Error::custom(out_of_range(
                &format_size(MIN),
                max.as_deref(),
                &format_size(value),
            )));
        }
        Ok(value)
    }

    /// A size of at least `MIN` bytes.
    pub fn at_least<'de, D: Deserializer<'de>, const MIN: u64>(
        deserializer: D,
    ) -> Result<u64, D::Error> {
        ranged::<D, MIN, { u64::MAX }>(deserializer)
    }

    pub use super::format_size as format;
}

/// `deserialize_with` helpers for integers with a range, reported as `must be between 16 and 1000000, got 4`.
pub mod int {
    use super::*;

    struct IntVisitor;

    impl Visitor<'_> for IntVisitor {
        type Value = i128;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer")
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<i128, E> {
            Ok(i128::from(value))
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<i128, E> {
            Ok(i128::from(value))
        }

        fn visit_u128<E: de::Error>(self, value: u128) -> Result<i128, E> {
            i128::try_from(value).map_err(|_| E::custom("expected an integer"))
        }

        fn visit_i128<E: de::Error>(self, value: i128) -> Result<i128, E> {
            Ok(value)
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<i128, E> {
            value
                .trim()
                .parse()
                .map_err(|_| E::custom("expected an integer"))
        }
    }

    /// An integer from `MIN` to `MAX` inclusive, converted to `T` (whose range must hold `MIN..=MAX`).
    pub fn ranged<'de, D, T, const MIN: i64, const MAX: i64>(deserializer: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i128>,
    {
        let value = deserializer.deserialize_any(IntVisitor)?;
        if value < i128::from(MIN) || value > i128::from(MAX) {
            let max = (MAX != i64::MAX).then(|| MAX.to_string());
            return Err(de::Error::custom(out_of_range(
                &MIN.to_string(),
                max.as_deref(),
                &value.to_string(),
            )));
        }
        T::try_from(value).map_err(|_| {
            de::Error::custom(out_of_range(&MIN.to_string(), None, &value.to_string()))
        })
    }

    /// An integer of at least `MIN`, converted to `T`.
    pub fn at_least<'de, D, T, const MIN: i64>(deserializer: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i128>,
    {
        ranged::<D, T, MIN, { i64::MAX }>(deserializer)
    }
}

/// `deserialize_with` helpers for finite numbers (`f64`).
pub mod float {
    use super::*;

    struct FloatVisitor;

    impl Visitor<'_> for FloatVisitor {
        type Value = f64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number")
        }

        #[expect(
            clippy::cast_precision_loss,
            reason = "configuration numbers are small"
        )]
        fn visit_u64<E: de::Error>(self, value: u64) -> Result<f64, E> {
            Ok(value as f64)
        }

        #[expect(
            clippy::cast_precision_loss,
            reason = "configuration numbers are small"
        )]
        fn visit_i64<E: de::Error>(self, value: i64) -> Result<f64, E> {
            Ok(value as f64)
        }

        fn visit_f64<E: de::Error>(self, value: f64) -> Result<f64, E> {
            if value.is_finite() {
                Ok(value)
            } else {
                Err(E::custom("expected a finite number"))
            }
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<f64, E> {
            match value.trim().parse::<f64>() {
                Ok(number) if number.is_finite() => Ok(number),
                _ => Err(E::custom("expected a number")),
            }
        }
    }

    /// A finite number of at least `MIN`.
    pub fn at_least<'de, D: Deserializer<'de>, const MIN: i64>(
        deserializer: D,
    ) -> Result<f64, D::Error> {
        let value = deserializer.deserialize_any(FloatVisitor)?;
        let min = MIN as f64;
        if value < min {
            return Err(de::Error::custom(out_of_range(
                &MIN.to_string(),
                None,
                &value.to_string(),
            )));
        }
        Ok(value)
    }
}

/// `deserialize_with` helpers for IP lists held as `Vec<IpNet>`.
pub mod net {
    use super::*;

    /// One network.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<IpNet, D::Error> {
        Network::deserialize(deserializer).map(|net| net.0)
    }

    /// A list of networks; an error names the entry (`allowed_metrics_ips[1]`).
    pub fn list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
        Vec::<Network>::deserialize(deserializer)
            .map(|nets| nets.into_iter().map(|net| net.0).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations_parse_exactly() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("0.3"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration(".5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration(" 2 s "), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.0000000001"), Ok(Duration::ZERO));
        for bad in [
            "", "s", ".", "-1", "1.2.3", "10x", "1e3", "inf", "10 sec", "1 0s", "1ms5",
        ] {
            assert_eq!(parse_duration(bad), Err(duration_error()), "{bad:?}");
        }
        assert_eq!(
            parse_duration("999999999999999999999d"),
            Err("duration too large".to_owned())
        );
    }

    #[test]
    fn durations_format_in_the_largest_exact_unit() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(86_400 * 30)), "30d");
        assert_eq!(format_duration(Duration::from_micros(1_250_000)), "1250ms");
        assert_eq!(
            format_duration(Duration::from_nanos(1_000_000_500)),
            "1.0000005s"
        );
    }

    #[test]
    fn sizes_parse_and_format() {
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1 TiB"), Ok(1 << 40));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("1000B"), Ok(1000));
        for bad in ["", "KiB", "1KB", "1 kib", "1.5MiB", "-1", "1MiBx"] {
            assert_eq!(parse_size(bad), Err(size_error()), "{bad:?}");
        }
        assert_eq!(
            parse_size("99999999999TiB"),
            Err("size too large".to_owned())
        );
        assert_eq!(format_size(768 * 1024), "768KiB");
        assert_eq!(format_size(1 << 20), "1MiB");
        assert_eq!(format_size(1000), "1000B");
        assert_eq!(format_size(0), "0B");
    }

    #[test]
    fn networks() {
        assert_eq!(
            parse_network("10.0.0.0/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            parse_network("127.0.0.1").unwrap().to_string(),
            "127.0.0.1/32"
        );
        assert_eq!(parse_network("::1").unwrap().to_string(), "::1/128");
        assert_eq!(parse_network("::/0").unwrap().to_string(), "::/0");
        assert_eq!(
            parse_network("10.0.0.1/8"),
            Err("invalid network '10.0.0.1/8': host bits set; did you mean 10.0.0.0/8?".to_owned())
        );
        assert_eq!(
            parse_network("fe80::1/10"),
            Err("invalid network 'fe80::1/10': host bits set; did you mean fe80::/10?".to_owned())
        );
        assert_eq!(
            parse_network("10.0.0.0/33"),
            Err(format!(
                "invalid network '10.0.0.0/33': expected {NETWORK_EXPECTED}"
            ))
        );
        assert_eq!(
            parse_network("localhost"),
            Err(format!(
                "invalid network 'localhost': expected {NETWORK_EXPECTED}"
            ))
        );
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in ".{0,40}") {
            let _ = parse_duration(&text);
            let _ = parse_size(&text);
            let _ = parse_network(&text);
        }

        #[test]
        fn durations_round_trip(millis in 0u64..10_000_000_000) {
            let duration = Duration::from_millis(millis);
            prop_assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }

        #[test]
        fn sizes_round_trip(bytes in 0u64..(1 << 50)) {
            prop_assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        }
    }
}
