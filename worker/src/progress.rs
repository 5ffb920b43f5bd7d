//! Progress (cli.md §3.3): the parsers that turn ffmpeg's `-progress pipe:3` blocks or its stderr stats lines into a
//! [`ProgressSnapshot`], the expected duration D ([`DurationTracker`]), and the sender-side [`ProgressThrottle`].
//!
//! Everything here is pure and synchronous: bytes in, values out, `now` passed in. Reading the pipes, deciding which
//! mode a job uses and emitting events belong to [`crate::process`]; building and sending `job_progress` frames
//! belongs to the session.

mod duration;
mod pipe;
mod stats;
mod throttle;
mod values;

pub use duration::{ArgumentDurations, DurationTracker};
pub use pipe::ProgressBlockParser;
pub use stats::{StatsLineParser, parse_stats_line};
pub use throttle::{PROGRESS_INTERVAL, ProgressThrottle};
pub use values::parse_ffmpeg_time;

use protocol::JobId;
use protocol::ws::JobProgress;

/// How a worker reads progress (`progress` in config.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// `-progress pipe:3` is inserted and fd 3 is read (the default).
    #[default]
    Pipe,
    /// The stats lines in a copy of stderr are parsed.
    Stderr,
    /// No progress at all.
    Off,
}

/// One progress reading, the optional fields of `job_progress` (worker-protocol.md §4.6). A field is `None` when
/// ffmpeg printed `N/A`, nothing, or something unparsable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProgressSnapshot {
    pub frame: Option<u64>,
    pub fps: Option<f64>,
    /// Output time in microseconds, never negative.
    pub out_time_us: Option<i64>,
    pub speed: Option<f64>,
    pub bitrate_kbps: Option<f64>,
    /// Bytes written so far.
    pub total_size: Option<u64>,
    /// The expected duration D in microseconds, when known ([`DurationTracker`]); the parsers leave it `None`.
    pub duration_us: Option<i64>,
}

impl ProgressSnapshot {
    /// The `job_progress` frame for this snapshot.
    pub fn to_message(&self, job_id: JobId, attempt: u32, time_ms: i64) -> JobProgress {
        JobProgress {
            job_id,
            attempt,
            time_ms,
            frame: self.frame,
            fps: self.fps,
            out_time_us: self.out_time_us,
            speed: self.speed,
            bitrate_kbps: self.bitrate_kbps,
            total_size: self.total_size,
            duration_us: self.duration_us,
        }
    }
}

/// Splits a byte stream into lines of bounded length, across reads. Bytes past `max_len` in one line are dropped
/// and the line is flagged as truncated, so a 1 MiB line costs no memory here.
#[derive(Debug, Clone)]
struct LineSplitter {
    line: Vec<u8>,
    truncated: bool,
    max_len: usize,
    /// Whether a lone `\r` also ends a line (stderr) or only `\n` does (`-progress` output, where a trailing `\r`
    /// is trimmed by the caller).
    split_on_cr: bool,
}

impl LineSplitter {
    fn new(max_len: usize, split_on_cr: bool) -> LineSplitter {
        LineSplitter {
            line: Vec::new(),
            truncated: false,
            max_len,
            split_on_cr,
        }
    }

    /// Calls `on_line(line, truncated)` for every line completed by `bytes`, without its terminator.
    fn feed(&mut self, bytes: &[u8], mut on_line: impl FnMut(&[u8], bool)) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let end = rest
                .iter()
                .position(|&byte| byte == b'\n' || (self.split_on_cr && byte == b'\r'));
            let (content, terminated) = match end {
                Some(end) => (&rest[..end], true),
                None => (rest, false),
            };
            let room = self.max_len.saturating_sub(self.line.len());
            if content.len() > room {
                self.truncated = true;
            }
            self.line
                .extend_from_slice(&content[..content.len().min(room)]);
            if terminated {
                on_line(&self.line, self.truncated);
                self.line.clear();
                self.truncated = false;
                rest = &rest[content.len() + 1..];
            } else {
                rest = &[];
            }
        }
    }

    /// The unterminated line at the end of the stream, if any (for EOF).
    fn finish(&mut self, mut on_line: impl FnMut(&[u8], bool)) {
        if !self.line.is_empty() {
            on_line(&self.line, self.truncated);
        }
        self.line.clear();
        self.truncated = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max_len: usize, split_on_cr: bool) -> Vec<(String, bool)> {
        let mut splitter = LineSplitter::new(max_len, split_on_cr);
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.feed(chunk, |line, truncated| {
                lines.push((String::from_utf8_lossy(line).into_owned(), truncated))
            });
        }
        splitter.finish(|line, truncated| {
            lines.push((String::from_utf8_lossy(line).into_owned(), truncated))
        });
        lines
    }

    #[test]
    fn lines_are_joined_across_reads_and_bounded() {
        assert_eq!(
            split(&[b"ab", b"c\nde", b"f\rg\n", b"tail"], 100, true),
            [
                ("abc".into(), false),
                ("def".into(), false),
                ("g".into(), false),
                ("tail".into(), false)
            ]
        );
        assert_eq!(
            split(&[b"a\rb\n"], 100, false),
            [("a\rb".to_owned(), false)]
        );
        assert_eq!(
            split(&[b"0123", b"456789\nxy\n"], 4, true),
            [("0123".into(), true), ("xy".into(), false)]
        );
    }

    #[test]
    fn snapshot_becomes_a_message() {
        let snapshot = ProgressSnapshot {
            frame: Some(3),
            duration_us: Some(9),
            ..ProgressSnapshot::default()
        };
        let message = snapshot.to_message(JobId(protocol::Ulid::from_u128(1)), 2, 1234);
        assert_eq!(
            (
                message.attempt,
                message.time_ms,
                message.frame,
                message.duration_us
            ),
            (2, 1234, Some(3), Some(9))
        );
        assert_eq!(message.fps, None);
    }
}
