//! Value formats of ffmpeg's progress output and command line: times, counts, rates, speeds and sizes. Each parser
//! returns `None` for `N/A`, empty or unparsable text and never panics.

/// Parses a time in ffmpeg's duration syntax into microseconds: `[-][HH:]MM:SS[.m…]` or `[-]S[.m…][s|ms|us]`.
/// Leading and trailing spaces are ignored; digits past the microsecond are dropped.
pub fn parse_ffmpeg_time(text: &str) -> Option<i64> {
    let text = text.trim();
    let (negative, body) = match text.strip_prefix('-') {
        Some(body) => (true, body),
        None => (false, text),
    };
    let magnitude = if body.contains(':') {
        parse_clock(body)?
    } else {
        parse_seconds(body)?
    };
    let value = if negative { -magnitude } else { magnitude };
    i64::try_from(value).ok()
}

/// `[HH:]MM:SS[.m…]` → microseconds.
fn parse_clock(body: &str) -> Option<i128> {
    let parts: Vec<&str> = body.split(':').collect();
    let (hours, minutes, seconds) = match parts.as_slice() {
        [minutes, seconds] => ("0", *minutes, *seconds),
        [hours, minutes, seconds] => (*hours, *minutes, *seconds),
        _ => return None,
    };
    let hours = parse_digits(hours, 1, 12)?;
    let minutes = parse_digits(minutes, 1, 2)?;
    let (whole_seconds, fraction) = match seconds.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (seconds, None),
    };
    let whole_seconds = parse_digits(whole_seconds, 1, 2)?;
    if minutes >= 60 || whole_seconds >= 60 {
        return None;
    }
    let fraction_us = match fraction {
        Some(fraction) => parse_fraction(fraction, 1_000_000)?,
        None => 0,
    };
    Some(((hours * 60 + minutes) * 60 + whole_seconds) * 1_000_000 + fraction_us)
}

