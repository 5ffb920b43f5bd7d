//! The `-progress` output format: `key=value` lines in blocks that end with `progress=continue` or `progress=end`.

use super::values::{
    parse_bitrate_kbps, parse_clock_time, parse_count, parse_decimal, parse_micros, parse_speed,
};
use super::{LineSplitter, ProgressSnapshot};

/// Longest `-progress` line kept; real ones are under 100 bytes.
const MAX_LINE: usize = 1024;

/// Parses `-progress` output fed in reads of any size; a block becomes a [`ProgressSnapshot`] at its `progress=` line.
#[derive(Debug, Clone)]
pub struct ProgressBlockParser {
    lines: LineSplitter,
    block: Block,
}

/// The keys of the block being read, raw; values are parsed when the block ends.
#[derive(Debug, Clone, Default)]
struct Block {
    frame: Option<String>,
    fps: Option<String>,
    out_time_us: Option<String>,
    out_time_ms: Option<String>,
    out_time: Option<String>,
    speed: Option<String>,
    bitrate: Option<String>,
    total_size: Option<String>,
}

impl Block {
    fn snapshot(&self) -> ProgressSnapshot {
        fn field(value: &Option<String>) -> &str {
            value.as_deref().unwrap_or("")
        }
        let out_time_us = parse_micros(field(&self.out_time_us))
            // ffmpeg writes microseconds under `out_time_ms` too (a long-standing misnomer)
            .or_else(|| parse_micros(field(&self.out_time_ms)))
            .or_else(|| parse_clock_time(field(&self.out_time)));
        ProgressSnapshot {
            frame: parse_count(field(&self.frame)),
            fps: parse_decimal(field(&self.fps)),
            out_time_us,
            speed: parse_speed(field(&self.speed)),
            bitrate_kbps: parse_bitrate_kbps(field(&self.bitrate)),
            total_size: parse_count(field(&self.total_size)),
            duration_us: None,
        }
    }
}

impl Default for ProgressBlockParser {
    fn default() -> Self {
        ProgressBlockParser::new()
    }
}

impl ProgressBlockParser {
    pub fn new() -> ProgressBlockParser {
        ProgressBlockParser {
            lines: LineSplitter::new(MAX_LINE, false),
            block: Block::default(),
        }
    }

    /// Feeds bytes read from the progress pipe; returns the snapshot of the last block they completed, if any.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<ProgressSnapshot> {
        let mut latest = None;
        let block = &mut self.block;
        self.lines.feed(bytes, |line, truncated| {
            if truncated {
                return;
            }
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Ok(line) = std::str::from_utf8(line) else {
                return;
            };
            let Some((key, value)) = line.split_once('=') else {
                return;
            };
            let value = Some(value.to_owned());
            match key.trim() {
                "frame" => block.frame = value,
                "fps" => block.fps = value,
                "out_time_us" => block.out_time_us = value,
                "out_time_ms" => block.out_time_ms = value,
                "out_time" => block.out_time = value,
                "speed" => block.speed = value,
                "bitrate" => block.bitrate = value,
                "total_size" => block.total_size = value,
                "progress" => latest = Some(std::mem::take(block).snapshot()),
                _ => {}
            }
        });
        latest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: &str = "frame=50\nfps=48.12\nstream_0_0_q=-0.0\nbitrate= 812.4kbits/s\ntotal_size=204848\n\
        out_time_us=2000000\nout_time_ms=2000000\nout_time=00:00:02.000000\ndup_frames=0\ndrop_frames=0\n\
        speed=1.93x\nprogress=continue\n";

    #[test]
    fn a_full_block() {
        let snapshot = ProgressBlockParser::new().feed(BLOCK.as_bytes()).unwrap();
        assert_eq!(
            snapshot,
            ProgressSnapshot {
                frame: Some(50),
                fps: Some(48.12),
                out_time_us: Some(2_000_000),
                speed: Some(1.93),
                bitrate_kbps: Some(812.4),
                total_size: Some(204_848),
                duration_us: None,
            }
        );
    }

    #[test]
    fn blocks_split_across_reads_byte_by_byte() {
        let mut parser = ProgressBlockParser::new();
        let mut snapshots = Vec::new();
        for byte in BLOCK
            .as_bytes()
            .iter()
            .chain(BLOCK.replace("frame=50", "frame=75").as_bytes())
        {
            snapshots.extend(parser.feed(&[*byte]));
        }
        assert_eq!(
            snapshots
                .iter()
                .map(|snapshot| snapshot.frame)
                .collect::<Vec<_>>(),
            [Some(50), Some(75)]
        );
    }

    #[test]
    fn only_the_last_block_of_a_read_is_returned() {
        let text = format!(
            "{BLOCK}{}",
            BLOCK
                .replace("frame=50", "frame=99")
                .replace("continue", "end")
        );
        assert_eq!(
            ProgressBlockParser::new()
                .feed(text.as_bytes())
                .unwrap()
                .frame,
            Some(99)
        );
    }

    #[test]
    fn out_time_fallbacks() {
        let parse = |text: &str| {
            ProgressBlockParser::new()
                .feed(text.as_bytes())
                .unwrap()
                .out_time_us
        };
        assert_eq!(
            parse("out_time_us=5\nout_time_ms=6\nout_time=00:00:07.000000\nprogress=continue\n"),
            Some(5)
        );
        assert_eq!(
            parse("out_time_us=N/A\nout_time_ms=6\nprogress=continue\n"),
            Some(6)
        );
        assert_eq!(
            parse("out_time_us=N/A\nout_time_ms=N/A\nout_time=00:00:07.5\nprogress=end\n"),
            Some(7_500_000)
        );
        assert_eq!(parse("out_time_us=-40000\nprogress=continue\n"), Some(0));
        assert_eq!(
            parse("out_time=-00:00:00.040000\nprogress=continue\n"),
            Some(0)
        );
        assert_eq!(parse("out_time=N/A\nprogress=continue\n"), None);
    }

    #[test]
    fn missing_values_are_left_out_and_blocks_do_not_leak() {
        let mut parser = ProgressBlockParser::new();
        let first = parser.feed(
            b"frame=1\nfps=0.00\nbitrate=N/A\ntotal_size=N/A\nspeed=N/A\nprogress=continue\n",
        );
        assert_eq!(
            first,
            Some(ProgressSnapshot {
                frame: Some(1),
                fps: Some(0.0),
                ..ProgressSnapshot::default()
            })
        );
        let second = parser.feed(b"speed=2x\r\nprogress=continue\r\n").unwrap();
        assert_eq!(
            second,
            ProgressSnapshot {
                speed: Some(2.0),
                ..ProgressSnapshot::default()
            }
        );
    }

    #[test]
    fn no_block_without_progress_line() {
        assert_eq!(ProgressBlockParser::new().feed(b"frame=1\nfps=3\n"), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..64), 0..16)) {
            let mut parser = ProgressBlockParser::new();
            for chunk in chunks {
                let _ = parser.feed(&chunk);
            }
        }

        #[test]
        fn never_panics_on_key_values(text in "((frame|fps|out_time_us|out_time_ms|out_time|speed|bitrate|total_size|progress)=[ -~]{0,12}\n){0,20}") {
            let _ = ProgressBlockParser::new().feed(text.as_bytes());
        }
    }
}
