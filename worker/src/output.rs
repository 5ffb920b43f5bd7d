//! Job output (worker-protocol.md §4.5 and §7): cutting each pipe's bytes into chunks ([`Chunker`]), numbering them
//! and keeping them per job until the session sends them ([`OutputBuffer`], shared as [`JobOutput`]).
//!
//! Bytes are never altered, decoded or limited in line length. The process is never slowed down: when the session
//! does not take chunks (disconnected), the oldest unsent ones are dropped and counted. Not here: reading the pipes
//! ([`crate::process`]) and batching frames per `flush_interval` on the socket (the session).

mod buffer;
mod chunker;

pub use buffer::{JobOutput, LogBatch, OutputBuffer};
pub use chunker::{ChunkMode, Chunker};

use std::time::Duration;

/// The `output.*` settings of config.md §3, plus the sent-chunk history of worker-protocol.md §7.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputConfig {
    /// `output.flush_interval_ms`: the partial-line idle cut and the `\r` wait (50 ms).
    pub flush_interval: Duration,
    /// `output.max_chunk_bytes`: the largest chunk (64 KiB).
    pub max_chunk_bytes: usize,
    /// `output.buffer_bytes`: unsent chunks kept per job (8 MiB).
    pub buffer_bytes: usize,
    /// Sent chunks kept per job for a resend after a reconnect (1 MiB).
    pub sent_history_bytes: usize,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            flush_interval: Duration::from_millis(50),
            max_chunk_bytes: 64 * 1024,
            buffer_bytes: 8 * 1024 * 1024,
            sent_history_bytes: 1024 * 1024,
        }
    }
}
