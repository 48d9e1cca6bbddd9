//! Stopping regate: requests in flight get `server.shutdown_timeout` to
//! finish; a connection still open after that is closed, not left running
//! behind a server that says it stopped.

use crate::common;

use std::time::{Duration, Instant};

use common::raw_http::connect;
use common::regate::{config_toml, TestCerts};
use common::Registry;
use regate::config::Settings;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_still_busy_after_the_shutdown_timeout_is_closed() {
    let registry = Registry::start();
    let certs = TestCerts::new();
    let state = tempfile::tempdir().unwrap();
    let text = config_toml(&registry.url, &certs, state.path(), "")
        .replace("shutdown_timeout_secs = 2\n", "shutdown_timeout_secs = 1\n");
    let settings = Settings::from_toml(&text, "test config", std::iter::empty()).unwrap();
    let server = regate::server::start(settings).await.unwrap();
    let host = server.tls_addr.to_string();

    // An upload that has sent its head and a few bytes of a large body: it
    // would hold the connection for the idle timeout (minutes).
    let mut conn = connect(&host, &certs.files.ca_cert).await;
    conn.write_all(
        b"PATCH /v2/slow/up/blobs/uploads/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nabc",
    )
    .await
    .unwrap();
    conn.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let stopping = Instant::now();
    server.shutdown().await;
    assert!(stopping.elapsed() < Duration::from_secs(5));
    // The connection is closed by now (an answer first is fine).
    let mut buf = [0u8; 4096];
    let closed = async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(2), closed)
            .await
            .is_ok(),
        "the connection outlived the shutdown"
    );
}
