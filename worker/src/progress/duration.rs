//! The expected duration D of cli.md §3.3: from the output options, else from input #0's `Duration:` line on stderr,
//! else from input #0's own limits. D ≤ 0 means unknown.

use super::LineSplitter;
use super::values::parse_ffmpeg_time;

/// Bytes of each stderr line kept while looking for `Input #0` and `Duration:`; both sit at the start of a line.
const MAX_HEADER_LINE: usize = 256;

/// What the arguments alone say about D.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArgumentDurations {
    /// Rule 1: the output options' `-t T`, else `-to P` minus their `-ss`. `None` when they have neither.
    pub output_us: Option<i64>,
    /// Input #0's `-ss` (0 if none).
    pub input_start_us: i64,
    /// Input #0's `-t T`, else its `-to P` minus `input_start_us`: the cap of rule 2 and the value of rule 3.
    pub input_limit_us: Option<i64>,
    /// `-stream_loop N` before the first `-i`.
    pub stream_loop: Option<i64>,
    /// Whether the arguments have an `-i VALUE` at all; without one no rule applies.
    pub has_input: bool,
}

/// The value of the first occurrence of `option` in `arguments` that has a value.
fn first_value<'a, S: AsRef<str>>(arguments: &'a [S], option: &str) -> Option<&'a str> {
    let position = arguments
        .iter()
        .position(|argument| argument.as_ref() == option)?;
    arguments.get(position + 1).map(AsRef::as_ref)
}

fn first_time<S: AsRef<str>>(arguments: &[S], option: &str) -> Option<i64> {
    first_value(arguments, option).and_then(parse_ffmpeg_time)
}

/// `-t T` gives T; else `-to P` gives P − S, with S the first `-ss` (0 if none).
fn limit_of<S: AsRef<str>>(options: &[S], start_us: i64) -> Option<i64> {
    first_time(options, "-t")
        .or_else(|| first_time(options, "-to").map(|position| position.saturating_sub(start_us)))
}

impl ArgumentDurations {
    /// Reads a job's arguments (as submitted or resolved: paths do not matter here).
    pub fn from_arguments<S: AsRef<str>>(arguments: &[S]) -> ArgumentDurations {
        let mut first_input = None;
        let mut last_input = None;
        let mut index = 0;
        while index < arguments.len() {
            if arguments[index].as_ref() == "-i" && index + 1 < arguments.len() {
                first_input.get_or_insert(index);
                last_input = Some(index);
                index += 2;
            } else {
                index += 1;
            }
        }
        let (Some(first_input), Some(last_input)) = (first_input, last_input) else {
            return ArgumentDurations::default();
        };
        let output = &arguments[last_input + 2..];
        let output_start = first_time(output, "-ss").unwrap_or(0);
        let input = &arguments[..first_input];
        let input_start_us = first_time(input, "-ss").unwrap_or(0);
        ArgumentDurations {
            output_us: limit_of(output, output_start),
            input_start_us,
            input_limit_us: limit_of(input, input_start_us),
            stream_loop: first_value(input, "-stream_loop")
                .and_then(|text| text.trim().parse().ok()),
            has_input: true,
        }
    }

    /// D given input #0's usable `Duration:` (rule 2 when `Some`, else rule 3), before the D ≤ 0 test.
    fn expected(&self, input_duration_us: Option<i64>) -> Option<i64> {
        if !self.has_input {
            return None;
        }
        if let Some(output) = self.output_us {
            return Some(output);
        }
        let Some(input_duration) = input_duration_us else {
            return self.input_limit_us;
        };
        let played = input_duration.saturating_sub(self.input_start_us);
        let looped = match self.stream_loop {
            Some(count) if count < 0 => None, // loops forever
            Some(count) if count > 0 => Some(played.saturating_mul(count.saturating_add(1))),
            _ => Some(played),
        };
        match (looped, self.input_limit_us) {
            (Some(looped), Some(limit)) => Some(looped.min(limit)),
            (Some(looped), None) => Some(looped),
            // `-stream_loop -1` with an input `-t`: the cap still ends it.
            (None, limit) => limit,
        }
    }
}

/// Where the stderr scan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    /// `Input #0` not seen yet.
    BeforeInput,
    /// Inside input #0's description: its `Duration:` line may come.
    InInput,
    /// Input #0's `Duration:` line was seen (usable or not), or its description ended without one.
    Done,
}

/// Tracks D for one job, fed with stderr as it is read (lines may be split across reads).
#[derive(Debug, Clone)]
pub struct DurationTracker {
    arguments: ArgumentDurations,
    lines: LineSplitter,
    header: Header,
    /// Input #0's `Duration:`, when printed and not `N/A`.
    input_duration_us: Option<i64>,
    current: Option<i64>,
}

