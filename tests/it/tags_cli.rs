//! `regate tags rm | ls | restore | deleted` against a real regate and registry.

use crate::common;

use std::process::Command;

use common::{Image, Regate, Registry};

/// Runs the binary off the async threads (regate serves on this runtime).
async fn regate_cli(regate: &Regate, args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (ca, home) = (
        regate.certs.files.ca_cert.clone(),
        regate.state_dir.path().to_owned(),
    );
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_regate"))
            .args(&args)
            .arg("--cacert")
            .arg(&ca)
            .env_remove("REGISTRY_AUTH_FILE")
            .env("HOME", &home)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rm_ls_restore_and_deleted() {
    let registry = Registry::start();
    let regate = Regate::start(&registry.url).await;
    let client = regate.client();
    let img = Image::oci("cli", 3000);
    let list = Image::docker_list("cli-list", &["amd64", "arm64"]);
    img.push(&client, &regate.url, "cli/app", "v1").await;
    for t in ["v2", "v3", "keep"] {
        common::images::put_manifest(&client, &regate.url, "cli/app", t, &img).await;
    }
    list.push(&client, &regate.url, "cli/app", "multi").await;
    let repo = format!("{}/cli/app", regate.host);
    let (code, out, err) = regate_cli(&regate, &["tags", "ls", &repo]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&img.digest)
            && out.contains("2026-11-23T00:00:00Z")
            && out.contains("index of 2"),
        "{out}"
    );

    let (code, out, err) = regate_cli(
        &regate,
        &["tags", "rm", &format!("{repo}:v1"), "v2", "nope", "v3"],
    )
    .await;
    assert_eq!(code, 1, "one tag failed: {out}{err}");
    assert!(
        out.contains("v1")
            && out.contains("removed")
            && out.contains("FAILED  404 MANIFEST_UNKNOWN"),
        "{out}"
    );
    let (code, out, _) = regate_cli(&regate, &["tags", "rm", &format!("{repo}:multi")]).await;
    assert_eq!(code, 0, "{out}");

    let r = client
        .get(format!("{}/v2/cli/app/tags/list", regate.url))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["tags"], serde_json::json!(["keep"]));

    let (code, out, err) = regate_cli(&regate, &["tags", "deleted", &repo]).await;
    assert_eq!(code, 0, "{err}");
    for t in ["v1", "v2", "v3", "multi"] {
        assert!(out.contains(t), "{out}");
    }
    let (code, out, err) =
        regate_cli(&regate, &["tags", "restore", &format!("{repo}:multi")]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&list.digest), "{out}");
    let (code, _, err) = regate_cli(&regate, &["tags", "restore", &format!("{repo}:keep")]).await;
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");
    let (code, _, err) = regate_cli(&regate, &["tags", "rm", "not-a-reference"]).await;
    assert_eq!(code, 2, "{err}");
    regate.stop().await;
}
