//! A hostile HTTP/1.1 server for the adversarial catalogue: raw bytes on a tokio `TcpListener`, so a
//! test controls everything a real server could get wrong (lying `Content-Length`, resets, silence,
//! gzip bytes, redirects). Every request's target and headers are recorded; routes are keyed by
//! the exact request target (path and query).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server does with one request.
#[derive(Clone)]
pub enum Reply {
    /// These bytes exactly (status line, headers, body), then the connection is closed.
    Raw(Vec<u8>),
    /// These bytes, then a TCP reset (zero linger) instead of the rest.
    Reset(Vec<u8>),
    /// Reads the request and never answers (the connection stays open).
    Silent,
    /// `head` (status line and headers, without the blank line), then a one-byte chunk every
    /// `every`, forever: a body that never stalls long enough for an idle timeout.
    Trickle { head: String, every: Duration },
    /// `head` (status line and headers, without the blank line), then `len` bytes starting with
    /// `prefix` and padded with zeros, written in 64 KiB pieces so the server never holds the whole
    /// body: `chunked` frames it as chunks, otherwise it is delimited by closing the connection.
    Stream {
        head: String,
        prefix: Vec<u8>,
        len: usize,
        chunked: bool,
    },
    /// `head`, then `sent` bytes of body (`prefix`, padded with zeros), then silence with the
    /// connection open: a body stalled in mid-transfer.
    Stall {
        head: String,
        prefix: Vec<u8>,
        sent: usize,
    },
    /// The n-th request for the target gets the n-th reply; every later one the last.
    Sequence(Arc<AtomicUsize>, Vec<Reply>),
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Req {
    /// The request target (`/path?query`), or `<unparseable>` when the bytes were not HTTP.
    pub target: String,
    /// Header names lower-cased, values as sent.
    pub headers: Vec<(String, String)>,
}

impl Req {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A listening hostile server.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    log: Arc<Mutex<Vec<Req>>>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Binds `addr` (e.g. `127.0.0.1:0`, or `127.0.0.2:P` for "another host, same port").
    pub async fn bind(addr: &str) -> Server {
        let listener = TcpListener::bind(addr).await.expect("bind hostile server");
        let addr = listener.local_addr().unwrap();
        let routes: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let log: Arc<Mutex<Vec<Req>>> = Arc::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (routes, log, connections) = (routes.clone(), log.clone(), connections.clone());
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::SeqCst);
                    let (routes, log) = (routes.clone(), log.clone());
                    tokio::spawn(async move { serve(stream, routes, log).await });
                }
            }
        });
        Server {
            addr,
            routes,
            log,
            connections,
            task,
        }
    }

    /// `http://ip:port`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers `target` with `reply` from now on.
    pub fn set(&self, target: &str, reply: Reply) {
        self.routes
            .lock()
            .unwrap()
            .insert(target.to_string(), reply);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }

    /// Requests for one target.
    pub fn hits(&self, target: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.target == target)
            .count()
    }

    /// TCP connections accepted, whether or not they carried a request.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut stream: TcpStream,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    log: Arc<Mutex<Vec<Req>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break Some(i);
        }
        if buf.len() > 64 * 1024 {
            break None;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let req = head_end.and_then(|end| parse(&buf[..end])).unwrap_or(Req {
        target: "<unparseable>".into(),
        headers: Vec::new(),
    });
    let target = req.target.clone();
    log.lock().unwrap().push(req);
    if target == "<unparseable>" {
        return;
    }
    let reply = routes
        .lock()
        .unwrap()
        .get(&target)
        .cloned()
        .unwrap_or_else(|| Reply::Raw(status_only(404, "Not Found")));
    let reply = match reply {
        Reply::Sequence(n, replies) => {
            let i = n.fetch_add(1, Ordering::SeqCst).min(replies.len() - 1);
            replies[i].clone()
        }
        other => other,
    };
    match reply {
        Reply::Raw(bytes) => {
            let _ = stream.write_all(&bytes).await;
            let _ = stream.shutdown().await;
        }
        Reply::Reset(bytes) => {
            let _ = stream.write_all(&bytes).await;
            let _ = stream.flush().await;
            // Let the partial body reach the client before the RST overtakes it.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = stream.set_zero_linger();
            drop(stream);
        }
        Reply::Silent => {
            tokio::time::sleep(Duration::from_secs(300)).await;
            drop(stream);
        }
        Reply::Trickle { head, every } => {
            let _ = trickle(&mut stream, &head, every).await;
        }
        Reply::Stream {
            head,
            prefix,
            len,
            chunked,
        } => {
            let _ = stream_body(&mut stream, &head, &prefix, len, chunked).await;
            let _ = stream.shutdown().await;
        }
        Reply::Stall { head, prefix, sent } => {
            let _ = stream_body(&mut stream, &head, &prefix, sent, false).await;
            let _ = stream.flush().await;
            tokio::time::sleep(Duration::from_secs(300)).await;
            drop(stream);
        }
        Reply::Sequence(..) => unreachable!("resolved above"),
    }
}

async fn stream_body(
    stream: &mut TcpStream,
    head: &str,
    prefix: &[u8],
    len: usize,
    chunked: bool,
) -> std::io::Result<()> {
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(b"\r\n").await?;
    let mut sent = 0usize;
    let piece = 64 * 1024;
    while sent < len {
        let n = piece.min(len - sent);
        let mut block = vec![0u8; n];
        if sent < prefix.len() {
            let k = (prefix.len() - sent).min(n);
            block[..k].copy_from_slice(&prefix[sent..sent + k]);
        }
        if chunked {
            stream.write_all(format!("{n:x}\r\n").as_bytes()).await?;
            stream.write_all(&block).await?;
            stream.write_all(b"\r\n").await?;
        } else {
            stream.write_all(&block).await?;
        }
        sent += n;
    }
    if chunked {
        stream.write_all(b"0\r\n\r\n").await?;
    }
    stream.flush().await
}

async fn trickle(stream: &mut TcpStream, head: &str, every: Duration) -> std::io::Result<()> {
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(b"\r\n").await?;
    loop {
        stream.write_all(b"1\r\n\xFF\r\n").await?;
        stream.flush().await?;
        tokio::time::sleep(every).await;
    }
}

fn parse(head: &[u8]) -> Option<Req> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (_method, target, version) = (first.next()?, first.next()?, first.next()?);
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Req {
        target: target.to_string(),
        headers,
    })
}

/// A complete response with an honest `Content-Length`.
pub fn ok(content_type: &str, body: &[u8]) -> Vec<u8> {
    response(
        "200 OK",
        &[
            ("Content-Type", content_type),
            ("Content-Length", &body.len().to_string()),
        ],
        body,
    )
}

/// A 200 JSON response.
pub fn json(v: &serde_json::Value) -> Reply {
    Reply::Raw(ok("application/json", v.to_string().as_bytes()))
}

/// A 200 response with a JSON content type and these exact bytes.
pub fn json_bytes(body: &[u8]) -> Reply {
    Reply::Raw(ok("application/json", body))
}

/// Any response: status (`"302 Found"`), headers, body; `Connection: close` added.
pub fn response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A bodiless status.
pub fn status_only(code: u16, reason: &str) -> Vec<u8> {
    response(&format!("{code} {reason}"), &[("Content-Length", "0")], b"")
}

/// A redirect to `location`.
pub fn redirect(location: &str) -> Reply {
    Reply::Raw(response(
        "302 Found",
        &[("Location", location), ("Content-Length", "0")],
        b"",
    ))
}
