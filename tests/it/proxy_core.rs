//! The proxy core against a real registry and a real client (skopeo).

use crate::common;

use common::images::{self, absolute, pseudo_random, sha256, ACCEPT_ALL};
use common::skopeo;
use common::{Image, Regate, Registry};

fn layout_ref(dir: &std::path::Path, tag: &str) -> String {
    format!("oci:{}:{tag}", dir.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pushes_and_pulls_through_tls_with_identical_digests() {
    let registry = Registry::start();
    let regate = Regate::start(&registry.url).await;
    let work = tempfile::tempdir().unwrap();
    let trust = regate.certs.trust_dir.clone();

    let image = Image::oci("round-trip", 300_000);
    let src = work.path().join("src");
    image.write_oci_layout(&src, "v1");
    let dest = format!("docker://{}/demo/app:v1", regate.host);
    let (s, d) = (layout_ref(&src, "v1"), dest.clone());
    tokio::task::spawn_blocking(move || skopeo::copy(&s, &d, &trust, false))
        .await
        .unwrap();

    // The manifest as the registry stores it, through regate, is byte-identical.
    let trust = regate.certs.trust_dir.clone();
    let raw = tokio::task::spawn_blocking(move || skopeo::inspect_raw(&dest, &trust))
        .await
        .unwrap();
    assert_eq!(
        sha256(raw.strip_suffix(b"\n").unwrap_or(&raw)),
        image.digest
    );

    // Pull back into a fresh layout: same manifest digest, every blob there.
    let back = work.path().join("back");
    let trust = regate.certs.trust_dir.clone();
    let (s, d) = (
        format!("docker://{}/demo/app:v1", regate.host),
        layout_ref(&back, "v1"),
    );
    tokio::task::spawn_blocking(move || skopeo::copy(&s, &d, &trust, false))
        .await
        .unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(back.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], image.digest.as_str());
    for b in image.all_blobs() {
        let path = back
            .join("blobs/sha256")
            .join(b.digest.trim_start_matches("sha256:"));
        assert_eq!(std::fs::read(path).unwrap(), b.bytes);
    }

    // The same digest is served directly by the registry: nothing was rewritten.
    let direct = reqwest::Client::new()
        .head(format!("{}/v2/demo/app/manifests/v1", registry.url))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(
        direct.headers()["docker-content-digest"],
        image.digest.as_str()
    );
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_arch_index_and_manifest_list_survive_with_every_child() {
    let registry = Registry::start();
    let regate = Regate::start(&registry.url).await;
    let client = regate.client();
    let work = tempfile::tempdir().unwrap();

    // An OCI index pushed by skopeo --all from a layout.
    let index = Image::oci_index("multi", &["amd64", "arm64", "s390x"]);
    let src = work.path().join("index");
    index.write_oci_layout(&src, "multi");
    let trust = regate.certs.trust_dir.clone();
    let (s, d) = (
        layout_ref(&src, "multi"),
        format!("docker://{}/demo/multi:latest", regate.host),
    );
    tokio::task::spawn_blocking(move || skopeo::copy(&s, &d, &trust, true))
        .await
        .unwrap();

    // A Docker manifest list pushed over HTTP, then copied by skopeo --all to another repository.
    let list = Image::docker_list("list", &["amd64", "arm64"]);
    list.push(&client, &regate.url, "demo/list", "latest").await;
    let trust = regate.certs.trust_dir.clone();
    let (s, d) = (
        format!("docker://{}/demo/list:latest", regate.host),
        format!("docker://{}/demo/list-copy:latest", regate.host),
    );
    tokio::task::spawn_blocking(move || skopeo::copy(&s, &d, &trust, true))
        .await
        .unwrap();

    for (repo, img) in [
        ("demo/multi", &index),
        ("demo/list", &list),
        ("demo/list-copy", &list),
    ] {
        let r = client
            .get(format!("{}/v2/{repo}/manifests/latest", regate.url))
            .header("accept", ACCEPT_ALL)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{repo}");
        assert_eq!(
            r.headers()["content-type"],
            img.media_type.as_str(),
            "{repo}"
        );
        assert_eq!(
            r.headers()["docker-content-digest"],
            img.digest.as_str(),
            "{repo}"
        );
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            img.manifest.as_slice(),
            "{repo}"
        );
        for child in &img.children {
            let r = client
                .get(format!(
                    "{}/v2/{repo}/manifests/{}",
                    regate.url, child.digest
                ))
                .header("accept", ACCEPT_ALL)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{repo} child {}", child.digest);
            assert_eq!(r.bytes().await.unwrap().as_ref(), child.manifest.as_slice());
            for b in &child.blobs {
                let r = client
                    .head(format!("{}/v2/{repo}/blobs/{}", regate.url, b.digest))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "{repo} blob {}", b.digest);
            }
        }
    }
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_schema2_keeps_its_digest_and_accept_passes_untouched() {
    let registry = Registry::start();
    let regate = Regate::start(&registry.url).await;
    let client = regate.client();
    let img = Image::docker("schema2", 5000);
    img.push(&client, &regate.url, "demo/docker", "v2").await;

    // skopeo reads the same bytes back.
    let trust = regate.certs.trust_dir.clone();
    let reference = format!("docker://{}/demo/docker:v2", regate.host);
    let raw = tokio::task::spawn_blocking(move || skopeo::inspect_raw(&reference, &trust))
        .await
        .unwrap();
    assert_eq!(sha256(raw.strip_suffix(b"\n").unwrap_or(&raw)), img.digest);

    // A client that asks only for schema2 gets it, digest intact.
    let r = client
        .head(format!("{}/v2/demo/docker/manifests/v2", regate.url))
        .header("accept", images::DOCKER_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], img.digest.as_str());
    assert_eq!(
        r.headers()["content-length"],
        img.manifest.len().to_string().as_str()
    );

    // Without Accept, the registry's own rewrite to schema1 shows through
    // unchanged (another digest): regate adds and removes no Accept header.
    let r = client
        .get(format!("{}/v2/demo/docker/manifests/v2", regate.url))
        .send()
        .await
        .unwrap();
    let direct = reqwest::Client::new()
        .get(format!("{}/v2/demo/docker/manifests/v2", registry.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        direct.headers()["content-type"]
    );
    assert_ne!(r.headers()["content-type"], images::DOCKER_MANIFEST);
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_range_get_and_cross_repo_mount() {
    let registry = Registry::start();
    let regate = Regate::start(&registry.url).await;
    let client = regate.client();
    let data = pseudo_random("chunks", 3 * 1024 * 1024 + 17);
    let digest = sha256(&data);

    let r = client
        .post(format!("{}/v2/demo/chunked/blobs/uploads/", regate.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut location = absolute(&regate.url, r.headers()["location"].to_str().unwrap());
    assert!(
        location.starts_with(&regate.url),
        "Location points at regate: {location}"
    );
    let mut offset = 0;
    for chunk in data.chunks(1024 * 1024 + 3) {
        let end = offset + chunk.len() - 1;
        let r = client
            .patch(&location)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{offset}-{end}"))
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            202,
            "PATCH {offset}-{end}: {}",
            r.text().await.unwrap()
        );
        assert_eq!(r.headers()["range"], format!("0-{end}").as_str());
        location = absolute(&regate.url, r.headers()["location"].to_str().unwrap());
        assert!(location.starts_with(&regate.url), "{location}");
        offset = end + 1;
    }
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = client
        .put(format!("{location}{sep}digest={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    // Range GET: 206 with exactly the requested bytes.
    let r = client
        .get(format!("{}/v2/demo/chunked/blobs/{digest}", regate.url))
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[1000..2000]);

    // Cross-repository mount: 201 and the blob is readable in the target.
    let r = client
        .post(format!(
            "{}/v2/demo/mounted/blobs/uploads/?mount={digest}&from=demo/chunked",
            regate.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .contains("/v2/demo/mounted/blobs/"));
    let r = client
        .head(format!("{}/v2/demo/mounted/blobs/{digest}", regate.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        data.len().to_string().as_str()
    );
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_locations_use_the_public_url_never_the_upstream() {
    let registry = Registry::start();
    let regate = Regate::start_with(&registry.url, "").await;
    let client = regate.client();
    // A client that tries to steer the registry's URLs elsewhere is ignored.
    let r = client
        .post(format!("{}/v2/demo/loc/blobs/uploads/", regate.url))
        .header("forwarded", "host=evil.example;proto=http")
        .header("x-forwarded-host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap();
    assert!(
        loc.starts_with(&format!("{}/v2/demo/loc/blobs/uploads/", regate.url)),
        "{loc}"
    );
    assert!(loc.contains("_state="), "{loc}");
    assert!(
        !loc.contains(&registry.url) && !loc.contains("evil"),
        "{loc}"
    );
    regate.stop().await;

    // With public_url configured, that is what clients are sent to.
    let regate = Regate::start_with(&registry.url, "").await;
    drop(regate);
    let certs = common::regate::TestCerts::new();
    let state = tempfile::tempdir().unwrap();
    let text = common::regate::config_toml(&registry.url, &certs, state.path(), "").replace(
        "[upstream]",
        "public_url = \"https://registry.example.com\"\n[upstream]",
    );
    let settings = regate::config::Settings::from_toml(&text, "t", std::iter::empty()).unwrap();
    let server = regate::server::start(settings).await.unwrap();
    let client = common::regate::client_trusting(&certs.files.ca_cert);
    let r = client
        .post(format!(
            "https://{}/v2/demo/loc/blobs/uploads/",
            server.tls_addr
        ))
        .send()
        .await
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap();
    assert!(
        loc.starts_with("https://registry.example.com/v2/demo/loc/blobs/uploads/"),
        "{loc}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_a_502_with_an_oci_body_that_never_names_the_upstream() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let upstream = format!("127.0.0.1:{port}");
    let regate = Regate::start(&format!("http://{upstream}")).await;
    let h1 = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&regate.certs.files.ca_cert).unwrap())
                .unwrap(),
        )
        .tls_built_in_root_certs(false)
        .no_proxy()
        .http1_only()
        .build()
        .unwrap();
    // Forwarded (proxy), and regate's own calls (tag list, tag delete).
    let requests = [
        (
            reqwest::Method::GET,
            "/v2/demo/x/manifests/latest".to_owned(),
        ),
        (
            reqwest::Method::HEAD,
            "/v2/demo/x/manifests/latest".to_owned(),
        ),
        (reqwest::Method::GET, "/v2/demo/x/tags/list".to_owned()),
        (
            reqwest::Method::DELETE,
            "/v2/demo/x/manifests/latest".to_owned(),
        ),
    ];
    for (client, version) in [
        (h1, reqwest::Version::HTTP_11),
        (regate.client(), reqwest::Version::HTTP_2),
    ] {
        for (method, path) in &requests {
            let what = format!("{method} {path} over {version:?}");
            let r = client
                .request(method.clone(), format!("{}{path}", regate.url))
                .send()
                .await
                .unwrap();
            assert_eq!(r.version(), version, "{what}");
            assert_eq!(r.status(), 502, "{what}");
            assert_eq!(
                r.headers()["docker-distribution-api-version"],
                "registry/2.0"
            );
            for (name, value) in r.headers() {
                let v = value.to_str().unwrap_or_default();
                assert!(
                    !v.contains(&upstream) && !v.contains(&format!(":{port}")),
                    "{what}: header {name}: {v}"
                );
            }
            let body = r.text().await.unwrap();
            if *method == reqwest::Method::HEAD {
                assert_eq!(body, "", "{what}");
                continue;
            }
            assert!(
                !body.contains(&upstream) && !body.contains(&format!(":{port}")),
                "{what}: {body}"
            );
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{what}");
            assert!(
                body["errors"][0]["message"]
                    .as_str()
                    .unwrap()
                    .contains("unreachable"),
                "{what}: {body}"
            );
        }
    }
    // Readiness (on the admin listener, for the operator) says so too.
    let r = reqwest::get(format!("{}/readyz", regate.admin_url))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_are_answered_by_regate_and_never_forwarded() {
    let registry = Registry::start();
    let regate = Regate::start(&registry.url).await;
    // curl --path-as-is sends the path exactly (reqwest would normalise dot segments).
    for (path, status, code) in [
        ("/v2/Upper/manifests/latest", 400, "NAME_INVALID"),
        ("/v2/a/../b/manifests/latest", 400, "NAME_INVALID"),
        ("/v2/%2e%2e/manifests/latest", 400, "NAME_INVALID"),
        ("/v2/a%2fb/manifests/latest", 400, "NAME_INVALID"),
        ("/v2/a/manifests/sha256:abc", 400, "DIGEST_INVALID"),
        // 2.8 reads these as tags and answers 500 with its storage path.
        ("/v2/a/manifests/sha999:abc", 400, "DIGEST_INVALID"),
        ("/v2/a/manifests/sha256+b64:abc", 400, "DIGEST_INVALID"),
        // A read by a reference that is no tag: no such manifest.
        ("/v2/a/manifests/-bad", 404, "MANIFEST_UNKNOWN"),
        ("/v2/a/nothing-here", 404, "UNSUPPORTED"),
        ("/etc/passwd", 404, "UNSUPPORTED"),
    ] {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--path-as-is", "--cacert"])
            .arg(&regate.certs.files.ca_cert)
            .args([
                "-D",
                "-",
                "-w",
                "\n%{http_code}",
                &format!("{}{path}", regate.url),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.ends_with(&format!("\n{status}")), "{path}: {text}");
        assert!(
            text.contains(&format!("\"code\":\"{code}\"")),
            "{path}: {text}"
        );
        assert!(
            text.to_ascii_lowercase()
                .contains("docker-distribution-api-version: registry/2.0"),
            "{path}: {text}"
        );
    }
    // None of them reached the registry.
    let metrics = reqwest::get(format!("{}/metrics", regate.admin_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("regate_upstream_response_seconds_count"),
        "{metrics}"
    );
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_are_served_and_metrics_count_by_route() {
    let registry = Registry::start();
    let regate = Regate::start(&registry.url).await;
    let client = regate.client();
    let r = client
        .get(format!("{}/v2/", regate.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let img = Image::oci("h2", 2000);
    img.push(&client, &regate.url, "demo/h2", "v1").await;
    let metrics = reqwest::get(format!("{}/metrics", regate.admin_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains("regate_requests_total{route=\"manifest\",method=\"PUT\",status=\"201\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("regate_body_bytes_total{route=\"upload\",direction=\"in\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("regate_upstream_response_seconds_bucket"),
        "{metrics}"
    );
    let ready = reqwest::get(format!("{}/readyz", regate.admin_url))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    regate.stop().await;
}

/// What a 502 keeps from the client goes to the operator's log: the
/// registry's address and the cause, with the route (the binary's log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_502_is_logged_for_the_operator_with_the_upstream_and_the_route() {
    use common::regate::{client_trusting, config_toml, RegateProcess, TestCerts};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let upstream = format!("127.0.0.1:{port}");
    let certs = TestCerts::new();
    let dir = tempfile::tempdir().unwrap();
    let config = config_toml(
        &format!("http://{upstream}"),
        &certs,
        &dir.path().join("state"),
        "",
    );
    let regate = RegateProcess::spawn(dir.path(), &config, &[]);
    let client = client_trusting(&certs.files.ca_cert);
    for path in ["/v2/demo/x/manifests/latest", "/v2/demo/x/tags/list"] {
        let r = client
            .get(format!("{}{path}", regate.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502, "{path}");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(&regate.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("answered 502")).collect();
        let proxied = lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains(&upstream) && l.contains("manifest"));
        let own = lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("tags_list"));
        if proxied && own {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
