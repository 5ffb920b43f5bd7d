//! ffmpeg's stderr stats lines (`frame=  100 fps= 48 q=28.0 size=     256kB time=00:00:04.00 bitrate= 524.3kbits/s
//! speed=1.93x`), the progress source when a job's arguments already contain `-progress` or `progress: stderr`.

use super::values::{
    parse_bitrate_kbps, parse_clock_time, parse_count, parse_decimal, parse_size, parse_speed,
};
use super::{LineSplitter, ProgressSnapshot};

/// Longest stderr segment examined; stats lines are about 120 bytes, longer segments are not stats lines.
const MAX_SEGMENT: usize = 4096;

/// Parses a copy of stderr fed in reads of any size. Segments end at `\r` or `\n`.
#[derive(Debug, Clone)]
pub struct StatsLineParser {
    segments: LineSplitter,
}

impl Default for StatsLineParser {
    fn default() -> Self {
        StatsLineParser::new()
    }
}

impl StatsLineParser {
    pub fn new() -> StatsLineParser {
        StatsLineParser {
            segments: LineSplitter::new(MAX_SEGMENT, true),
        }
    }

    /// Feeds stderr bytes; returns the snapshot of the last stats line they completed, if any.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<ProgressSnapshot> {
        let mut latest = None;
        self.segments.feed(bytes, |segment, truncated| {
            if truncated {
                return;
            }
            if let Some(snapshot) = std::str::from_utf8(segment).ok().and_then(parse_stats_line) {
                latest = Some(snapshot);
            }
        });
        latest
    }

    /// The unterminated segment at EOF, if it is a stats line.
    pub fn finish(&mut self) -> Option<ProgressSnapshot> {
        let mut latest = None;
        self.segments.finish(|segment, truncated| {
            if !truncated {
                latest = std::str::from_utf8(segment).ok().and_then(parse_stats_line);
            }
        });
        latest
    }
}

/// Parses one stderr segment. It is a stats line when, after leading spaces, it starts with `frame=`, `size=` or
/// `Lsize=` and contains `time=`; anything else gives `None`.
pub fn parse_stats_line(segment: &str) -> Option<ProgressSnapshot> {
    let line = segment.trim_start();
    let is_stats = ["frame=", "size=", "Lsize="]
        .iter()
        .any(|prefix| line.starts_with(prefix));
    if !is_stats || !line.contains("time=") {
        return None;
    }
    let mut snapshot = ProgressSnapshot::default();
    for (key, value) in key_values(line) {
        match key {
            "frame" => snapshot.frame = parse_count(value),
            "fps" => snapshot.fps = parse_decimal(value),
            "time" => snapshot.out_time_us = parse_clock_time(value),
            "speed" => snapshot.speed = parse_speed(value),
            "bitrate" => snapshot.bitrate_kbps = parse_bitrate_kbps(value),
            "size" | "Lsize" => snapshot.total_size = parse_size(value),
            _ => {}
        }
    }
    Some(snapshot)
}

