//! A tiny HTTP/1.1 server on 127.0.0.1 for the REST client's tests: records every request and answers with what
//! the test's handler returns, optionally as separate chunks so stream decoding sees lines split across reads. One
//! request per connection (`Connection: close`); every read is bounded by a timeout.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A request as received.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: String,
    /// Path and query as on the request line.
    pub(crate) target: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Request {
    /// The first value of a header (names compared case-insensitively).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    /// Every value of a header, in order.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .collect()
    }

    pub(crate) fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(self.target.as_str(), |(path, _)| path)
    }

    pub(crate) fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, query)| query)
    }
}

/// What the handler answers.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    /// Sent as one body with `Content-Length`, or (more than one part) chunked with a pause between parts.
    pub(crate) parts: Vec<Vec<u8>>,
}

impl Reply {
    pub(crate) fn json(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            parts: vec![body.as_bytes().to_vec()],
        }
    }

    pub(crate) fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// An NDJSON body sent in the given pieces.
    pub(crate) fn ndjson(parts: &[&str]) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "application/x-ndjson".into())],
            parts: parts.iter().map(|part| part.as_bytes().to_vec()).collect(),
        }
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// The running server; stops when dropped.
pub(crate) struct FakeServer {
    pub(crate) addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    task: JoinHandle<()>,
}

impl FakeServer {
    pub(crate) async fn start(
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let recorded = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = Arc::clone(&handler);
                let recorded = Arc::clone(&recorded);
                tokio::spawn(async move {
                    // A client that goes away mid-request only ends its own connection.
                    let _ =
                        tokio::time::timeout(IO_TIMEOUT, serve(stream, handler, recorded)).await;
                });
            }
        });
        FakeServer {
            addr,
            requests,
            task,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("request log").clone()
    }

    pub(crate) fn only_request(&self) -> Request {
        let requests = self.requests();
        assert_eq!(
            requests.len(),
            1,
            "expected exactly one request, got {requests:?}"
        );
        requests.into_iter().next().expect("one request")
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    handler: Arc<Handler>,
    recorded: Arc<Mutex<Vec<Request>>>,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(pos) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break pos;
        }
        let mut chunk = [0u8; 4096];
        let n_bytes = stream.read(&mut chunk).await?;
        if n_bytes == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..n_bytes]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut words = request_line.split(' ');
    let method = words.next().unwrap_or_default().to_owned();
    let target = words.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n_bytes = stream.read(&mut chunk).await?;
        if n_bytes == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n_bytes]);
    }
    let request = Request {
        method,
        target,
        headers,
        body,
    };
    let reply = handler(&request);
    recorded.lock().expect("request log").push(request);

    let mut head = format!("HTTP/1.1 {} Fake\r\nconnection: close\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if reply.parts.len() == 1 {
        head.push_str(&format!("content-length: {}\r\n\r\n", reply.parts[0].len()));
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&reply.parts[0]).await?;
    } else {
        head.push_str("transfer-encoding: chunked\r\n\r\n");
        stream.write_all(head.as_bytes()).await?;
        for part in &reply.parts {
            stream
                .write_all(format!("{:x}\r\n", part.len()).as_bytes())
                .await?;
            stream.write_all(part).await?;
            stream.write_all(b"\r\n").await?;
            stream.flush().await?;
            // Separate reads on the client side, so lines really arrive split.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stream.write_all(b"0\r\n\r\n").await?;
    }
    stream.flush().await?;
    stream.shutdown().await
}