impl DurationTracker {
    pub fn new<S: AsRef<str>>(arguments: &[S]) -> DurationTracker {
        let arguments = ArgumentDurations::from_arguments(arguments);
        let mut tracker = DurationTracker {
            arguments,
            lines: LineSplitter::new(MAX_HEADER_LINE, true),
            header: Header::BeforeInput,
            input_duration_us: None,
            current: None,
        };
        tracker.current = tracker.compute();
        tracker
    }

    /// D in microseconds, when known. Before stderr has shown input #0's `Duration:` line this is rule 3's value,
    /// which that line may still replace (ffmpeg prints it before any progress).
    pub fn duration_us(&self) -> Option<i64> {
        self.current
    }

    /// Whether stderr can still change D; the caller may stop feeding once this is false.
    pub fn wants_stderr(&self) -> bool {
        self.arguments.has_input
            && self.arguments.output_us.is_none()
            && self.header != Header::Done
    }

    /// Feeds stderr bytes; returns true when [`DurationTracker::duration_us`] changed.
    pub fn feed(&mut self, stderr: &[u8]) -> bool {
        if !self.wants_stderr() {
            return false;
        }
        let header = &mut self.header;
        let input_duration = &mut self.input_duration_us;
        self.lines.feed(stderr, |line, _truncated| {
            if *header == Header::Done {
                return;
            }
            let text = String::from_utf8_lossy(line);
            let text = strip_level_prefixes(&text);
            match *header {
                Header::BeforeInput
                    if text.starts_with("Input #0,") || text.starts_with("Input #0 ") =>
                {
                    *header = Header::InInput;
                }
                Header::InInput => {
                    if let Some(rest) = text.strip_prefix("Duration:") {
                        let value = rest.split(',').next().unwrap_or("").trim();
                        *input_duration =
                            parse_ffmpeg_time(value).filter(|duration| *duration >= 0);
                        *header = Header::Done;
                    } else if text.starts_with("Input #")
                        || text.starts_with("Output #")
                        || text.starts_with("Stream mapping:")
                    {
                        *header = Header::Done;
                    }
                }
                _ => {}
            }
        });
        let previous = self.current;
        self.current = self.compute();
        self.current != previous
    }

    fn compute(&self) -> Option<i64> {
        let usable = if self.header == Header::Done {
            self.input_duration_us
        } else {
            None
        };
        self.arguments
            .expected(usable)
            .filter(|duration| *duration > 0)
    }
}