/// `key=value` pairs separated by spaces, where spaces may also follow the `=` (`fps= 48`).
fn key_values(line: &str) -> Vec<(&str, &str)> {
    let mut pairs = Vec::new();
    let mut rest = line;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return pairs;
        }
        let key_end = rest
            .find(|character: char| character == '=' || character.is_whitespace())
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        rest = &rest[key_end..];
        let Some(after_equals) = rest.strip_prefix('=') else {
            continue;
        };
        let value_text = after_equals.trim_start();
        let value_end = value_text
            .find(char::is_whitespace)
            .unwrap_or(value_text.len());
        pairs.push((key, &value_text[..value_end]));
        rest = &value_text[value_end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffmpeg_5_stats_line() {
        let line = "frame=  100 fps= 48 q=28.0 size=     256kB time=00:00:04.00 bitrate= 524.3kbits/s speed=1.93x    ";
        assert_eq!(
            parse_stats_line(line),
            Some(ProgressSnapshot {
                frame: Some(100),
                fps: Some(48.0),
                out_time_us: Some(4_000_000),
                speed: Some(1.93),
                bitrate_kbps: Some(524.3),
                total_size: Some(262_144),
                duration_us: None,
            })
        );
    }

    #[test]
    fn ffmpeg_7_final_and_audio_lines() {
        let last = parse_stats_line(
            "[out#0/mp4 @ 0x5] video:1kB\nframe=   50 fps=0.0 q=-1.0 Lsize=      33KiB time=00:00:01.96 \
             bitrate= 138.3kbits/s dup=0 drop=0 speed=26.1x elapsed=0:00:00.07",
        );
        assert_eq!(last, None, "a segment must start with the key");
        let last = parse_stats_line(
            "frame=   50 fps=0.0 q=-1.0 Lsize=      33KiB time=00:00:01.96 bitrate= 138.3kbits/s dup=0 drop=0 \
             speed=26.1x elapsed=0:00:00.07",
        )
        .unwrap();
        assert_eq!(
            (last.frame, last.total_size, last.out_time_us),
            (Some(50), Some(33 * 1024), Some(1_960_000))
        );
        let audio =
            parse_stats_line("size=    1024kB time=00:01:00.00 bitrate= 139.8kbits/s speed= 120x")
                .unwrap();
        assert_eq!(
            (audio.frame, audio.total_size, audio.speed),
            (None, Some(1 << 20), Some(120.0))
        );
    }

    #[test]
    fn missing_and_negative_values() {
        let snapshot = parse_stats_line(
            "  frame=    0 fps=0.0 q=0.0 size=N/A time=-00:00:00.04 bitrate=N/A speed=N/A",
        )
        .unwrap();
        assert_eq!(
            snapshot,
            ProgressSnapshot {
                frame: Some(0),
                fps: Some(0.0),
                out_time_us: Some(0),
                ..ProgressSnapshot::default()
            }
        );
        assert_eq!(parse_stats_line("frame= 1 fps=1"), None, "no time=");
        assert_eq!(parse_stats_line("Stream mapping: time=1"), None);
        assert_eq!(parse_stats_line(""), None);
    }

    #[test]
    fn segments_end_at_cr_or_lf_across_reads() {
        let mut parser = StatsLineParser::new();
        assert_eq!(
            parser.feed(b"Input #0, lavfi\nframe=  1 fps=0.0 q=0.0 size=0kB ti"),
            None
        );
        let snapshot = parser
            .feed(b"me=00:00:00.04 bitrate=N/A speed=N/A    \rframe=  2")
            .unwrap();
        assert_eq!(snapshot.frame, Some(1));
        assert_eq!(
            parser.feed(b" fps=0.0 time=00:00:00.08\n").unwrap().frame,
            Some(2)
        );
        assert_eq!(parser.feed(b"frame=  3 time=00:00:00.12"), None);
        assert_eq!(parser.finish().unwrap().frame, Some(3));
    }

    #[test]
    fn a_huge_line_is_ignored() {
        let mut parser = StatsLineParser::new();
        let mut huge = b"frame=1 time=00:00:01.00 ".to_vec();
        huge.extend(std::iter::repeat_n(b'x', 1 << 20));
        assert_eq!(parser.feed(&huge), None);
        assert_eq!(
            parser.feed(b"\nframe=2 time=00:00:02.00\r").unwrap().frame,
            Some(2)
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..64), 0..16)) {
            let mut parser = StatsLineParser::new();
            for chunk in chunks {
                let _ = parser.feed(&chunk);
            }
            let _ = parser.finish();
        }

        #[test]
        fn never_panics_on_stats_like_text(text in "(frame|size|Lsize)=( |[0-9a-zA-Z./:=-]){0,80}time=[ -~]{0,40}") {
            let _ = parse_stats_line(&text);
        }
    }
}
