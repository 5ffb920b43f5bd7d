//! Cutting one stream's bytes into chunks: after each line terminator (`\n`, `\r\n`, a lone `\r`), at the size
//! limit, or after the stream has been idle with a partial line pending. Binary streams are cut by size and idle
//! time only.

use std::time::Duration;

use tokio::time::Instant;

/// How a stream is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkMode {
    /// Text: cut after line terminators.
    Lines,
    /// Media or other binary data: cut by size and idle time only.
    Binary,
    /// Text until a read contains a NUL byte, binary from then on (ffmpeg's stdout when the output is not known to
    /// be a pipe, other binaries' stdout, stderr).
    Auto,
}

/// Cuts one stream. Feed each read with [`Chunker::feed`]; call [`Chunker::on_idle`] at
/// [`Chunker::idle_deadline`]; call [`Chunker::finish`] at EOF. Chunks go to the `emit` callback in order.
#[derive(Debug, Clone)]
pub struct Chunker {
    /// Whether a NUL byte switches the stream to binary ([`ChunkMode::Auto`]).
    detect_binary: bool,
    binary: bool,
    max_chunk_bytes: usize,
    flush_interval: Duration,
    pending: Vec<u8>,
    /// `pending` ends with a `\r` that ended a read: the next read decides whether a `\n` joins it.
    held_cr: bool,
    last_input: Option<Instant>,
}

impl Chunker {
    /// `max_chunk_bytes` is at least 1.
    pub fn new(mode: ChunkMode, max_chunk_bytes: usize, flush_interval: Duration) -> Chunker {
        Chunker {
            detect_binary: mode == ChunkMode::Auto,
            binary: mode == ChunkMode::Binary,
            max_chunk_bytes: max_chunk_bytes.max(1),
            flush_interval,
            pending: Vec::new(),
            held_cr: false,
            last_input: None,
        }
    }

    /// Whether the stream is cut as binary now.
    pub fn is_binary(&self) -> bool {
        self.binary
    }

    /// Bytes read but not yet emitted.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Feeds one read, made at `now`.
    pub fn feed(&mut self, bytes: &[u8], now: Instant, emit: &mut impl FnMut(Vec<u8>)) {
        if bytes.is_empty() {
            return;
        }
        self.last_input = Some(now);
        let mut rest = bytes;
        if self.held_cr {
            self.held_cr = false;
            if rest[0] == b'\n' {
                self.pending.push(b'\n');
                rest = &rest[1..];
            }
            self.cut(emit);
        }
        if self.detect_binary && !self.binary && rest.contains(&0) {
            self.binary = true;
        }
        if self.binary {
            self.append(rest, emit);
            return;
        }
        while !rest.is_empty() {
            let Some(terminator) = rest.iter().position(|&byte| byte == b'\n' || byte == b'\r')
            else {
                self.append(rest, emit);
                return;
            };
            let end = if rest[terminator] == b'\n' {
                terminator + 1
            } else if terminator + 1 == rest.len() {
                // A `\r` that ends the read waits (up to the flush interval) for a `\n` in the next one.
                self.append(rest, emit);
                self.held_cr = !self.pending.is_empty();
                return;
            } else if rest[terminator + 1] == b'\n' {
                terminator + 2
            } else {
                terminator + 1
            };
            self.append(&rest[..end], emit);
            self.cut(emit);
            rest = &rest[end..];
        }
    }

