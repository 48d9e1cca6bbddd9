//! Removing many tags at once (`POST /v2/<name>/_regate/delete`, what
//! `regate tags rm` sends): exactly the named tags go, of OCI and Docker
//! images in one batch, unknown tags get 404 in the answer, nothing else
//! changes, no dummy is left; and regate killed at each step of a batch ends
//! with every tag removed or original.

use crate::common;

use common::images::{put_manifest, ACCEPT_ALL};
use common::regate::{client_trusting, config_toml, RegateProcess, TestCerts};
use common::{storage, Image, Regate, Registry};

async fn batch(
    client: &reqwest::Client,
    base: &str,
    repo: &str,
    tags: &[&str],
) -> (u16, serde_json::Value) {
    let r = client
        .post(format!("{base}/v2/{repo}/_regate/delete"))
        .json(&serde_json::json!({ "tags": tags }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_removes_exactly_its_tags() {
    let registry = Registry::start();
    let regate = Regate::start(&registry.url).await;
    let client = regate.client();
    let repo = "batch/app";
    let oci = Image::oci("batch-oci", 3000);
    let docker = Image::docker("batch-docker", 3000);
    let index = Image::oci_index("batch-index", &["amd64", "arm64"]);
    oci.push(&client, &regate.url, repo, "o1").await;
    docker.push(&client, &regate.url, repo, "d1").await;
    index.push(&client, &regate.url, repo, "i1").await;
    for t in ["o2", "o3", "keep-o"] {
        put_manifest(&client, &regate.url, repo, t, &oci).await;
    }
    for t in ["d2", "keep-d"] {
        put_manifest(&client, &regate.url, repo, t, &docker).await;
    }
    put_manifest(&client, &regate.url, repo, "keep-i", &index).await;
    let revisions_before = storage::revisions(&registry.storage, repo);

    let (status, v) = batch(
        &client,
        &regate.url,
        repo,
        &["o1", "o2", "o3", "d1", "d2", "i1", "nope", "o1"],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 7, "one result per distinct tag: {v}");
    for r in results {
        let tag = r["tag"].as_str().unwrap();
        if tag == "nope" {
            assert_eq!(r["status"], 404, "{r}");
            assert_eq!(r["error"]["code"], "MANIFEST_UNKNOWN", "{r}");
        } else {
            assert_eq!(r["status"], 202, "{r}");
            let want = match tag.as_bytes()[0] {
                b'o' => &oci.digest,
                b'd' => &docker.digest,
                _ => &index.digest,
            };
            assert_eq!(r["digest"], want.as_str(), "{r}");
        }
    }
    let mut left = storage::tags(&registry.storage, repo);
    left.sort();
    assert_eq!(
        left,
        vec![
            ("keep-d".to_owned(), docker.digest.clone()),
            ("keep-i".to_owned(), index.digest.clone()),
            ("keep-o".to_owned(), oci.digest.clone()),
        ]
    );
    assert_eq!(
        storage::revisions(&registry.storage, repo),
        revisions_before,
        "every manifest stays and no dummy is left"
    );
    // Every removal is in the history, so each can be restored.
    let r = client
        .post(format!("{}/v2/{repo}/_regate/restore/d2", regate.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(
        storage::tags(&registry.storage, repo).contains(&("d2".to_owned(), docker.digest.clone()))
    );

    // Bad requests change nothing.
    let (status, v) = batch(&client, &regate.url, repo, &["keep-o", "Not A Tag!"]).await;
    assert_eq!(
        (status, v["errors"][0]["code"].as_str()),
        (400, Some("TAG_INVALID")),
        "{v}"
    );
    let (status, _) = batch(&client, &regate.url, repo, &[]).await;
    assert_eq!(status, 400);
    let r = client
        .post(format!("{}/v2/{repo}/_regate/delete", regate.url))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(storage::tags(&registry.storage, repo)
        .iter()
        .any(|(t, _)| t == "keep-o"));
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_a_batch_ends_removed_or_original_never_a_dummy() {
    let registry = Registry::start();
    let direct = reqwest::Client::new();
    for (i, step) in regate::tag_delete::fault::STEPS.iter().enumerate() {
        let repo = format!("batchcrash/s{i}");
        let img = Image::oci(&format!("batch-crash-{step}"), 1500);
        img.push(&direct, &registry.url, &repo, "a").await;
        for t in ["b", "c", "keep"] {
            put_manifest(&direct, &registry.url, &repo, t, &img).await;
        }
        let blobs_before = storage::layer_links(&registry.storage, &repo);

        let certs = TestCerts::new();
        let dir = tempfile::tempdir().unwrap();
        let config = config_toml(&registry.url, &certs, &dir.path().join("state"), "");
        let client = client_trusting(&certs.files.ca_cert);
        let fault = format!("tag_delete:{step}");
        RegateProcess::crash_during(dir.path(), &config, &fault, |url| {
            client
                .post(format!("{url}/v2/{repo}/_regate/delete"))
                .json(&serde_json::json!({"tags": ["a", "b", "c"]}))
                .send()
        })
        .await;

        // Restart: every journal entry of the batch is resolved before serving.
        let regate = RegateProcess::spawn(dir.path(), &config, &[]);
        let expect_removed = matches!(*step, "after_dummy_put" | "after_dummy_delete");
        for t in ["a", "b", "c"] {
            let r = client
                .head(format!("{}/v2/{repo}/manifests/{t}", regate.url))
                .header("accept", ACCEPT_ALL)
                .send()
                .await
                .unwrap();
            if expect_removed {
                assert_eq!(r.status(), 404, "{step}: {t} rolled forward");
            } else {
                assert_eq!(r.status(), 200, "{step}: {t} rolled back");
                assert_eq!(r.headers()["docker-content-digest"], img.digest.as_str());
            }
        }
        storage::assert_recovered_cleanly(
            &registry.storage,
            &repo,
            "keep",
            &img.digest,
            &blobs_before,
            &dir.path().join("state"),
            if expect_removed { 3 } else { 0 },
            step,
        );
        drop(regate);
    }
}

/// On a registry with its own tag delete (distribution 3.x, stubbed in front
/// of 2.8), a batch journals every tag before its native delete is tried:
/// regate killed right after the registry removed the first tag finds the
/// removal at the next start (kept for undo), and the other tags untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_native_delete_in_a_batch_is_recovered_and_kept_for_undo() {
    let registry = Registry::start();
    let native = common::native_delete::NativeTagDelete::start(&registry).await;
    let direct = reqwest::Client::new();
    let repo = "native/app";
    let img = Image::oci("native-batch", 1500);
    img.push(&direct, &registry.url, repo, "n1").await;
    put_manifest(&direct, &registry.url, repo, "n2", &img).await;

    let certs = TestCerts::new();
    let dir = tempfile::tempdir().unwrap();
    let config = config_toml(&native.url, &certs, &dir.path().join("state"), "");
    let client = client_trusting(&certs.files.ca_cert);

    // The stub works: regate deletes a tag natively.
    put_manifest(&direct, &registry.url, repo, "warmup", &img).await;
    {
        let regate = RegateProcess::spawn(dir.path(), &config, &[]);
        let (status, v) = batch(&client, &regate.url, repo, &["warmup"]).await;
        assert_eq!(status, 200, "{v}");
        assert!(
            !storage::tags(&registry.storage, repo)
                .iter()
                .any(|(t, _)| t == "warmup"),
            "{v}"
        );
    }

    RegateProcess::crash_during(dir.path(), &config, "tag_delete:after_native", |url| {
        client
            .post(format!("{url}/v2/{repo}/_regate/delete"))
            .json(&serde_json::json!({ "tags": ["n1", "n2"] }))
            .send()
    })
    .await;
    // The registry removed n1 (the probe) before regate died; n2 untouched.
    let tags: Vec<String> = storage::tags(&registry.storage, repo)
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(tags, ["n2"]);

    let regate = RegateProcess::spawn(dir.path(), &config, &[]);
    let v: serde_json::Value = client
        .get(format!("{}/v2/{repo}/_regate/deleted", regate.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let deleted: Vec<&str> = v["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["tag"].as_str())
        .collect();
    assert!(deleted.contains(&"n1"), "the removal of n1 was lost: {v}");
    assert!(!deleted.contains(&"n2"), "{v}");
    let r = client
        .head(format!("{}/v2/{repo}/manifests/n2", regate.url))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // And it can be undone.
    let r = client
        .post(format!("{}/v2/{repo}/_regate/restore/n1", regate.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
}
