//! NDJSON decoding for the coordinator's streams (`GET /jobs/{id}/events`, `GET /poll/jobs/{id}` with
//! `Accept: application/x-ndjson`). [`LineDecoder`] and [`decode_line`] are pure (bytes in, lines out) so a fuzz
//! target can drive them; [`NdjsonStream`] wires them to an HTTP body. Nothing here panics on hostile input: an
//! over-long line, a truncated line or a line that is not the expected JSON is an error item.

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use serde::de::DeserializeOwned;

use crate::error::{DecodeError, Error};

/// Default cap on one stream line. A `job` line carries a whole `JobRecord` (arguments up to the coordinator's
/// `limits.max_job_bytes`), and a poll line up to 1000 messages of 100 log entries each, so the cap is generous.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// Splits a byte stream into lines at `\n`. A `\r` before the `\n` is dropped. Bytes may arrive in chunks of any
/// size; a line split across chunks is reassembled.
#[derive(Debug)]
pub struct LineDecoder {
    /// Bytes received and not yet returned as a line.
    buffer: Vec<u8>,
    /// How much of `buffer` is known to contain no `\n`, so a long line is scanned once, not once per chunk.
    scanned: usize,
    max_line_bytes: usize,
}

impl LineDecoder {
    /// A decoder that refuses lines longer than `max_line_bytes` (terminator excluded).
    pub fn new(max_line_bytes: usize) -> LineDecoder {
        LineDecoder {
            buffer: Vec::new(),
            scanned: 0,
            max_line_bytes,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete line without its terminator, `None` if no complete line is buffered yet.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        match self.buffer[self.scanned..]
            .iter()
            .position(|&byte| byte == b'\n')
        {
            Some(offset) => {
                let end = self.scanned + offset;
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.scanned = 0;
                if line.len() > self.max_line_bytes {
                    return Err(DecodeError::LineTooLong {
                        limit: self.max_line_bytes,
                    });
                }
                Ok(Some(line))
            }
            None => {
                self.scanned = self.buffer.len();
                if self.buffer.len() > self.max_line_bytes.saturating_add(1) {
                    return Err(DecodeError::LineTooLong {
                        limit: self.max_line_bytes,
                    });
                }
                Ok(None)
            }
        }
    }

    /// Called at the end of the stream: bytes left without a newline are a truncated line, unless they are only
    /// whitespace.
    pub fn finish(&mut self) -> Result<(), DecodeError> {
        let rest = std::mem::take(&mut self.buffer);
        self.scanned = 0;
        if rest.iter().all(u8::is_ascii_whitespace) {
            Ok(())
        } else {
            Err(DecodeError::Truncated { bytes: rest.len() })
        }
    }
}

/// One item of an NDJSON stream: a decoded line, or an empty line the coordinator sent as a keepalive.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem<T> {
    Line(T),
    /// An empty (or whitespace-only) line: the coordinator is alive and has nothing to say.
    Keepalive,
}

/// Decodes one line (terminator already removed). Empty or whitespace-only lines are keepalives.
pub fn decode_line<T: DeserializeOwned>(
    line: &[u8],
    what: &'static str,
) -> Result<StreamItem<T>, DecodeError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(StreamItem::Keepalive);
    }
    serde_json::from_slice(line)
        .map(StreamItem::Line)
        .map_err(|source| DecodeError::Json { what, source })
}

/// Decodes a whole NDJSON body at once (for tests, fuzzing and bodies read to the end).
pub fn decode_all<T: DeserializeOwned>(
    body: &[u8],
    what: &'static str,
    max_line_bytes: usize,
) -> Result<Vec<StreamItem<T>>, DecodeError> {
    let mut decoder = LineDecoder::new(max_line_bytes);
    decoder.push(body);
    let mut items = Vec::new();
    while let Some(line) = decoder.next_line()? {
        items.push(decode_line(&line, what)?);
    }
    decoder.finish()?;
    Ok(items)
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

/// A typed NDJSON stream over an HTTP body. Yields every line, keepalives included, as [`StreamItem`]. After an
/// error item the stream ends (the position inside the body is lost, so the caller reconnects with its cursor).
pub struct NdjsonStream<T> {
    body: Option<ByteStream>,
    decoder: LineDecoder,
    /// Lines already split off the last chunk, decoded lazily one per `poll_next`.
    ready: VecDeque<Vec<u8>>,
    /// A framing error found behind good lines; reported once those lines are handed out.
    pending_error: Option<DecodeError>,
    what: &'static str,
    _type: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for NdjsonStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NdjsonStream")
            .field("what", &self.what)
            .field("open", &self.body.is_some())
            .field("ready_lines", &self.ready.len())
            .finish()
    }
}