    /// When the pending bytes are cut if nothing more arrives.
    pub fn idle_deadline(&self) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        self.last_input.map(|last| last + self.flush_interval)
    }

    /// Cuts the pending bytes if the stream has been idle for the flush interval at `now`.
    pub fn on_idle(&mut self, now: Instant, emit: &mut impl FnMut(Vec<u8>)) {
        if self.idle_deadline().is_some_and(|deadline| now >= deadline) {
            self.held_cr = false;
            self.cut(emit);
        }
    }

    /// End of the stream: cuts whatever is pending.
    pub fn finish(&mut self, emit: &mut impl FnMut(Vec<u8>)) {
        self.held_cr = false;
        self.cut(emit);
    }

    /// Appends to `pending`, cutting every time it reaches the size limit.
    fn append(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(Vec<u8>)) {
        while !bytes.is_empty() {
            let room = self.max_chunk_bytes - self.pending.len();
            let taken = room.min(bytes.len());
            if self.pending.is_empty() && taken == self.max_chunk_bytes {
                emit(bytes[..taken].to_vec());
            } else {
                self.pending.extend_from_slice(&bytes[..taken]);
                if self.pending.len() == self.max_chunk_bytes {
                    self.cut(emit);
                }
            }
            bytes = &bytes[taken..];
        }
    }

    fn cut(&mut self, emit: &mut impl FnMut(Vec<u8>)) {
        if !self.pending.is_empty() {
            emit(std::mem::take(&mut self.pending));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FLUSH: Duration = Duration::from_millis(50);

    fn run(mode: ChunkMode, max: usize, reads: &[&[u8]]) -> Vec<Vec<u8>> {
        let now = Instant::now();
        let mut chunker = Chunker::new(mode, max, FLUSH);
        let mut chunks = Vec::new();
        for read in reads {
            chunker.feed(read, now, &mut |chunk| chunks.push(chunk));
        }
        chunker.finish(&mut |chunk| chunks.push(chunk));
        chunks
    }

    fn strings(chunks: &[Vec<u8>]) -> Vec<String> {
        chunks
            .iter()
            .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
            .collect()
    }

    #[test]
    fn cut_after_each_terminator() {
        assert_eq!(
            strings(&run(ChunkMode::Lines, 1024, &[b"a\nb\r\nc\rd\n\n\r\re"])),
            ["a\n", "b\r\n", "c\r", "d\n", "\n", "\r", "\r", "e"]
        );
    }

    #[test]
    fn crlf_split_across_reads_stays_together() {
        assert_eq!(
            strings(&run(
                ChunkMode::Lines,
                1024,
                &[b"one\r", b"\ntwo\r", b"three"]
            )),
            ["one\r\n", "two\r", "three"]
        );
        assert_eq!(
            strings(&run(ChunkMode::Lines, 1024, &[b"a", b"b\r", b"\n"])),
            ["ab\r\n"]
        );
    }

    #[test]
    fn long_lines_are_cut_at_the_size_limit() {
        assert_eq!(
            strings(&run(ChunkMode::Lines, 4, &[b"abcdefghij\nxy"])),
            ["abcd", "efgh", "ij\n", "xy"]
        );
        assert_eq!(
            strings(&run(ChunkMode::Lines, 4, &[b"abc\r", b"\n"])),
            ["abc\r", "\n"]
        );
    }

    #[test]
    fn binary_is_cut_by_size_only() {
        assert_eq!(
            strings(&run(ChunkMode::Binary, 4, &[b"a\nb\rcdefg", b"hi"])),
            ["a\nb\r", "cdef", "ghi"]
        );
    }

    #[test]
    fn auto_switches_to_binary_at_a_nul_byte() {
        let mut chunker = Chunker::new(ChunkMode::Auto, 1024, FLUSH);
        let mut chunks = Vec::new();
        let now = Instant::now();
        chunker.feed(b"text\nmore", now, &mut |chunk| chunks.push(chunk));
        assert!(!chunker.is_binary());
        chunker.feed(b"\n\0\nbin\n", now, &mut |chunk| chunks.push(chunk));
        assert!(chunker.is_binary());
        chunker.finish(&mut |chunk| chunks.push(chunk));
        assert_eq!(chunks, [b"text\n".to_vec(), b"more\n\0\nbin\n".to_vec()]);
    }

    #[test]
    fn idle_partial_line_is_cut_after_the_flush_interval() {
        let start = Instant::now();
        let mut chunker = Chunker::new(ChunkMode::Lines, 1024, FLUSH);
        let mut chunks = Vec::new();
        chunker.feed(b"done\npartial", start, &mut |chunk| chunks.push(chunk));
        assert_eq!(chunks, [b"done\n".to_vec()]);
        assert_eq!(chunker.idle_deadline(), Some(start + FLUSH));
        chunker.on_idle(start + FLUSH / 2, &mut |chunk| chunks.push(chunk));
        assert_eq!(chunks.len(), 1, "not idle long enough");
        chunker.feed(b" more", start + FLUSH / 2, &mut |chunk| chunks.push(chunk));
        assert_eq!(
            chunker.idle_deadline(),
            Some(start + FLUSH / 2 + FLUSH),
            "a read restarts the idle time"
        );
        chunker.on_idle(start + FLUSH * 2, &mut |chunk| chunks.push(chunk));
        assert_eq!(chunks[1], b"partial more");
        assert_eq!(chunker.idle_deadline(), None);
    }

    #[test]
    fn held_cr_is_cut_when_idle_and_a_later_lf_starts_a_new_chunk() {
        let start = Instant::now();
        let mut chunker = Chunker::new(ChunkMode::Lines, 1024, FLUSH);
        let mut chunks = Vec::new();
        chunker.feed(b"frame=1\r", start, &mut |chunk| chunks.push(chunk));
        assert!(chunks.is_empty(), "a trailing \\r waits for a possible \\n");
        chunker.on_idle(start + FLUSH, &mut |chunk| chunks.push(chunk));
        chunker.feed(b"\nx\n", start + FLUSH * 3, &mut |chunk| chunks.push(chunk));
        assert_eq!(strings(&chunks), ["frame=1\r", "\n", "x\n"]);
    }

    /// The cut positions of the rules applied to the whole stream at once (no idle cuts).
    fn oracle_lines(input: &[u8], max: usize) -> Vec<Vec<u8>> {
        let mut chunks = Vec::new();
        let mut pending = Vec::new();
        for (index, &byte) in input.iter().enumerate() {
            pending.push(byte);
            let lone_cr = byte == b'\r' && input.get(index + 1) != Some(&b'\n');
            if pending.len() == max || byte == b'\n' || lone_cr {
                chunks.push(std::mem::take(&mut pending));
            }
        }
        if !pending.is_empty() {
            chunks.push(pending);
        }
        chunks
    }

    fn split_reads(input: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut positions: Vec<usize> = cuts.iter().map(|cut| cut % (input.len() + 1)).collect();
        positions.sort_unstable();
        let mut reads = Vec::new();
        let mut start = 0;
        for position in positions {
            reads.push(input[start..position].to_vec());
            start = position;
        }
        reads.push(input[start..].to_vec());
        reads
    }

    proptest! {
        #[test]
        fn lines_match_the_rules_whatever_the_reads(
            input in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), 1u8..=255], 0..400),
            cuts in proptest::collection::vec(0usize..1000, 0..20),
            max in 1usize..40,
        ) {
            let reads = split_reads(&input, &cuts);
            let read_slices: Vec<&[u8]> = reads.iter().map(Vec::as_slice).collect();
            let chunks = run(ChunkMode::Lines, max, &read_slices);
            prop_assert_eq!(chunks.concat(), input.clone());
            prop_assert!(chunks.iter().all(|chunk| !chunk.is_empty() && chunk.len() <= max));
            prop_assert_eq!(chunks, oracle_lines(&input, max));
        }

        #[test]
        fn binary_chunks_are_full_size_except_the_last(
            input in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
            cuts in proptest::collection::vec(0usize..1000, 0..20),
            max in 1usize..40,
        ) {
            let reads = split_reads(&input, &cuts);
            let read_slices: Vec<&[u8]> = reads.iter().map(Vec::as_slice).collect();
            let chunks = run(ChunkMode::Binary, max, &read_slices);
            prop_assert_eq!(chunks.concat(), input.clone());
            let expected: Vec<Vec<u8>> = input.chunks(max).map(<[u8]>::to_vec).collect();
            prop_assert_eq!(chunks, expected);
        }

        #[test]
        fn any_mode_with_idle_cuts_keeps_every_byte(
            reads in proptest::collection::vec((proptest::collection::vec(proptest::num::u8::ANY, 0..60), 0u64..120), 0..20),
            mode in prop_oneof![Just(ChunkMode::Lines), Just(ChunkMode::Binary), Just(ChunkMode::Auto)],
            max in 1usize..50,
        ) {
            let mut now = Instant::now();
            let mut chunker = Chunker::new(mode, max, FLUSH);
            let mut chunks = Vec::new();
            let mut input = Vec::new();
            for (read, gap_ms) in &reads {
                now += Duration::from_millis(*gap_ms);
                chunker.on_idle(now, &mut |chunk| chunks.push(chunk));
                chunker.feed(read, now, &mut |chunk| chunks.push(chunk));
                input.extend_from_slice(read);
            }
            chunker.finish(&mut |chunk| chunks.push(chunk));
            prop_assert!(chunks.iter().all(|chunk| !chunk.is_empty() && chunk.len() <= max));
            prop_assert_eq!(chunks.concat(), input);
        }
    }
}
