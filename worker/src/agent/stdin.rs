//! The per-job stdin writer (cli.md §3.2 row "stdin", worker-protocol.md §5.5 and §4.9): `job_stdin` frames are
//! written to the process's stdin pipe in offset order by a task of its own, so a process that does not read never
//! blocks the session. After each write the agent hears the new offset (and sends `stdin_written`, coalesced to one
//! per flush interval); `eof` closes the pipe; a write error (`EPIPE`) or a gap in the offsets marks the pipe closed
//! and later data is dropped.
//!
//! Not here: the coordinator's stdin window (it bounds what is in flight) and deciding whether a job has stdin.

use protocol::ws::{JobRef, JobStdin};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use super::JobMessage;

/// The agent's end of a job's stdin queue.
#[derive(Debug)]
pub(super) struct StdinSender {
    frames: mpsc::UnboundedSender<JobStdin>,
}

impl StdinSender {
    /// Queues a frame; never waits. Frames for a writer that has ended are dropped.
    pub(super) fn send(&self, frame: JobStdin) {
        let _ = self.frames.send(frame);
    }
}

/// A job's stdin queue. Unbounded on purpose: what is in flight is bounded by the coordinator's stdin window
/// (`limits.stdin_window_bytes`, 4 MiB by default), which it frees only when `stdin_written` reports the bytes
/// written, and a bounded queue would force the session to either wait or drop stdin bytes.
pub(super) fn channel() -> (StdinSender, mpsc::UnboundedReceiver<JobStdin>) {
    #[allow(clippy::disallowed_methods)] // bounded by the coordinator's stdin window, see above
    let (frames, receiver) = mpsc::unbounded_channel();
    (StdinSender { frames }, receiver)
}

/// Writes the frames to the pipe in offset order until the queue closes (the job ended or was dropped).
pub(super) async fn write_stdin(
    job: JobRef,
    pipe: pipe::Sender,
    mut frames: mpsc::UnboundedReceiver<JobStdin>,
    events: mpsc::Sender<JobMessage>,
) {
    let mut pipe = Some(pipe);
    let mut written: u64 = 0;
    while let Some(frame) = frames.recv().await {
        let Some(open) = pipe.as_mut() else {
            // Closed (EOF, EPIPE or a gap): later data is dropped.
            continue;
        };
        let end = frame.offset.saturating_add(frame.data.len() as u64);
        let mut closed = false;
        if frame.offset > written {
            tracing::warn!(job_id = %job.job_id, attempt = job.attempt, expected = written, offset = frame.offset,
                "gap in job_stdin offsets; closing the job's stdin");
            closed = true;
        } else if end > written {
            let skip = usize::try_from(written - frame.offset).unwrap_or(usize::MAX);
            match open
                .write_all(&frame.data[skip.min(frame.data.len())..])
                .await
            {
                Ok(()) => written = end,
                Err(error) => {
                    tracing::debug!(job_id = %job.job_id, attempt = job.attempt, %error, "writing a job's stdin failed");
                    closed = true;
                }
            }
        }
        if frame.eof {
            closed = true;
        }
        if closed {
            // Dropping the sender closes the pipe: the process sees EOF.
            pipe = None;
        }
        let report = JobMessage::StdinWritten {
            job,
            offset: written,
            closed,
        };
        if events.send(report).await.is_err() {
            return;
        }
    }
}
