//! Untagged cleanup on a real registry: overwritten manifests and their blobs
//! go, multi-arch images keep every child, referrers of kept images stay, and
//! the storage really shrinks.

use crate::common;

use common::gc::{blob_on_disk, gc_section, get_json, start_gc, storage_size};
use common::images::ACCEPT_ALL;
use common::skopeo;
use common::{Image, Regate, Registry};

const SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

async fn manifest_status(client: &reqwest::Client, base: &str, repo: &str, reference: &str) -> u16 {
    client
        .get(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn deletes_of(report: &serde_json::Value, repo: &str) -> Vec<String> {
    let mut v: Vec<String> = report["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["repository"] == repo)
        .unwrap_or_else(|| panic!("{repo} not in {report}"))["delete"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untagged_cleanup_keeps_multi_arch_children_and_referrers_and_frees_space() {
    let registry = Registry::start();
    // Manifests pushed by digest keep a repository's push open for the push
    // window (a child may be followed by its index): keep the window short.
    let regate = Regate::start_with(
        &registry.url,
        &gc_section(&registry, "push_window = \"1s\""),
    )
    .await;
    let client = regate.client();
    let url = regate.url.clone();

    // app:v1 is pushed, then overwritten: the old manifest is untagged.
    let old = Image::oci("old", 400_000);
    old.push(&client, &url, "app", "v1").await;
    let new = Image::oci("new", 30_000);
    new.push(&client, &url, "app", "v1").await;
    // Signatures, pushed by digest: one of the tagged image, one of the old one.
    let sig_new = Image::artifact_for("sig-new", &new, SIG);
    sig_new.push(&client, &url, "app", &sig_new.digest).await;
    let sig_old = Image::artifact_for("sig-old", &old, SIG);
    sig_old.push(&client, &url, "app", &sig_old.digest).await;

    // A tagged OCI index (pushed by skopeo --all) and a Docker manifest list.
    let work = tempfile::tempdir().unwrap();
    let index = Image::oci_index("multi", &["amd64", "arm64", "s390x"]);
    let src = work.path().join("index");
    index.write_oci_layout(&src, "latest");
    let trust = regate.certs.trust_dir.clone();
    let (s, d) = (
        format!("oci:{}:latest", src.display()),
        format!("docker://{}/multi/index:latest", regate.host),
    );
    tokio::task::spawn_blocking(move || skopeo::copy(&s, &d, &trust, true))
        .await
        .unwrap();
    let list = Image::docker_list("list", &["amd64", "arm64"]);
    list.push(&client, &url, "multi/list", "latest").await;
    // An index whose tag moved on: it and its children are unreachable.
    let old_index = Image::oci_index("old-multi", &["amd64", "arm64"]);
    old_index.push(&client, &url, "multi/moved", "v1").await;
    Image::oci("moved-new", 1_000)
        .push(&client, &url, "multi/moved", "v1")
        .await;

    // Dry run: reports, deletes nothing, leaves the gate open.
    let size_before = storage_size(&registry.storage);
    let run = start_gc(&regate.admin_url, true, true, true).await["run"].clone();
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["drain_ms"],
        serde_json::Value::Null,
        "a dry run never closes the gate"
    );
    let report = &run["untagged_report"];
    assert_eq!(
        deletes_of(report, "app"),
        sorted(vec![old.digest.clone(), sig_old.digest.clone()])
    );
    let mut moved = vec![old_index.digest.clone()];
    moved.extend(old_index.children.iter().map(|c| c.digest.clone()));
    assert_eq!(deletes_of(report, "multi/moved"), sorted(moved));
    assert!(deletes_of(report, "multi/index").is_empty());
    assert!(deletes_of(report, "multi/list").is_empty());
    assert_eq!(run["manifests_deleted"], 5, "{run}");
    assert_eq!(storage_size(&registry.storage), size_before);
    assert_eq!(
        manifest_status(&client, &url, "app", &old.digest).await,
        200
    );

    // The real run, through the CLI.
    let admin = regate.admin_url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_regate"))
            .args(["gc", "run", "--untagged", "--wait", "--admin", &admin])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("succeeded"), "{stdout}");
    let history = get_json(&format!("{}/admin/gc", regate.admin_url)).await;
    let run = history["history"][0].clone();
    assert_eq!(run["untagged"], true);
    assert_eq!(run["dry_run"], false);
    assert_eq!(run["manifests_deleted"], 5, "{run}");
    assert!(run["blobs_deleted"].as_i64().unwrap() >= 2 + 2 + 5, "{run}");

    // The overwritten manifest, its signature and their blobs are gone.
    for d in [&old.digest, &sig_old.digest] {
        assert_eq!(manifest_status(&client, &url, "app", d).await, 404);
        assert!(!blob_on_disk(&registry.storage, d));
    }
    for b in old.all_blobs().into_iter().chain(sig_old.all_blobs()) {
        assert!(!blob_on_disk(&registry.storage, &b.digest));
    }
    for c in old_index.children.iter().chain([&old_index]) {
        assert_eq!(
            manifest_status(&client, &url, "multi/moved", &c.digest).await,
            404
        );
    }
    // The tagged image and its signature stay whole.
    assert_eq!(manifest_status(&client, &url, "app", "v1").await, 200);
    assert_eq!(
        manifest_status(&client, &url, "app", &sig_new.digest).await,
        200
    );
    for b in new.all_blobs().into_iter().chain(sig_new.all_blobs()) {
        assert!(blob_on_disk(&registry.storage, &b.digest));
    }
    // Every child of the tagged index and list is there, and pulls with --all.
    for (repo, img) in [("multi/index", &index), ("multi/list", &list)] {
        assert_eq!(manifest_status(&client, &url, repo, "latest").await, 200);
        for c in &img.children {
            assert_eq!(
                manifest_status(&client, &url, repo, &c.digest).await,
                200,
                "{repo}"
            );
        }
        for b in img.all_blobs() {
            assert!(blob_on_disk(&registry.storage, &b.digest), "{repo}");
        }
        let back = work.path().join(repo.replace('/', "-"));
        let trust = regate.certs.trust_dir.clone();
        let (s, d) = (
            format!("docker://{}/{repo}:latest", regate.host),
            format!("dir:{}", back.display()),
        );
        tokio::task::spawn_blocking(move || skopeo::copy(&s, &d, &trust, true))
            .await
            .unwrap();
    }

    // Space is really freed: at least the old image's layer.
    let size_after = storage_size(&registry.storage);
    let old_layer = old.blobs[1].bytes.len() as u64;
    assert!(
        size_before >= size_after + old_layer,
        "storage {size_before} -> {size_after}, old layer {old_layer}"
    );
    let freed = run["bytes_before"].as_i64().unwrap() - run["bytes_after"].as_i64().unwrap();
    assert!(freed >= old_layer as i64, "{run}");
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untagged_cleanup_without_visible_storage_is_a_clear_error() {
    let registry = Registry::start();
    let regate = Regate::start_with(
        &registry.url,
        &format!(
            "[gc]\ncommand = [\"docker-registry\", \"garbage-collect\", {:?}]\n",
            registry.config.display().to_string()
        ),
    )
    .await;
    let r = common::gc::admin_client()
        .post(format!("{}/admin/gc", regate.admin_url))
        .json(&serde_json::json!({"untagged": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("storage_root"),
        "{body}"
    );
    // In the configuration too, the key is named.
    let err = regate::config::Settings::from_toml(
        "[server]\ndev_certs = true\n[upstream]\nurl = \"http://127.0.0.1:5000\"\n[gc]\nuntagged = true\n",
        "t.toml",
        std::iter::empty(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("gc.untagged"), "{err}");
    regate.stop().await;
}