/// Drops leading spaces and `[level]`-style prefixes (`-loglevel +level` prints `[info] Input #0, …`).
fn strip_level_prefixes(line: &str) -> &str {
    let mut rest = line.trim_start();
    while let Some(after) = rest.strip_prefix('[') {
        match after.split_once("] ") {
            Some((_, tail)) => rest = tail.trim_start(),
            None => break,
        }
    }
    rest
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "ffmpeg version 5.1\nInput #0, matroska,webm, from 'in.mkv':\n  Metadata:\n    ENCODER : x\n  \
        Duration: 00:01:40.00, start: 0.000000, bitrate: 1 kb/s\n  Stream #0:0: Video: h264\nInput #1, wav, from 'a.wav':\n  \
        Duration: 00:00:05.00, start: 0.000000, bitrate: 1411 kb/s\nStream mapping:\n";

    fn duration(arguments: &str, stderr: &str) -> Option<i64> {
        let arguments: Vec<&str> = arguments.split_whitespace().collect();
        let mut tracker = DurationTracker::new(&arguments);
        tracker.feed(stderr.as_bytes());
        tracker.duration_us()
    }

    #[test]
    fn rule_1_output_options() {
        let cases: &[(&str, Option<i64>)] = &[
            ("-i in.mkv -t 10 out.mp4", Some(10_000_000)),
            ("-i in.mkv -t 00:00:10.5 -t 3 out.mp4", Some(10_500_000)),
            ("-i in.mkv -ss 5 -to 20 out.mp4", Some(15_000_000)),
            ("-i in.mkv -to 20 -ss 5 out.mp4", Some(15_000_000)),
            ("-i in.mkv -to 00:01:00 out.mp4", Some(60_000_000)),
            ("-i in.mkv -t 5 -to 20 out.mp4", Some(5_000_000)),
            ("-i in.mkv -ss 30 -to 20 out.mp4", None),
            ("-i in.mkv -t 0 out.mp4", None),
            ("-t 7 -i a.mkv -i b.wav -t 3 out.mp4", Some(3_000_000)),
            // -t between two inputs belongs to the second input, not to the output
            ("-i a.mkv -t 3 -i b.wav out.mp4", Some(100_000_000)),
        ];
        for (arguments, want) in cases {
            assert_eq!(duration(arguments, HEADER), *want, "{arguments}");
        }
    }

    #[test]
    fn rule_2_input_duration_line() {
        let cases: &[(&str, Option<i64>)] = &[
            ("-i in.mkv out.mp4", Some(100_000_000)),
            ("-ss 30 -i in.mkv out.mp4", Some(70_000_000)),
            ("-ss 30 -t 10 -i in.mkv out.mp4", Some(10_000_000)),
            ("-ss 30 -t 90 -i in.mkv out.mp4", Some(70_000_000)),
            ("-ss 30 -to 40 -i in.mkv out.mp4", Some(10_000_000)),
            ("-stream_loop 2 -i in.mkv out.mp4", Some(300_000_000)),
            ("-stream_loop 2 -t 150 -i in.mkv out.mp4", Some(150_000_000)),
            ("-stream_loop 0 -i in.mkv out.mp4", Some(100_000_000)),
            ("-stream_loop -1 -i in.mkv out.mp4", None),
            ("-stream_loop -1 -t 60 -i in.mkv out.mp4", Some(60_000_000)),
            ("-ss 200 -i in.mkv out.mp4", None),
        ];
        for (arguments, want) in cases {
            assert_eq!(duration(arguments, HEADER), *want, "{arguments}");
        }
    }

    #[test]
    fn rule_3_without_a_usable_duration_line() {
        let no_duration =
            "Input #0, mpegts, from 'udp://x':\n  Duration: N/A, start: 1.4\nOutput #0, mp4\n";
        assert_eq!(
            duration("-t 12 -i in.ts out.mp4", no_duration),
            Some(12_000_000)
        );
        assert_eq!(
            duration("-ss 2 -to 12 -i in.ts out.mp4", no_duration),
            Some(10_000_000)
        );
        assert_eq!(duration("-i in.ts out.mp4", no_duration), None);
        // -v error: nothing on stderr at all
        assert_eq!(
            duration("-v error -t 4 -i in.ts out.mp4", ""),
            Some(4_000_000)
        );
        // input #0 ended without a Duration line: input #1's is not used
        let second_only = "Input #0, lavfi, from 'x':\nInput #1, wav, from 'a.wav':\n  Duration: 00:00:05.00, start: 0\n";
        assert_eq!(duration("-i x -i a.wav out.mp4", second_only), None);
        assert_eq!(duration("out.mp4", HEADER), None, "no input at all");
    }

    #[test]
    fn duration_line_split_across_reads_and_level_prefixes() {
        let arguments = ["-i", "in.mkv", "out.mp4"];
        let mut tracker = DurationTracker::new(&arguments);
        assert_eq!(tracker.duration_us(), None);
        assert!(!tracker.feed(b"[info] Input #0, matroska, from 'in.mkv':\r\n[info]   Dura"));
        assert!(tracker.wants_stderr());
        assert!(tracker.feed(b"tion: 00:00:02.00, start: 0.000000, bitrate: 3 kb/s\n"));
        assert_eq!(tracker.duration_us(), Some(2_000_000));
        assert!(!tracker.wants_stderr());
        assert!(!tracker.feed(b"Input #0, x:\n  Duration: 00:00:09.00,\n"));
    }

    #[test]
    fn rule_3_value_is_provisional_until_the_duration_line() {
        let arguments = ["-t", "50", "-i", "in.mkv", "out.mp4"];
        let mut tracker = DurationTracker::new(&arguments);
        assert_eq!(tracker.duration_us(), Some(50_000_000));
        assert!(
            tracker.feed(b"Input #0, mkv, from 'in.mkv':\n  Duration: 00:00:20.00, start: 0.0\n")
        );
        assert_eq!(tracker.duration_us(), Some(20_000_000));
    }

    #[test]
    fn rule_1_needs_no_stderr() {
        let tracker = DurationTracker::new(&["-i", "x", "-t", "1", "y"]);
        assert_eq!(tracker.duration_us(), Some(1_000_000));
        assert!(!tracker.wants_stderr());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(arguments in proptest::collection::vec("(-i|-t|-to|-ss|-stream_loop|[ -~]{0,12})", 0..12),
                        chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..80), 0..8)) {
            let mut tracker = DurationTracker::new(&arguments);
            for chunk in chunks {
                tracker.feed(&chunk);
            }
            if let Some(duration) = tracker.duration_us() {
                proptest::prop_assert!(duration > 0);
            }
        }

        #[test]
        fn header_like_text_never_panics(text in "(Input #0, x\n|  Duration: [ -~]{0,20}\n|Output #0\n|[ -~]{0,30}\r){0,8}") {
            let mut tracker = DurationTracker::new(&["-i", "x", "y"]);
            tracker.feed(text.as_bytes());
        }
    }
}
