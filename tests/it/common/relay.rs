//! A TCP relay between regate and the registry that records the request line
//! of every HTTP/1.1 request passing through it, so a test can tell what
//! regate forwarded and what it stopped. Bytes pass unchanged both ways; the
//! request direction is parsed as it goes (head, then a `Content-Length` or
//! chunked body), never trusted to stay parseable: anything odd is recorded
//! as `<unparsed>` and the rest of that connection is no longer read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

pub struct Relay {
    /// `http://127.0.0.1:PORT`: give this to regate as `upstream.url`.
    pub url: String,
    seen: Arc<Mutex<Vec<String>>>,
    down: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Relays to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Relay {
        Self::start_with_delay(upstream, std::time::Duration::ZERO).await
    }

    /// Relays to `upstream`, holding every request `delay` before passing it
    /// on (a slow registry).
    pub async fn start_with_delay(upstream: &str, delay: std::time::Duration) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(AtomicBool::new(false));
        let upstream = upstream.to_owned();
        let (log, is_down) = (Arc::clone(&seen), Arc::clone(&down));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if is_down.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let upstream = upstream.clone();
                let (log, is_down) = (Arc::clone(&log), Arc::clone(&is_down));
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    relay(client, server, log, delay, is_down).await;
                });
            }
        });
        Relay {
            url,
            seen,
            down,
            task,
        }
    }

    /// `METHOD /path?query` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }

    /// Down: every connection is cut at its next request and new ones are
    /// closed at once (the registry unreachable); up again: relays as before.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    log: Arc<Mutex<Vec<String>>>,
    delay: std::time::Duration,
    down: Arc<AtomicBool>,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let back = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
    });
    let mut parser = Parser::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match cr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let lines = parser.feed(&buf[..n]);
        if !lines.is_empty() && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if down.load(Ordering::SeqCst) {
            back.abort();
            return;
        }
        log.lock().unwrap().extend(lines);
        if sw.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = sw.shutdown().await;
    let _ = back.await;
}

#[derive(Default)]
enum State {
    #[default]
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    Trailers,
    Lost,
}

#[derive(Default)]
struct Parser {
    state: State,
    pending: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Parser {
    /// Consumes `bytes`; returns the request lines completed by them.
    fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        self.pending.extend_from_slice(bytes);
        loop {
            match self.state {
                State::Lost => {
                    self.pending.clear();
                    return out;
                }
                State::Head => {
                    let Some(end) = find(&self.pending, b"\r\n\r\n") else {
                        return out;
                    };
                    let head = String::from_utf8_lossy(&self.pending[..end]).into_owned();
                    self.pending.drain(..end + 4);
                    let mut lines = head.split("\r\n");
                    let first: Vec<&str> = lines.next().unwrap_or("").split(' ').collect();
                    if first.len() != 3 {
                        out.push("<unparsed>".into());
                        self.state = State::Lost;
                        continue;
                    }
                    out.push(format!("{} {}", first[0], first[1]));
                    self.state = State::Body(0);
                    for l in lines {
                        let (k, v) = l.split_once(':').unwrap_or((l, ""));
                        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                        if k == "content-length" {
                            self.state = v.parse().map(State::Body).unwrap_or(State::Lost);
                        } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                            self.state = State::ChunkSize;
                        }
                    }
                }
                State::Body(n) => {
                    let take = (n as usize).min(self.pending.len());
                    self.pending.drain(..take);
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Body(left)
                    };
                    if left > 0 {
                        return out;
                    }
                }
                State::ChunkSize => {
                    let Some(end) = find(&self.pending, b"\r\n") else {
                        return out;
                    };
                    let line = String::from_utf8_lossy(&self.pending[..end]).into_owned();
                    self.pending.drain(..end + 2);
                    let size = line.split(';').next().unwrap_or("").trim();
                    self.state = match u64::from_str_radix(size, 16) {
                        Ok(0) => State::Trailers,
                        Ok(n) => State::ChunkData(n + 2),
                        Err(_) => State::Lost,
                    };
                }
                State::ChunkData(n) => {
                    let take = (n as usize).min(self.pending.len());
                    self.pending.drain(..take);
                    let left = n - take as u64;
                    if left > 0 {
                        self.state = State::ChunkData(left);
                        return out;
                    }
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    let Some(end) = find(&self.pending, b"\r\n") else {
                        return out;
                    };
                    self.pending.drain(..end + 2);
                    if end == 0 {
                        self.state = State::Head;
                    }
                }
            }
        }
    }
}
