//! The per-job output buffer of worker-protocol.md §7: numbered chunks not yet sent (bounded, oldest dropped first)
//! and a bounded history of sent chunks for a resend from `welcome.resumed[].next_output_seq`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use protocol::JobId;
use protocol::rest::OutputStream;
use protocol::ws::{JobLogs, MAX_DATA_PER_FRAME, MAX_LIST_ITEMS, OutputChunk};
use serde_bytes::ByteBuf;
use tokio::sync::Notify;

use super::OutputConfig;

/// Chunks for one `job_logs` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogBatch {
    /// In `seq` order; may be empty when only `dropped_bytes` has something to say.
    pub chunks: Vec<OutputChunk>,
    /// Bytes dropped (buffer overflow) since the previous batch.
    pub dropped_bytes: Option<u64>,
}

impl LogBatch {
    /// The `job_logs` frame for this batch.
    pub fn into_message(self, job_id: JobId, attempt: u32) -> JobLogs {
        JobLogs {
            job_id,
            attempt,
            chunks: self.chunks,
            dropped_bytes: self.dropped_bytes,
        }
    }
}

/// One attempt's chunks. Pure: the caller stamps times; [`JobOutput`] is the shared, clock-reading wrapper.
#[derive(Debug, Clone)]
pub struct OutputBuffer {
    buffer_bytes: usize,
    sent_history_bytes: usize,
    next_seq: u64,
    unsent: VecDeque<OutputChunk>,
    unsent_bytes: usize,
    sent: VecDeque<OutputChunk>,
    sent_bytes: usize,
    dropped_since_batch: u64,
    dropped_total: u64,
}

impl OutputBuffer {
    pub fn new(config: &OutputConfig) -> OutputBuffer {
        OutputBuffer {
            buffer_bytes: config.buffer_bytes,
            sent_history_bytes: config.sent_history_bytes,
            next_seq: 0,
            unsent: VecDeque::new(),
            unsent_bytes: 0,
            sent: VecDeque::new(),
            sent_bytes: 0,
            dropped_since_batch: 0,
            dropped_total: 0,
        }
    }

    /// Numbers a chunk (`seq` from 0, shared by both streams) and queues it; on overflow drops the oldest unsent
    /// chunks. Returns the chunk's `seq`.
    pub fn push(&mut self, stream: OutputStream, data: Vec<u8>, time_ms: i64) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unsent_bytes += data.len();
        self.unsent.push_back(OutputChunk {
            seq,
            stream,
            time_ms,
            data: ByteBuf::from(data),
        });
        while self.unsent_bytes > self.buffer_bytes {
            let Some(dropped) = self.unsent.pop_front() else {
                break;
            };
            self.unsent_bytes -= dropped.data.len();
            self.dropped_since_batch += dropped.data.len() as u64;
            self.dropped_total += dropped.data.len() as u64;
        }
        seq
    }

    /// Takes the oldest unsent chunks for one frame: at least one chunk, then more while their data stays within
    /// `max_bytes` and their count within `max_chunks`. Taken chunks join the sent history.
    pub fn take_batch(&mut self, max_bytes: usize, max_chunks: usize) -> Option<LogBatch> {
        let mut chunks = Vec::new();
        let mut bytes = 0;
        while let Some(front) = self.unsent.front() {
            let size = front.data.len();
            if !chunks.is_empty() && (bytes + size > max_bytes || chunks.len() >= max_chunks) {
                break;
            }
            let Some(chunk) = self.unsent.pop_front() else {
                break;
            };
            bytes += size;
            self.unsent_bytes -= size;
            chunks.push(chunk);
        }
        let dropped_bytes = std::mem::take(&mut self.dropped_since_batch);
        if chunks.is_empty() && dropped_bytes == 0 {
            return None;
        }
        for chunk in &chunks {
            self.sent_bytes += chunk.data.len();
            self.sent.push_back(chunk.clone());
        }
        while self.sent_bytes > self.sent_history_bytes {
            let Some(old) = self.sent.pop_front() else {
                break;
            };
            self.sent_bytes -= old.data.len();
        }
        Some(LogBatch {
            chunks,
            dropped_bytes: (dropped_bytes > 0).then_some(dropped_bytes),
        })
    }

    /// After a reconnect: queues the kept sent chunks from `next_output_seq` on again, ahead of the unsent ones.
    /// Returns the first `seq` that will go out; larger than `next_output_seq` when older chunks are gone.
    pub fn resend_from(&mut self, next_output_seq: u64) -> u64 {
        while let Some(back) = self.sent.back() {
            if back.seq < next_output_seq {
                break;
            }
            let Some(chunk) = self.sent.pop_back() else {
                break;
            };
            self.sent_bytes -= chunk.data.len();
            self.unsent_bytes += chunk.data.len();
            self.unsent.push_front(chunk);
        }
        self.unsent.front().map_or(self.next_seq, |chunk| chunk.seq)
    }

    /// The next unused `seq`: `job_finished.output_seq_end`.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether a batch is waiting.
    pub fn has_unsent(&self) -> bool {
        !self.unsent.is_empty() || self.dropped_since_batch > 0
    }

    /// Bytes of unsent chunks held.
    pub fn unsent_bytes(&self) -> usize {
        self.unsent_bytes
    }

    /// Bytes dropped over the attempt's life.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }
}