impl<T: DeserializeOwned> NdjsonStream<T> {
    /// Wraps a byte stream; `what` names the line type in decode errors.
    pub fn new<S>(body: S, what: &'static str, max_line_bytes: usize) -> NdjsonStream<T>
    where
        S: Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static,
    {
        NdjsonStream {
            body: Some(Box::pin(body)),
            decoder: LineDecoder::new(max_line_bytes),
            ready: VecDeque::new(),
            pending_error: None,
            what,
            _type: PhantomData,
        }
    }

    fn fail(&mut self, err: Error) -> Poll<Option<Result<StreamItem<T>, Error>>> {
        self.body = None;
        self.ready.clear();
        Poll::Ready(Some(Err(err)))
    }
}

impl<T: DeserializeOwned> Stream for NdjsonStream<T> {
    type Item = Result<StreamItem<T>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(line) = this.ready.pop_front() {
                return match decode_line(&line, this.what) {
                    Ok(item) => Poll::Ready(Some(Ok(item))),
                    Err(err) => this.fail(err.into()),
                };
            }
            if let Some(err) = this.pending_error.take() {
                return this.fail(err.into());
            }
            let Some(body) = this.body.as_mut() else {
                return Poll::Ready(None);
            };
            match body.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    this.decoder.push(&chunk);
                    loop {
                        match this.decoder.next_line() {
                            Ok(Some(line)) => this.ready.push_back(line),
                            Ok(None) => break,
                            // Hand out the good lines first; the error follows them.
                            Err(err) => {
                                this.pending_error = Some(err);
                                break;
                            }
                        }
                    }
                }
                Poll::Ready(Some(Err(err))) => return this.fail(Error::Transport(err)),
                Poll::Ready(None) => {
                    this.body = None;
                    if let Err(err) = this.decoder.finish() {
                        return Poll::Ready(Some(Err(err.into())));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

/// An NDJSON stream with the keepalive lines left out: yields only decoded lines.
#[derive(Debug)]
pub struct LinesOnly<T> {
    inner: NdjsonStream<T>,
}

impl<T: DeserializeOwned> LinesOnly<T> {
    /// Drops the keepalives of `inner`.
    pub fn new(inner: NdjsonStream<T>) -> LinesOnly<T> {
        LinesOnly { inner }
    }
}

impl<T: DeserializeOwned> Stream for LinesOnly<T> {
    type Item = Result<T, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(StreamItem::Keepalive))) => continue,
                Poll::Ready(Some(Ok(StreamItem::Line(line)))) => {
                    return Poll::Ready(Some(Ok(line)));
                }
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use protocol::rest::{EventLine, PollResponse};

    use super::*;

    fn lines(decoder: &mut LineDecoder) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(line) = decoder.next_line().unwrap() {
            out.push(line);
        }
        out
    }

    #[test]
    fn lines_split_across_chunks_are_reassembled() {
        let mut decoder = LineDecoder::new(1024);
        decoder.push(b"{\"a\":");
        assert!(lines(&mut decoder).is_empty());
        decoder.push(b"1}\n\n{\"b\"");
        assert_eq!(
            lines(&mut decoder),
            vec![b"{\"a\":1}".to_vec(), b"".to_vec()]
        );
        decoder.push(b":2}\r\n");
        assert_eq!(lines(&mut decoder), vec![b"{\"b\":2}".to_vec()]);
        decoder.finish().unwrap();
    }

    #[test]
    fn byte_by_byte_gives_the_same_lines() {
        let body = b"{\"x\":1}\n\n\n{\"y\":[1,2]}\r\n";
        let mut decoder = LineDecoder::new(1024);
        let mut out = Vec::new();
        for byte in body {
            decoder.push(std::slice::from_ref(byte));
            out.extend(lines(&mut decoder));
        }
        assert_eq!(out.len(), 4);
        assert_eq!(out[0], b"{\"x\":1}");
        assert_eq!(out[3], b"{\"y\":[1,2]}");
    }

    #[test]
    fn long_lines_and_truncation_are_errors() {
        let mut decoder = LineDecoder::new(8);
        decoder.push(b"0123456789");
        assert!(matches!(
            decoder.next_line(),
            Err(DecodeError::LineTooLong { limit: 8 })
        ));
        let mut decoder = LineDecoder::new(8);
        decoder.push(b"012345678\n");
        assert!(matches!(
            decoder.next_line(),
            Err(DecodeError::LineTooLong { limit: 8 })
        ));
        let mut decoder = LineDecoder::new(8);
        decoder.push(b"01234567\n");
        assert_eq!(decoder.next_line().unwrap().unwrap(), b"01234567");
        let mut decoder = LineDecoder::new(8);
        decoder.push(b"{\"a\"");
        assert!(decoder.next_line().unwrap().is_none());
        assert!(matches!(
            decoder.finish(),
            Err(DecodeError::Truncated { bytes: 4 })
        ));
        let mut decoder = LineDecoder::new(8);
        decoder.push(b"  \r");
        assert!(decoder.next_line().unwrap().is_none());
        decoder.finish().unwrap();
    }

