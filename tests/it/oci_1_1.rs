//! OCI distribution 1.1 through regate in front of 2.8: referrers API,
//! `OCI-Subject`, strict chunked uploads, cross-repo mount fallback, reindex.

use crate::common;

use common::images::{absolute, pseudo_random, sha256};
use common::{Image, Regate, Registry};

const SIG: &str = "application/vnd.example.signature";
const SBOM: &str = "application/vnd.example.sbom";

/// PUT an artifact by digest; returns the `OCI-Subject` header.
async fn put_artifact(regate: &Regate, repo: &str, art: &Image) -> Option<String> {
    let client = regate.client();
    for b in art.all_blobs() {
        common::images::push_blob(&client, &regate.url, repo, &b.bytes).await;
    }
    let r = client
        .put(format!("{}/v2/{repo}/manifests/{}", regate.url, art.digest))
        .header("content-type", &art.media_type)
        .body(art.manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.headers()
        .get("oci-subject")
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn referrers(
    regate: &Regate,
    repo: &str,
    digest: &str,
    query: &str,
) -> (serde_json::Value, Option<String>) {
    let r = regate
        .client()
        .get(format!(
            "{}/v2/{repo}/referrers/{digest}{query}",
            regate.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.oci.image.index.v1+json"
    );
    let filters = r
        .headers()
        .get("oci-filters-applied")
        .map(|v| v.to_str().unwrap().to_owned());
    (r.json().await.unwrap(), filters)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_api_subject_header_filter_and_delete() {
    let registry = Registry::start();
    let regate = Regate::start(&registry.url).await;
    let image = Image::oci("subject", 2000);
    image
        .push(&regate.client(), &regate.url, "ref/app", "v1")
        .await;
    let sig = Image::artifact_for("sig", &image, SIG);
    let sbom = Image::artifact_for("sbom", &image, SBOM);
    assert_eq!(
        put_artifact(&regate, "ref/app", &sig).await.as_deref(),
        Some(image.digest.as_str())
    );
    assert_eq!(
        put_artifact(&regate, "ref/app", &sbom).await.as_deref(),
        Some(image.digest.as_str())
    );

    let (index, filters) = referrers(&regate, "ref/app", &image.digest, "").await;
    assert_eq!(filters, None);
    let mut got: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["digest"].as_str().unwrap().to_owned(),
                d["artifactType"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        (sig.digest.clone(), SIG.to_owned()),
        (sbom.digest.clone(), SBOM.to_owned()),
    ];
    want.sort();
    assert_eq!(got, want);
    assert!(index["manifests"][0]["size"].as_u64().is_some());

    let (index, filters) = referrers(
        &regate,
        "ref/app",
        &image.digest,
        "?artifactType=application%2Fvnd.example.sbom",
    )
    .await;
    assert_eq!(filters.as_deref(), Some("artifactType"));
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(index["manifests"][0]["digest"], sbom.digest.as_str());

    // Unknown subject: 200 with an empty list. Other repository: nothing.
    let (index, _) = referrers(&regate, "ref/app", &sha256(b"nothing"), "").await;
    assert_eq!(index["manifests"], serde_json::json!([]));

    // A deleted referrer disappears.
    let r = regate
        .client()
        .delete(format!(
            "{}/v2/ref/app/manifests/{}",
            regate.url, sig.digest
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let (index, _) = referrers(&regate, "ref/app", &image.digest, "").await;
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);

    // Deleted behind regate's back (directly on the registry): never claimed.
    let direct = reqwest::Client::new();
    let r = direct
        .delete(format!(
            "{}/v2/ref/app/manifests/{}",
            registry.url, sbom.digest
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let (index, _) = referrers(&regate, "ref/app", &image.digest, "").await;
    assert_eq!(index["manifests"], serde_json::json!([]));
    regate.stop().await;
}

/// A session regate does not remember (evicted past its bound, expired, or
/// started before a restart) is checked against the registry's own offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_regate_forgot_is_still_checked_against_the_registry() {
    let registry = Registry::start();
    let regate = Regate::start(&registry.url).await;
    let data = pseudo_random("forgot", 200);
    let digest = sha256(&data);
    let client = regate.client();
    let r = client
        .post(format!("{}/v2/strict/forgot/blobs/uploads/", regate.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let path = r.headers()["location"].to_str().unwrap().to_owned();
    let r = client
        .patch(absolute(&regate.url, &path))
        .header("content-range", "0-99")
        .body(data[..100].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let path = r.headers()["location"].to_str().unwrap().to_owned();
    let path = path[path.find("/v2/").unwrap()..].to_owned();

    // A new process remembers nothing of the session.
    let regate = regate.restart().await;
    let client = regate.client();
    let location = format!("{}{path}", regate.url);
    let r = client
        .patch(&location)
        .header("content-range", "0-99")
        .body(data[..100].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416, "a retried chunk");
    assert_eq!(r.headers()["range"], "0-99");
    let r = client
        .patch(&location)
        .header("content-range", "100-199")
        .body(data[100..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = absolute(&regate.url, r.headers()["location"].to_str().unwrap());
    let r = client
        .put(format!("{location}&digest={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_chunks_get_416_and_the_upload_still_completes() {
    let registry = Registry::start();
    let regate = Regate::start(&registry.url).await;
    let client = regate.client();
    let data = pseudo_random("strict", 300);
    let digest = sha256(&data);
    let r = client
        .post(format!("{}/v2/strict/up/blobs/uploads/", regate.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut location = absolute(&regate.url, r.headers()["location"].to_str().unwrap());
    let patch = |loc: String, range: &str, bytes: &[u8]| {
        client
            .patch(loc)
            .header("content-type", "application/octet-stream")
            .header("content-range", range)
            .body(bytes.to_vec())
            .send()
    };
    let r = patch(location.clone(), "0-99", &data[..100]).await.unwrap();
    assert_eq!(r.status(), 202);
    location = absolute(&regate.url, r.headers()["location"].to_str().unwrap());

    // A gap, then a retry of a chunk already received: both 416, session intact.
    for (range, bytes) in [("200-299", &data[200..]), ("0-99", &data[..100])] {
        let r = patch(location.clone(), range, bytes).await.unwrap();
        assert_eq!(r.status(), 416, "{range}");
        assert_eq!(r.headers()["range"], "0-99", "{range}");
        assert!(r.headers().contains_key("location"));
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "BLOB_UPLOAD_INVALID");
    }
    let status = client.get(&location).send().await.unwrap();
    assert_eq!(status.status(), 204);
    assert_eq!(status.headers()["range"], "0-99");

    let r = patch(location.clone(), "100-299", &data[100..])
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    location = absolute(&regate.url, r.headers()["location"].to_str().unwrap());
    let r = client
        .put(format!("{location}&digest={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let got = client
        .get(format!("{}/v2/strict/up/blobs/{digest}", regate.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), data.as_slice());

    // Mounting an unknown blob falls back to a normal upload session.
    let r = client
        .post(format!(
            "{}/v2/strict/other/blobs/uploads/?mount={}&from=strict/up",
            regate.url,
            sha256(b"unknown")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .contains("/v2/strict/other/blobs/uploads/"));
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_rebuilds_the_same_list_into_an_empty_state() {
    let registry = Registry::start();
    let regate = Regate::start(&registry.url).await;
    let image = Image::oci_index("reindex", &["amd64", "arm64"]);
    image
        .push(&regate.client(), &regate.url, "ri/app", "v1")
        .await;
    for (seed, t) in [("a", SIG), ("b", SBOM)] {
        put_artifact(&regate, "ri/app", &Image::artifact_for(seed, &image, t)).await;
    }
    let (before, _) = referrers(&regate, "ri/app", &image.digest, "").await;
    assert_eq!(before["manifests"].as_array().unwrap().len(), 2);
    regate.stop().await;

    // A new regate with an empty state database knows nothing ...
    let regate = Regate::start_with(
        &registry.url,
        &format!(
            "[gc]\nstorage_root = {:?}\n",
            registry.storage.display().to_string()
        ),
    )
    .await;
    let (empty, _) = referrers(&regate, "ri/app", &image.digest, "").await;
    assert_eq!(empty["manifests"], serde_json::json!([]));
    // ... until `regate reindex` reads the storage.
    let config = common::regate::config_toml(
        &registry.url,
        &regate.certs,
        regate.state_dir.path(),
        &format!(
            "[gc]\nstorage_root = {:?}\n",
            registry.storage.display().to_string()
        ),
    );
    let cfg = regate.state_dir.path().join("reindex.toml");
    std::fs::write(&cfg, config).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_regate"))
            .arg("reindex")
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 referrers indexed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (after, _) = referrers(&regate, "ri/app", &image.digest, "").await;
    assert_eq!(after, before);
    regate.stop().await;
}

/// `regate reindex` through the registry API (no storage visible) uses the
/// server's upstream client: against a registry with its own auth it sends
/// the `[upstream] username` credentials (it used to get 401).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_through_the_api_sends_the_upstream_credentials() {
    use common::auth::{password, GuardedRegistry};
    let registry = GuardedRegistry::start(&["regate-upstream"]);
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("upstream-password");
    std::fs::write(&pw_file, format!("{}\n", password("regate-upstream"))).unwrap();
    let creds = format!(
        "username = \"regate-upstream\"\npassword_file = {:?}\n",
        pw_file.display().to_string()
    );
    let env = vec![
        ("REGATE_UPSTREAM__USERNAME".into(), "regate-upstream".into()),
        (
            "REGATE_UPSTREAM__PASSWORD_FILE".into(),
            pw_file.display().to_string(),
        ),
    ];
    let regate = Regate::start_with_env(&registry.url, "", env).await;
    let image = Image::oci("reindex-guarded", 1_000);
    image
        .push(&regate.client(), &regate.url, "ri/guarded", "v1")
        .await;
    // Tagged: the API walk finds manifests through their tags.
    Image::artifact_for("g", &image, SIG)
        .push(&regate.client(), &regate.url, "ri/guarded", "sig")
        .await;
    regate.stop().await;
    let (state, certs) = (
        tempfile::tempdir().unwrap(),
        common::regate::TestCerts::new(),
    );
    let config = common::regate::config_toml(&registry.url, &certs, state.path(), "")
        .replace("[upstream]\n", &format!("[upstream]\n{creds}"));
    let cfg = dir.path().join("reindex.toml");
    std::fs::write(&cfg, config).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_regate"))
            .arg("reindex")
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("1 referrers indexed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_conformance_checks_a_stale_upload_url_and_an_invalid_tag() {
    let registry = Registry::start();
    let regate = Regate::start(&registry.url).await;
    let c = regate.client();
    // A status GET on the URL a later chunk made stale: 204 with the
    // session's current Range and Location (2.8 alone answers 404).
    let r = c
        .post(format!("{}/v2/conf/up/blobs/uploads/", regate.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let first = absolute(&regate.url, r.headers()["location"].to_str().unwrap());
    let r = c
        .patch(&first)
        .header("content-range", "0-4")
        .header("content-type", "application/octet-stream")
        .body(b"hello".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let current = r.headers()["location"].to_str().unwrap().to_owned();
    for url in [&first, &absolute(&regate.url, &current)] {
        let r = c.get(url).send().await.unwrap();
        assert_eq!(r.status(), 204, "{url}");
        assert_eq!(r.headers()["range"], "0-4", "{url}");
        assert_eq!(
            absolute(&regate.url, r.headers()["location"].to_str().unwrap()),
            absolute(&regate.url, &current),
            "{url}"
        );
    }
    // A manifest read by a reference that is no valid tag: 404
    // MANIFEST_UNKNOWN, as 2.8 and the suite say; a PUT keeps its 400.
    let bad = format!("{}/v2/conf/up/manifests/.INVALID_MANIFEST_NAME", regate.url);
    let r = c.get(&bad).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("MANIFEST_UNKNOWN"));
    let r = c.head(&bad).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.bytes().await.unwrap().is_empty());
    let r = c
        .put(&bad)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("TAG_INVALID"));
    regate.stop().await;
}
