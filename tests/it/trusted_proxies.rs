//! regate behind a load balancer (`server.trusted_proxies`): the client
//! address a trusted proxy names is the one failed-login limits and the
//! audit log use, and the scheme it names is the one upload URLs use. The
//! test client on 127.0.0.1 plays the load balancer.

use crate::common;

use common::auth::{basic_header, password, AuthFiles};
use common::regate::{client_trusting, config_toml, TestCerts};
use common::Registry;
use regate::server::RunningServer;

struct Behind {
    server: Option<RunningServer>,
    certs: TestCerts,
    tls_url: String,
    plain_url: String,
    _state: tempfile::TempDir,
}

/// regate with `server.trusted_proxies = [trusted]` and `extra` sections.
async fn start(upstream: &str, trusted: &str, extra: &str) -> Behind {
    let certs = TestCerts::new();
    let state = tempfile::tempdir().unwrap();
    let text = config_toml(upstream, &certs, state.path(), extra).replacen(
        "[server]\n",
        &format!("[server]\ntrusted_proxies = [{trusted:?}]\n"),
        1,
    );
    let settings = regate::config::Settings::from_toml(&text, "test", std::iter::empty()).unwrap();
    let server = regate::server::start(settings).await.unwrap();
    Behind {
        tls_url: format!("https://{}", server.tls_addr),
        plain_url: format!("http://{}", server.plain_addr.unwrap()),
        server: Some(server),
        certs,
        _state: state,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_failed_logins_lock_out_only_the_client_that_made_them() {
    let registry = Registry::start();
    let files = AuthFiles::new();
    let regate = start(
        &registry.url,
        "127.0.0.1",
        &files.basic_toml("max_failed_logins = 3"),
    )
    .await;
    let h2 = client_trusting(&regate.certs.files.ca_cert);
    let h1 = reqwest::Client::builder().http1_only().build().unwrap();
    // HTTP/2 on the TLS listener, HTTP/1.1 on the plain one, GET and HEAD.
    let send = |via: usize, head: bool, xff: &str, user: &str, pw: &str| {
        let (c, base) = match via {
            0 => (&h2, &regate.tls_url),
            _ => (&h1, &regate.plain_url),
        };
        let url = format!("{base}/v2/alice/app/tags/list");
        let req = if head { c.head(url) } else { c.get(url) };
        let req = req
            .header("x-forwarded-for", xff)
            .header("authorization", basic_header(user, pw));
        async move { req.send().await.unwrap() }
    };
    for i in 0..3 {
        let guess = format!("wrong-{i}");
        let r = send(i % 2, i == 1, "203.0.113.5", "bob", &guess).await;
        assert_eq!(r.status(), 401);
    }
    let r = send(0, false, "203.0.113.5", "bob", &password("bob")).await;
    assert_eq!(r.status(), 429, "the client that failed is limited");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let r = send(1, true, "203.0.113.5", "bob", &password("bob")).await;
    assert_eq!(r.status(), 429);
    // A client cannot leave its address behind by sending its own header:
    // the balancer appends the real one, and the rightmost untrusted hop counts.
    let r = send(
        1,
        false,
        "198.51.100.1, 203.0.113.5",
        "bob",
        &password("bob"),
    )
    .await;
    assert_eq!(r.status(), 429);
    // Everybody else behind the same balancer logs in.
    for (via, head) in [(0, false), (1, false), (0, true), (1, true)] {
        let r = send(via, head, "203.0.113.6", "bob", &password("bob")).await;
        assert_ne!(r.status(), 429, "via {via} head {head}");
        assert_ne!(r.status(), 401);
    }
    // The audit log names the client, not the balancer.
    let lines = files.audit_lines();
    let failures: Vec<_> = lines
        .iter()
        .filter(|l| l["event"] == "auth_failure")
        .collect();
    assert_eq!(failures.len(), 3, "{lines:?}");
    assert!(
        failures.iter().all(|l| l["client"] == "203.0.113.5"),
        "{failures:?}"
    );
    regate.server.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_names_the_scheme_for_upload_urls_on_the_plain_listener() {
    let registry = Registry::start();
    let admin = basic_header("admin", &password("admin"));
    let files = AuthFiles::new();
    for (trusted, proto, want) in [
        ("127.0.0.1", Some("https"), "https://"),
        ("127.0.0.1", None, "http://"),
        // From a peer that is not trusted the header means nothing.
        ("10.9.9.9", Some("https"), "http://"),
    ] {
        let regate = start(&registry.url, trusted, &files.basic_toml("")).await;
        let mut req = reqwest::Client::new()
            .post(format!("{}/v2/p/app/blobs/uploads/", regate.plain_url))
            .header("authorization", &admin);
        if let Some(p) = proto {
            req = req.header("x-forwarded-proto", p);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 202);
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        let host = regate.plain_url.trim_start_matches("http://");
        assert_eq!(
            location.split_once("://").map(|(s, _)| format!("{s}://")),
            Some(want.to_owned()),
            "{trusted} {proto:?}: {location}"
        );
        assert!(location.contains(host), "{location}");
        regate.server.unwrap().shutdown().await;
    }
}
