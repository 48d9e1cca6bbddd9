//! Answers regate makes itself (challenges, refusals, route errors, its own
//! endpoints, the admin listener), over HTTP/1.1 and HTTP/2, for GET and HEAD:
//! a HEAD gets the GET's status and headers with no body, on both protocols
//! (curl fails an HTTP/2 HEAD answer that carries DATA). And early refusals
//! of requests with a body leave the client able to read the answer and,
//! for bodies that are not large, to reuse the connection, as Go's client
//! and docker expect.

use crate::common;

use std::process::Command;

use common::auth::{basic_header, password, AuthFiles};
use common::images::ACCEPT_ALL;
use common::{Image, Regate, Registry};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn client(ca: &std::path::Path, http1: bool) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    let b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .no_proxy();
    let b = if http1 { b.http1_only() } else { b };
    b.build().unwrap()
}

/// `(status, headers, body)` of one request.
async fn answer(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    auth: Option<&str>,
    want_version: reqwest::Version,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut r = c.request(method.clone(), url).header("accept", ACCEPT_ALL);
    if let Some(a) = auth {
        r = r.header("authorization", a);
    }
    let resp = r
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e:?}"));
    assert_eq!(resp.version(), want_version, "{method} {url}");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("{method} {url} body: {e:?}"));
    (status, headers, body.to_vec())
}