/// `S[.m…][s|ms|us]` → microseconds.
fn parse_seconds(body: &str) -> Option<i128> {
    let (number, unit_us) = if let Some(number) = body.strip_suffix("ms") {
        (number, 1_000)
    } else if let Some(number) = body.strip_suffix("us") {
        (number, 1)
    } else if let Some(number) = body.strip_suffix('s') {
        (number, 1_000_000)
    } else {
        (body, 1_000_000)
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    let whole = parse_digits(whole, 1, 20)?;
    let fraction = match fraction {
        Some(fraction) => parse_fraction(fraction, unit_us)?,
        None => 0,
    };
    Some(whole * unit_us + fraction)
}

/// An unsigned decimal of `min..=max` ASCII digits.
fn parse_digits(text: &str, min: usize, max: usize) -> Option<i128> {
    if text.len() < min || text.len() > max || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The digits after a decimal point, as a part of `unit` (truncated, at most 18 digits read).
fn parse_fraction(digits: &str, unit: i128) -> Option<i128> {
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let kept = &digits[..digits.len().min(18)];
    let value: i128 = kept.parse().ok()?;
    Some(value * unit / 10i128.pow(kept.len() as u32))
}

/// Whether ffmpeg printed no value.
fn is_missing(text: &str) -> bool {
    text.is_empty() || text.eq_ignore_ascii_case("n/a")
}

/// A count (`frame`, `total_size`).
pub(super) fn parse_count(text: &str) -> Option<u64> {
    let text = text.trim();
    if is_missing(text) || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A finite decimal (`fps`); `inf`, `nan` and the like are refused.
pub(super) fn parse_decimal(text: &str) -> Option<f64> {
    let text = text.trim();
    if is_missing(text)
        || !text
            .bytes()
            .all(|byte| byte.is_ascii_digit() || matches!(byte, b'.' | b'-' | b'+' | b'e' | b'E'))
    {
        return None;
    }
    text.parse::<f64>().ok().filter(|value| value.is_finite())
}

/// A speed such as `1.93x` (a bare number is accepted too).
pub(super) fn parse_speed(text: &str) -> Option<f64> {
    let text = text.trim();
    parse_decimal(text.strip_suffix('x').unwrap_or(text))
}

/// A bitrate such as `812.4kbits/s`, in kbit/s.
pub(super) fn parse_bitrate_kbps(text: &str) -> Option<f64> {
    let text = text.trim();
    parse_decimal(text.strip_suffix("kbits/s").unwrap_or(text))
}

/// A stats-line size such as `256kB`, `256KiB`, `12MiB` or `N/A`, in bytes (`kB` = `KiB` = 1024 bytes).
pub(super) fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    if is_missing(text) {
        return None;
    }
    let split = text
        .find(|character: char| !(character.is_ascii_digit() || character == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u64 = match unit {
        "" | "B" => 1,
        "kB" | "KB" | "KiB" | "kiB" => 1 << 10,
        "MB" | "MiB" => 1 << 20,
        "GB" | "GiB" => 1 << 30,
        "TB" | "TiB" => 1 << 40,
        _ => return None,
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    let whole = parse_digits(whole, 1, 20)?;
    let fraction = match fraction {
        Some(fraction) => parse_fraction(fraction, i128::from(multiplier))?,
        None => 0,
    };
    u64::try_from(whole * i128::from(multiplier) + fraction).ok()
}

/// An output time in microseconds, clamped at 0 (a negative `out_time` counts as 0).
pub(super) fn parse_micros(text: &str) -> Option<i64> {
    let text = text.trim();
    if is_missing(text) {
        return None;
    }
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse::<i64>().ok().map(|value| value.max(0))
}

/// An output time as `HH:MM:SS.micro` (or any ffmpeg time), in microseconds, clamped at 0.
pub(super) fn parse_clock_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if is_missing(text) {
        return None;
    }
    parse_ffmpeg_time(text).map(|value| value.max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffmpeg_times() {
        let cases: &[(&str, Option<i64>)] = &[
            ("00:00:02.00", Some(2_000_000)),
            ("01:02:03.5", Some(3_723_500_000)),
            ("1:02:03", Some(3_723_000_000)),
            ("02:03", Some(123_000_000)),
            ("2:3", Some(123_000_000)),
            ("-00:00:00.040000", Some(-40_000)),
            ("00:00:01.1234567", Some(1_123_456)),
            ("123:00:00", Some(442_800_000_000)),
            ("00:60:00", None),
            ("00:00:60", None),
            ("00:00:5.", None),
            ("1:2:3:4", None),
            ("12", Some(12_000_000)),
            ("1.5", Some(1_500_000)),
            ("1.5s", Some(1_500_000)),
            ("250ms", Some(250_000)),
            ("1.25ms", Some(1_250)),
            ("40us", Some(40)),
            ("-2.5", Some(-2_500_000)),
            (" 3 ", Some(3_000_000)),
            ("", None),
            ("-", None),
            ("N/A", None),
            ("1e3", None),
            ("+1", None),
            (".5", None),
            ("1.", None),
            ("99999999999999999999", None),
            ("ms", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_ffmpeg_time(text), *want, "{text:?}");
        }
    }

    #[test]
    fn values_with_spaces_and_missing_ones() {
        assert_eq!(parse_count(" 42"), Some(42));
        assert_eq!(parse_count("N/A"), None);
        assert_eq!(parse_count("-1"), None);
        assert_eq!(parse_decimal(" 48.5"), Some(48.5));
        assert_eq!(parse_decimal("nan"), None);
        assert_eq!(parse_decimal("inf"), None);
        assert_eq!(parse_decimal(""), None);
        assert_eq!(parse_speed("1.93x"), Some(1.93));
        assert_eq!(parse_speed("   1x"), Some(1.0));
        assert_eq!(parse_speed("N/A"), None);
        assert_eq!(parse_bitrate_kbps(" 812.4kbits/s"), Some(812.4));
        assert_eq!(parse_bitrate_kbps("N/A"), None);
        assert_eq!(parse_bitrate_kbps("fast"), None);
        assert_eq!(parse_size("256kB"), Some(262_144));
        assert_eq!(parse_size("  256KiB"), Some(262_144));
        assert_eq!(parse_size("2MiB"), Some(2 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("1.5KiB"), Some(1536));
        assert_eq!(parse_size("77"), Some(77));
        assert_eq!(parse_size("N/A"), None);
        assert_eq!(parse_size("12parsecs"), None);
        assert_eq!(parse_micros("1500000"), Some(1_500_000));
        assert_eq!(parse_micros("-40000"), Some(0));
        assert_eq!(parse_micros("N/A"), None);
        assert_eq!(parse_micros("1.5"), None);
        assert_eq!(parse_clock_time("00:00:01.500000"), Some(1_500_000));
        assert_eq!(parse_clock_time("-00:00:00.040000"), Some(0));
        assert_eq!(parse_clock_time("N/A"), None);
    }

    proptest::proptest! {
        #[test]
        fn value_parsers_never_panic(text in "\\PC{0,40}") {
            let _ = parse_ffmpeg_time(&text);
            let _ = parse_count(&text);
            let _ = parse_decimal(&text);
            let _ = parse_speed(&text);
            let _ = parse_bitrate_kbps(&text);
            let _ = parse_size(&text);
            let _ = parse_micros(&text);
            let _ = parse_clock_time(&text);
        }

        #[test]
        fn time_like_text_never_panics(text in "-?[0-9:.]{0,30}(s|ms|us)?") {
            let _ = parse_ffmpeg_time(&text);
        }
    }
}
