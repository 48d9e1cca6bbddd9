//! `server.max_connections`: at the limit a new connection waits in the
//! kernel's accept queue (its TLS handshake does not start) until one closes,
//! then it is served; the admin listener keeps answering meanwhile.

use crate::common;

use std::time::Duration;

use common::raw_http::{self, connect};
use common::regate::{config_toml, TestCerts};
use common::Registry;
use regate::config::Settings;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_limit_new_connections_wait_until_one_closes() {
    let registry = Registry::start();
    let certs = TestCerts::new();
    let state = tempfile::tempdir().unwrap();
    let text = config_toml(&registry.url, &certs, state.path(), "").replace(
        "shutdown_timeout_secs = 2\n",
        "shutdown_timeout_secs = 2\nmax_connections = 2\n",
    );
    let settings = Settings::from_toml(&text, "test config", std::iter::empty()).unwrap();
    let server = regate::server::start(settings).await.unwrap();
    let host = server.tls_addr.to_string();
    let plain = server.plain_addr.unwrap().to_string();
    let admin = format!("http://{}", server.admin_addr.unwrap());
    let ca = certs.files.ca_cert.clone();

    // Two connections held open (TLS done, no request): the limit, shared by
    // the TLS and plain listeners.
    let first = connect(&host, &ca).await;
    let mut second = tokio::net::TcpStream::connect(&plain).await.unwrap();
    second
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A third is not accepted: its handshake stays pending.
    let (h, c) = (host.clone(), ca.clone());
    let third = tokio::spawn(async move { connect(&h, &c).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served at max_connections = 2"
    );

    // The admin listener has its own budget.
    let health = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{admin}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // One closes: the third is accepted.
    drop(first);
    let third = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("accepted once a connection closed")
        .unwrap();
    // The third closes too: a fourth is served at once (the freed permit must
    // not sit with the plain listener, where no connection comes; the held
    // plain connection would free one only after its 30 s header timeout).
    drop(third);
    let fourth = tokio::time::timeout(
        Duration::from_secs(5),
        raw_http::send(
            &host,
            &ca,
            b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        ),
    )
    .await
    .expect("a fourth connection served once the third closed");
    assert_eq!(fourth.status, 200);
    drop(second);
    server.shutdown().await;
}