    #[test]
    fn keepalives_and_invalid_lines() {
        assert_eq!(
            decode_line::<PollResponse>(b"", "poll line").unwrap(),
            StreamItem::Keepalive
        );
        assert_eq!(
            decode_line::<PollResponse>(b" \t", "poll line").unwrap(),
            StreamItem::Keepalive
        );
        assert_eq!(
            decode_line::<PollResponse>(br#"{"messages":[]}"#, "poll line").unwrap(),
            StreamItem::Line(PollResponse { messages: vec![] })
        );
        for bad in [
            &b"{"[..],
            b"[]",
            b"null",
            b"{\"messages\":3}",
            b"\xff\xfe",
            b"{\"type\":\"martian\"}",
        ] {
            assert!(decode_line::<PollResponse>(bad, "poll line").is_err());
            assert!(decode_line::<EventLine>(bad, "event line").is_err());
        }
        let err = decode_line::<EventLine>(br#"{"type":"martian"}"#, "event line").unwrap_err();
        assert!(err.to_string().starts_with("invalid event line: "), "{err}");
    }

    #[test]
    fn event_lines_decode() {
        let body = concat!(
            r#"{"type":"status","id":"01JDQ3V6KA0M6QW8N4C1ZV3B7E","time":"2026-11-24T18:24:07.498677Z","attempt":1,"#,
            r#""status":"running","exit_code":null,"worker_id":"w1","reason":null,"reason_detail":null}"#,
            "\n\n",
            r#"{"type":"output","id":"01JDQ3V6KA0M6QW8N4C1ZV3B7F","time":"2026-11-24T18:24:07.498677Z","attempt":1,"#,
            r#""stream":"stderr","text":"frame=1\n"}"#,
            "\n",
            r#"{"type":"output","time":"2026-11-24T18:24:07.498677Z","attempt":1,"stream":"stdout","base64":"/w==","#,
            r#""stored":false}"#,
            "\n",
        );
        let items = decode_all::<EventLine>(body.as_bytes(), "event line", 4096).unwrap();
        assert_eq!(items.len(), 4);
        assert!(matches!(items[0], StreamItem::Line(EventLine::Status(_))));
        assert_eq!(items[1], StreamItem::Keepalive);
        let StreamItem::Line(EventLine::Output(output)) = &items[3] else {
            panic!("expected an output line, got {:?}", items[3]);
        };
        assert_eq!(output.stored, Some(false));
        assert!(output.id.is_none());
    }

    fn chunks(
        parts: &[&[u8]],
    ) -> impl Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static {
        let owned: Vec<Result<Bytes, reqwest::Error>> = parts
            .iter()
            .map(|part| Ok(Bytes::copy_from_slice(part)))
            .collect();
        futures_util::stream::iter(owned)
    }

    #[tokio::test]
    async fn stream_yields_keepalives_lines_and_stops_after_an_error() {
        let body = chunks(&[
            b"{\"messages\":",
            b"[]}\n",
            b"\n{\"messages\":[]}\nnot json\n{\"messages\":[]}\n",
        ]);
        let items: Vec<_> = NdjsonStream::<PollResponse>::new(body, "poll line", 1024)
            .collect()
            .await;
        assert_eq!(items.len(), 4, "{items:?}");
        assert!(matches!(items[0], Ok(StreamItem::Line(_))));
        assert!(matches!(items[1], Ok(StreamItem::Keepalive)));
        assert!(matches!(items[2], Ok(StreamItem::Line(_))));
        assert!(matches!(
            items[3],
            Err(Error::Decode(DecodeError::Json { .. }))
        ));
    }

    #[tokio::test]
    async fn lines_only_skips_keepalives_and_reports_truncation() {
        let body = chunks(&[b"\n\n{\"messages\":[]}\n\n", b"{\"messa"]);
        let items: Vec<_> =
            LinesOnly::new(NdjsonStream::<PollResponse>::new(body, "poll line", 1024))
                .collect()
                .await;
        assert_eq!(items.len(), 2, "{items:?}");
        assert!(items[0].is_ok());
        assert!(matches!(
            items[1],
            Err(Error::Decode(DecodeError::Truncated { bytes: 7 }))
        ));
    }

    #[tokio::test]
    async fn an_over_long_line_after_good_ones_still_delivers_the_good_ones() {
        let body =
            chunks(&[b"{\"messages\":[]}\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]);
        let items: Vec<_> = NdjsonStream::<PollResponse>::new(body, "poll line", 20)
            .collect()
            .await;
        assert_eq!(items.len(), 2, "{items:?}");
        assert!(items[0].is_ok());
        assert!(matches!(
            items[1],
            Err(Error::Decode(DecodeError::LineTooLong { limit: 20 }))
        ));
    }
}
