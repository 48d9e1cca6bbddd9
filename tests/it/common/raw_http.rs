//! Raw HTTP/1.1 over TLS: send bytes exactly as given (paths no client would
//! normalise, non-UTF-8 header bytes, huge heads) and read the answer, or
//! hold a connection open half-sent (slowloris).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A response as read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `code` of the first OCI error, if the body is an OCI error.
    pub fn oci_code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        Some(v["errors"][0]["code"].as_str()?.to_owned())
    }
}

/// A TLS connector trusting only `ca` (ALPN http/1.1).
pub fn connector(ca: &Path) -> TlsConnector {
    connector_alpn(ca, b"http/1.1")
}

/// A TLS connector trusting `ca` that offers only `alpn`.
pub fn connector_alpn(ca: &Path, alpn: &[u8]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// A TLS connection to `host` (`127.0.0.1:PORT`).
pub async fn connect(host: &str, ca: &Path) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(host).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    connector(ca).connect(name, tcp).await.unwrap()
}

/// Sends `request` (complete, with `Connection: close`) and reads the answer to EOF.
pub async fn send(host: &str, ca: &Path, request: &[u8]) -> RawResponse {
    let tls = connect(host, ca).await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    // Written alongside the read: the server may answer (and close) before
    // it has read a large request, and the answer is what counts.
    let request = request.to_vec();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        let _ = wr.flush().await;
        wr
    });
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), read_all(&mut rd, &mut raw)).await;
    assert!(read.is_ok(), "no complete answer within 30 s");
    writer.abort();
    parse(&raw)
        .unwrap_or_else(|| panic!("not an HTTP response: {:?}", String::from_utf8_lossy(&raw)))
}

/// Reads until EOF or an error (a peer that closes without close_notify, or
/// resets after answering, ends the read; what arrived counts).
async fn read_all<R: tokio::io::AsyncRead + Unpin>(rd: &mut R, out: &mut Vec<u8>) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = rd.read(&mut buf).await {
        if n == 0 {
            return;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// A GET-style request with `headers` (each `Name: value` as raw bytes).
pub fn request(method: &str, target: &[u8], headers: &[&[u8]], body: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(method.as_bytes());
    r.push(b' ');
    r.extend_from_slice(target);
    r.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for h in headers {
        r.extend_from_slice(h);
        r.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() {
        r.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

pub fn parse(raw: &[u8]) -> Option<RawResponse> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = &raw[end + 4..];
    Some(RawResponse {
        status,
        headers,
        body: if chunked {
            dechunk(body)?
        } else {
            body.to_vec()
        },
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&b[..eol])
            .ok()?
            .split(';')
            .next()?
            .trim();
        let n = usize::from_str_radix(size, 16).ok()?;
        b = &b[eol + 2..];
        if n == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..n)?);
        b = b.get(n + 2..)?;
    }
}