/// The shared handle on one job's [`OutputBuffer`]: pipe readers push, the session takes batches. Cheap to clone.
/// The lock is held only for a push or a take, never across an `.await`, so a reader never waits on the session.
#[derive(Debug, Clone)]
pub struct JobOutput {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    buffer: Mutex<OutputBuffer>,
    /// Wakes [`JobOutput::ready`].
    ready: Notify,
    /// An optional notifier shared by all jobs of a session, so one task can wait for output of any job.
    waker: Option<Arc<Notify>>,
}

impl JobOutput {
    pub fn new(config: &OutputConfig) -> JobOutput {
        JobOutput::build(config, None)
    }

    /// As [`JobOutput::new`], also notifying `waker` whenever a chunk arrives.
    pub fn with_waker(config: &OutputConfig, waker: Arc<Notify>) -> JobOutput {
        JobOutput::build(config, Some(waker))
    }

    fn build(config: &OutputConfig, waker: Option<Arc<Notify>>) -> JobOutput {
        JobOutput {
            shared: Arc::new(Shared {
                buffer: Mutex::new(OutputBuffer::new(config)),
                ready: Notify::new(),
                waker,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutputBuffer> {
        // A panic while holding the lock leaves the buffer consistent enough to keep sending.
        self.shared
            .buffer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a chunk stamped with the current wall-clock time; returns its `seq`.
    pub fn push(&self, stream: OutputStream, data: Vec<u8>) -> u64 {
        let seq = self.lock().push(stream, data, crate::now_ms());
        self.shared.ready.notify_one();
        if let Some(waker) = &self.shared.waker {
            waker.notify_one();
        }
        seq
    }

    /// The next `job_logs` batch within the protocol's frame limits (256 KiB of data, 4096 chunks).
    pub fn take_batch(&self) -> Option<LogBatch> {
        self.take_batch_limited(MAX_DATA_PER_FRAME, MAX_LIST_ITEMS)
    }

    /// [`OutputBuffer::take_batch`].
    pub fn take_batch_limited(&self, max_bytes: usize, max_chunks: usize) -> Option<LogBatch> {
        self.lock().take_batch(max_bytes, max_chunks)
    }

    /// [`OutputBuffer::resend_from`].
    pub fn resend_from(&self, next_output_seq: u64) -> u64 {
        let first = self.lock().resend_from(next_output_seq);
        self.shared.ready.notify_one();
        first
    }

    /// [`OutputBuffer::next_seq`].
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq()
    }

    /// [`OutputBuffer::has_unsent`].
    pub fn has_unsent(&self) -> bool {
        self.lock().has_unsent()
    }

    /// [`OutputBuffer::dropped_total`].
    pub fn dropped_total(&self) -> u64 {
        self.lock().dropped_total()
    }

    /// Waits until a batch is waiting. Meant for one consumer per job.
    pub async fn ready(&self) {
        loop {
            if self.has_unsent() {
                return;
            }
            self.shared.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(buffer_bytes: usize, sent_history_bytes: usize) -> OutputConfig {
        OutputConfig {
            buffer_bytes,
            sent_history_bytes,
            ..OutputConfig::default()
        }
    }

    fn seqs(batch: &LogBatch) -> Vec<u64> {
        batch.chunks.iter().map(|chunk| chunk.seq).collect()
    }

    #[test]
    fn seq_is_shared_by_both_streams() {
        let mut buffer = OutputBuffer::new(&config(1024, 1024));
        assert_eq!(buffer.push(OutputStream::Stderr, b"a\n".to_vec(), 1), 0);
        assert_eq!(buffer.push(OutputStream::Stdout, b"b".to_vec(), 2), 1);
        assert_eq!(buffer.push(OutputStream::Stderr, b"c\n".to_vec(), 3), 2);
        let batch = buffer.take_batch(1024, 100).unwrap();
        assert_eq!(seqs(&batch), [0, 1, 2]);
        assert_eq!(batch.chunks[1].stream, OutputStream::Stdout);
        assert_eq!(batch.chunks[2].time_ms, 3);
        assert_eq!(batch.dropped_bytes, None);
        assert_eq!(buffer.next_seq(), 3);
        assert!(buffer.take_batch(1024, 100).is_none());
    }

    #[test]
    fn overflow_drops_the_oldest_unsent_chunks() {
        let mut buffer = OutputBuffer::new(&config(10, 1024));
        for index in 0..5u8 {
            buffer.push(OutputStream::Stdout, vec![index; 4], 0);
        }
        // 20 bytes pushed, 10 allowed: chunks 0, 1 and 2 went (12 bytes)
        assert_eq!(buffer.unsent_bytes(), 8);
        let batch = buffer.take_batch(1024, 100).unwrap();
        assert_eq!(seqs(&batch), [3, 4]);
        assert_eq!(batch.dropped_bytes, Some(12));
        assert_eq!(buffer.dropped_total(), 12);
        buffer.push(OutputStream::Stdout, vec![9; 4], 0);
        assert_eq!(
            buffer.take_batch(1024, 100).unwrap().dropped_bytes,
            None,
            "counted once"
        );
    }

    #[test]
    fn a_chunk_larger_than_the_buffer_is_reported_dropped() {
        let mut buffer = OutputBuffer::new(&config(4, 1024));
        buffer.push(OutputStream::Stdout, vec![0; 5], 0);
        let batch = buffer.take_batch(1024, 100).unwrap();
        assert!(batch.chunks.is_empty());
        assert_eq!(batch.dropped_bytes, Some(5));
        assert_eq!(buffer.next_seq(), 1);
    }

    #[test]
    fn batches_respect_frame_limits_but_always_carry_one_chunk() {
        let mut buffer = OutputBuffer::new(&config(1 << 20, 1 << 20));
        for _ in 0..5 {
            buffer.push(OutputStream::Stdout, vec![0; 100], 0);
        }
        assert_eq!(seqs(&buffer.take_batch(250, 100).unwrap()), [0, 1]);
        assert_eq!(seqs(&buffer.take_batch(50, 100).unwrap()), [2]);
        assert_eq!(seqs(&buffer.take_batch(1000, 1).unwrap()), [3]);
        assert_eq!(seqs(&buffer.take_batch(1000, 100).unwrap()), [4]);
    }

    #[test]
    fn resend_from_the_history() {
        let mut buffer = OutputBuffer::new(&config(1 << 20, 10));
        for index in 0..5u8 {
            buffer.push(OutputStream::Stderr, vec![index; 4], 0);
        }
        buffer.take_batch(1024, 100).unwrap();
        buffer.push(OutputStream::Stderr, vec![5; 4], 0);
        // history keeps the last 10 bytes: chunks 3 and 4
        assert_eq!(buffer.resend_from(4), 4);
        assert_eq!(seqs(&buffer.take_batch(1024, 100).unwrap()), [4, 5]);
        assert_eq!(
            buffer.resend_from(0),
            4,
            "chunks 0..3 are gone, the coordinator records a gap"
        );
        assert_eq!(seqs(&buffer.take_batch(1024, 100).unwrap()), [4, 5]);
        assert_eq!(buffer.resend_from(99), 6, "nothing to resend");
        assert!(!buffer.has_unsent());
    }

    #[tokio::test]
    async fn shared_handle_wakes_the_consumer() {
        let waker = Arc::new(Notify::new());
        let output = JobOutput::with_waker(&OutputConfig::default(), waker.clone());
        let consumer = {
            let output = output.clone();
            tokio::spawn(async move {
                output.ready().await;
                output.take_batch().unwrap()
            })
        };
        output.push(OutputStream::Stdout, b"x".to_vec());
        let batch = tokio::time::timeout(std::time::Duration::from_secs(5), consumer)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(batch.chunks[0].data.as_slice(), b"x");
        tokio::time::timeout(std::time::Duration::from_secs(5), waker.notified())
            .await
            .unwrap();
        let message = batch.into_message(JobId(protocol::Ulid::from_u128(1)), 3);
        assert_eq!(message.attempt, 3);
    }

    proptest! {
        #[test]
        fn what_is_sent_plus_what_is_dropped_is_what_was_pushed(
            operations in proptest::collection::vec(prop_oneof![
                (1usize..40).prop_map(Some),
                Just(None),
            ], 0..100),
            buffer_bytes in 1usize..100,
        ) {
            let mut buffer = OutputBuffer::new(&config(buffer_bytes, 50));
            let mut pushed = 0u64;
            let mut sent = 0u64;
            let mut dropped = 0u64;
            let mut last_seq = None;
            for operation in operations {
                match operation {
                    Some(size) => {
                        buffer.push(OutputStream::Stdout, vec![1; size], 0);
                        pushed += size as u64;
                    }
                    None => {
                        if let Some(batch) = buffer.take_batch(64, 3) {
                            for chunk in &batch.chunks {
                                prop_assert!(last_seq < Some(chunk.seq), "seq increases");
                                last_seq = Some(chunk.seq);
                                sent += chunk.data.len() as u64;
                            }
                            dropped += batch.dropped_bytes.unwrap_or(0);
                        }
                    }
                }
                prop_assert!(buffer.unsent_bytes() <= buffer_bytes);
            }
            while let Some(batch) = buffer.take_batch(64, 3) {
                sent += batch.chunks.iter().map(|chunk| chunk.data.len() as u64).sum::<u64>();
                dropped += batch.dropped_bytes.unwrap_or(0);
            }
            prop_assert_eq!(sent + dropped, pushed);
            prop_assert_eq!(dropped, buffer.dropped_total());
        }
    }
}