/// curl's own verdict on a HEAD over HTTP/2 (it fails the stream on DATA).
fn curl_head_h2(url: &str, ca: &std::path::Path, auth: Option<&str>) -> (i32, String) {
    common::require_tool("curl");
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{http_version}",
        "--http2",
        "-I",
    ])
    .arg("--cacert")
    .arg(ca)
    .arg(url);
    if let Some(a) = auth {
        cmd.args(["-H", &format!("authorization: {a}")]);
    }
    let (code, out, err) = common::run_captured(cmd, None);
    (code, format!("{out} {err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regates_own_answers_to_head_have_the_get_headers_and_no_body_on_both_protocols() {
    let files = AuthFiles::new();
    let registry = Registry::start();
    let regate = Regate::start_with(&registry.url, &files.basic_toml("")).await;
    let ca = regate.certs.files.ca_cert.clone();
    let alice = basic_header("alice", &password("alice"));
    let bob = basic_header("bob", &password("bob"));
    let image = Image::oci("own-answers", 3000);
    let pusher = common::regate::client_sending(&ca, &alice);
    image.push(&pusher, &regate.url, "alice/app", "v1").await;

    let u = |p: &str| format!("{}{p}", regate.url);
    // (what, url, credentials, status regate answers a GET with)
    let cases: Vec<(&str, String, Option<&str>, u16)> = vec![
        ("the version check's challenge", u("/v2/"), None, 401),
        (
            "a wrong password",
            u("/v2/"),
            Some("Basic YWxpY2U6bm9wZQ=="),
            401,
        ),
        (
            "a refusal",
            u("/v2/alice/app/manifests/v1"),
            Some(&bob),
            403,
        ),
        (
            "a name that does not parse",
            u("/v2/Bad..Name/manifests/v1"),
            Some(&alice),
            400,
        ),
        (
            "a path outside the API",
            u("/v2/alice/app/nothing"),
            Some(&alice),
            404,
        ),
        ("the filtered catalog", u("/v2/_catalog"), Some(&alice), 200),
        (
            "the tag list",
            u("/v2/alice/app/tags/list"),
            Some(&alice),
            200,
        ),
        (
            "the deleted-tags list",
            u("/v2/alice/app/_regate/deleted"),
            Some(&alice),
            200,
        ),
    ];
    // The lists the API serves to GET only, as 2.8 does: a HEAD gets 405.
    let head_status = |what: &str, get: u16| {
        if what.ends_with("list") {
            405
        } else {
            get
        }
    };
    for (http1, version) in [
        (true, reqwest::Version::HTTP_11),
        (false, reqwest::Version::HTTP_2),
    ] {
        let c = client(&ca, http1);
        for (what, url, auth, status) in &cases {
            let (gs, gh, gbody) = answer(&c, reqwest::Method::GET, url, *auth, version).await;
            assert_eq!(
                gs,
                *status,
                "GET {what} ({version:?}): {}",
                String::from_utf8_lossy(&gbody)
            );
            let (hs, hh, hbody) = answer(&c, reqwest::Method::HEAD, url, *auth, version).await;
            assert!(
                hbody.is_empty(),
                "HEAD {what} ({version:?}) carried a body: {hbody:?}"
            );
            assert_eq!(hs, head_status(what, gs), "HEAD {what} ({version:?})");
            if hs != gs {
                assert!(
                    hh.contains_key("content-length"),
                    "HEAD {what} ({version:?})"
                );
                continue;
            }
            for h in [
                "content-type",
                "www-authenticate",
                "docker-distribution-api-version",
            ] {
                assert_eq!(gh.get(h), hh.get(h), "HEAD {what} ({version:?}): {h}");
            }
            assert_eq!(
                hh.get("content-length")
                    .map(|v| v.to_str().unwrap().to_owned()),
                Some(gbody.len().to_string()),
                "HEAD {what} ({version:?}): the length a GET has"
            );
        }
    }
    for (what, url, auth, status) in &cases {
        let (code, out) = curl_head_h2(url, &ca, *auth);
        assert_eq!(code, 0, "curl --http2 -I {what}: {out}");
        let want = format!("{} 2", head_status(what, *status));
        assert!(out.starts_with(&want), "curl --http2 -I {what}: {out}");
    }

    // The admin listener: plain HTTP/1.1 and HTTP/2 with prior knowledge.
    for (h2, version) in [
        (false, reqwest::Version::HTTP_11),
        (true, reqwest::Version::HTTP_2),
    ] {
        let b = reqwest::Client::builder().no_proxy();
        let c = if h2 {
            b.http2_prior_knowledge()
        } else {
            b.http1_only()
        }
        .build()
        .unwrap();
        for (path, status) in [("/healthz", 200), ("/metrics", 200), ("/admin/status", 401)] {
            let url = format!("{}{path}", regate.admin_url);
            let (gs, _, gbody) = answer(&c, reqwest::Method::GET, &url, None, version).await;
            assert_eq!(gs, status, "GET {path} ({version:?})");
            let (hs, hh, hbody) = answer(&c, reqwest::Method::HEAD, &url, None, version).await;
            assert_eq!(hs, gs, "HEAD {path} ({version:?})");
            assert!(hbody.is_empty(), "HEAD {path} ({version:?}) carried a body");
            if path != "/metrics" {
                assert_eq!(
                    hh["content-length"].to_str().unwrap(),
                    gbody.len().to_string(),
                    "HEAD {path} ({version:?})"
                );
            }
        }
    }
    regate.stop().await;
}

/// One refused PUT and one admitted one per round, on one pooled client, as
/// docker and Go clients do (a first try without credentials, then with).
async fn refused_then_admitted(
    c: &reqwest::Client,
    base: &str,
    auth: &str,
    size: usize,
    rounds: usize,
) {
    let body = vec![b'x'; size];
    for i in 0..rounds {
        let url = format!("{base}/v2/alice/app/manifests/drain-{size}-{i}");
        let r = c
            .put(&url)
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{size} bytes, round {i}, refused PUT: {e:?}"));
        assert_eq!(r.status(), 401, "{size} bytes, round {i}");
        let text = r.text().await.unwrap();
        assert!(text.contains("UNAUTHORIZED"), "{text}");
        let r = c
            .put(&url)
            .header("authorization", auth)
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{size} bytes, round {i}, admitted PUT: {e:?}"));
        // The registry reads the garbage and refuses it; regate refuses
        // what is over its manifest limit. Either is an answer, not an EOF.
        assert!(
            [400, 413].contains(&r.status().as_u16()),
            "{size} bytes, round {i}: {}",
            r.status()
        );
        r.bytes().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_refusals_of_requests_with_a_body_reach_a_client_that_reuses_connections() {
    let files = AuthFiles::new();
    let registry = Registry::start();
    let regate = Regate::start_with(&registry.url, &files.basic_toml("")).await;
    let ca = regate.certs.files.ca_cert.clone();
    let alice = basic_header("alice", &password("alice"));
    for http1 in [true, false] {
        let c = client(&ca, http1);
        for (size, rounds) in [(5_000, 20), (70_000, 20), (300_000, 20), (3_000_000, 5)] {
            refused_then_admitted(&c, &regate.url, &alice, size, rounds).await;
        }
    }
    regate.stop().await;
}

/// Writes a PUT head and `size` bytes of body, then reads the answer to its
/// end: the status line and whether the answer says `Connection: close`.
async fn raw_put(
    conn: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    size: usize,
) -> (String, bool) {
    let head = format!(
        "PUT /v2/alice/app/manifests/raw HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {size}\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    // The body goes out while the answer may already be on its way, as a
    // client's writer and reader do; a reset would fail the write or read.
    let body = vec![b'x'; size];
    let (mut rd, mut wr) = tokio::io::split(conn);
    let writer = async {
        wr.write_all(&body).await.unwrap();
        wr.flush().await.unwrap();
    };
    let reader = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = rd
                .read(&mut chunk)
                .await
                .expect("the answer was cut by a reset");
            assert!(n > 0, "closed before the answer was complete: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(r) = common::raw_http::parse(&buf) {
                let length = r.header("content-length").and_then(|v| v.parse().ok());
                if length.is_some_and(|n: usize| r.body.len() >= n) {
                    return r;
                }
            }
        }
    };
    let ((), r) = tokio::join!(writer, reader);
    let close = r
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    (format!("{}", r.status), close)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_small_body_keeps_the_connection_and_a_large_one_is_read_then_closed() {
    let files = AuthFiles::new();
    let registry = Registry::start();
    let regate = Regate::start_with(&registry.url, &files.basic_toml("")).await;
    let ca = regate.certs.files.ca_cert.clone();
    // Small: the body is read to its end and the same connection serves the
    // next three requests.
    let mut conn = common::raw_http::connect(&regate.host, &ca).await;
    for _ in 0..3 {
        let (status, close) = raw_put(&mut conn, 200_000).await;
        assert_eq!(status, "401");
        assert!(!close, "a 200 kB body closed the connection");
    }
    // Large: the answer says so, and arrives whole while the body is sent.
    let mut conn = common::raw_http::connect(&regate.host, &ca).await;
    let (status, close) = raw_put(&mut conn, 8_000_000).await;
    assert_eq!(status, "401");
    assert!(close, "an 8 MB refused body left the connection open");
    regate.stop().await;
}

/// A registry that accepts connections and never answers: regate's own
/// calls (tag delete, tag list) stop at `upstream.response_timeout` with a
/// 504 OCI error, as forwarded requests do, over HTTP/1.1 and HTTP/2 (HEAD
/// of a tag list is refused before any call: 405).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regates_own_calls_to_a_silent_registry_get_504_at_the_response_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    let regate = Regate::start_with_env(
        &upstream,
        "",
        vec![("REGATE_UPSTREAM__RESPONSE_TIMEOUT".into(), "1s".into())],
    )
    .await;
    let ca = regate.certs.files.ca_cert.clone();
    let started = std::time::Instant::now();
    let mut calls = Vec::new();
    for http1 in [true, false] {
        let version = if http1 {
            reqwest::Version::HTTP_11
        } else {
            reqwest::Version::HTTP_2
        };
        for (method, path) in [
            (reqwest::Method::DELETE, "/v2/silent/app/manifests/v1"),
            (reqwest::Method::GET, "/v2/silent/app/tags/list"),
        ] {
            let (c, url) = (client(&ca, http1), format!("{}{path}", regate.url));
            calls.push(tokio::spawn(async move {
                let (status, headers, body) = answer(&c, method.clone(), &url, None, version).await;
                (method, version, status, headers, body)
            }));
        }
    }
    for call in calls {
        let (method, version, status, headers, body) = call.await.unwrap();
        assert_eq!(status, 504, "{method} {version:?}");
        assert_eq!(headers["docker-distribution-api-version"], "registry/2.0");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errors"][0]["code"], "UNAVAILABLE", "{v}");
        let message = v["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("no answer"), "{message}");
        assert!(!message.contains("127.0.0.1"), "{message}");
    }
    // Concurrently, each after about the 1 s timeout (not a fixed 120 s).
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    regate.stop().await;
}
