//! Connections without requests: an HTTP/2 connection (TLS with ALPN h2, or
//! h2c on the plain listener) that has had no request in progress for
//! `server.header_read_timeout` is closed with GOAWAY, as hyper closes an
//! idle HTTP/1.1 keep-alive connection; a request in progress (here a
//! download read slowly) keeps its connection, however long it takes.

use crate::common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::raw_http;
use common::regate::{config_toml, TestCerts};
use common::{Image, Registry};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use regate::config::Settings;

const IDLE: Duration = Duration::from_secs(2);

struct Server {
    _running: regate::server::RunningServer,
    _registry: Registry,
    _certs: TestCerts,
    _state: tempfile::TempDir,
    tls: String,
    plain: String,
    ca: std::path::PathBuf,
    url: String,
}

async fn start() -> Server {
    let registry = Registry::start();
    let certs = TestCerts::new();
    let state = tempfile::tempdir().unwrap();
    let text = config_toml(&registry.url, &certs, state.path(), "").replace(
        "shutdown_timeout_secs = 2\n",
        "shutdown_timeout_secs = 2\nheader_read_timeout = \"2s\"\n",
    );
    let settings = Settings::from_toml(&text, "test config", std::iter::empty()).unwrap();
    let server = regate::server::start(settings).await.unwrap();
    Server {
        tls: server.tls_addr.to_string(),
        plain: server.plain_addr.unwrap().to_string(),
        ca: certs.files.ca_cert.clone(),
        url: format!("https://{}", server.tls_addr),
        _running: server,
        _registry: registry,
        _certs: certs,
        _state: state,
    }
}

type Sender = http2::SendRequest<Empty<Bytes>>;

/// An HTTP/2 connection to `server`, over TLS or h2c; the task driving it
/// ends when the connection does.
async fn h2(server: &Server, tls: bool) -> (Sender, tokio::task::JoinHandle<()>) {
    let exec = TokioExecutor::new();
    let (sender, conn) = if tls {
        let tcp = tokio::net::TcpStream::connect(&server.tls).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let stream = raw_http::connector_alpn(&server.ca, b"h2")
            .connect(name, tcp)
            .await
            .unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (s, c) = http2::handshake(exec, TokioIo::new(stream)).await.unwrap();
        (s, tokio::spawn(async move { drop(c.await) }))
    } else {
        let tcp = tokio::net::TcpStream::connect(&server.plain).await.unwrap();
        let (s, c) = http2::handshake(exec, TokioIo::new(tcp)).await.unwrap();
        (s, tokio::spawn(async move { drop(c.await) }))
    };
    (sender, conn)
}

async fn get(sender: &mut Sender, path: &str) -> hyper::Response<hyper::body::Incoming> {
    sender.ready().await.unwrap();
    let req = hyper::Request::get(format!("http://127.0.0.1{path}"))
        .body(Empty::new())
        .unwrap();
    sender.send_request(req).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_without_requests_is_closed_after_the_header_read_timeout() {
    let server = start().await;
    for tls in [true, false] {
        let (mut sender, conn) = h2(&server, tls).await;
        let r = get(&mut sender, "/v2/").await;
        assert_eq!(r.status(), 200);
        r.into_body().collect().await.unwrap();
        let answered = Instant::now();
        tokio::time::timeout(IDLE * 4, conn)
            .await
            .unwrap_or_else(|_| panic!("an idle HTTP/2 connection (tls: {tls}) stayed open"))
            .unwrap();
        let after = answered.elapsed();
        assert!(
            after >= IDLE - Duration::from_millis(100),
            "closed {after:?} after its last answer, before the idle bound"
        );
        assert!(
            sender.ready().await.is_err(),
            "the closed connection takes requests"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_progress_keeps_its_http2_connection_past_the_bound() {
    let server = start().await;
    let img = Image::oci("idle-slow-download", 4 * 1024 * 1024);
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&server.ca).unwrap()).unwrap(),
        )
        .no_proxy()
        .build()
        .unwrap();
    img.push(&client, &server.url, "idle", "v1").await;
    let layer = img
        .blobs
        .iter()
        .max_by_key(|b| b.bytes.len())
        .unwrap()
        .clone();
    for tls in [true, false] {
        let (mut sender, conn) = h2(&server, tls).await;
        let r = get(&mut sender, &format!("/v2/idle/blobs/{}", layer.digest)).await;
        assert_eq!(r.status(), 200);
        // Read slowly: the download lasts twice the idle bound (flow
        // control holds regate meanwhile).
        let started = Instant::now();
        let mut body = r.into_body();
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                got.extend_from_slice(&data);
            }
            if started.elapsed() < IDLE * 2 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        assert!(started.elapsed() >= IDLE * 2);
        assert_eq!(got.len(), layer.bytes.len());
        assert!(got == layer.bytes, "the slow download arrived whole");
        // No GOAWAY came meanwhile: the connection takes the next request.
        let r = get(&mut sender, "/v2/").await;
        assert_eq!(r.status(), 200, "tls: {tls}");
        drop(sender);
        conn.abort();
    }
}
