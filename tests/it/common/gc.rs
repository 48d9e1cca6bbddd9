//! Helpers for the GC and write-gate tests: the `[gc]` section for a test
//! registry, admin API calls, and looking at the registry's storage.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::registry::Registry;

/// A `[gc]` section that runs the real `docker-registry garbage-collect` on
/// `registry`'s config and reads its storage; `more` adds keys.
pub fn gc_section(registry: &Registry, more: &str) -> String {
    format!(
        "[gc]\ncommand = [\"docker-registry\", \"garbage-collect\", {:?}]\nstorage_root = {:?}\n{more}\n",
        registry.config.display().to_string(),
        registry.storage.display().to_string(),
    )
}

/// Like [`gc_section`], but the command sleeps `secs` first (to watch a closed gate).
pub fn slow_gc_section(registry: &Registry, secs: u64, more: &str) -> String {
    format!(
        "[gc]\ncommand = [\"sh\", \"-c\", \"sleep {secs}; exec docker-registry garbage-collect \\\"$0\\\"\", {:?}]\nstorage_root = {:?}\n{more}\n",
        registry.config.display().to_string(),
        registry.storage.display().to_string(),
    )
}

pub fn admin_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// `POST /admin/gc`; returns the JSON answer (with `?wait=true`: the finished run).
pub async fn start_gc(admin: &str, dry_run: bool, untagged: bool, wait: bool) -> Value {
    let r = admin_client()
        .post(format!(
            "{admin}/admin/gc{}",
            if wait { "?wait=true" } else { "" }
        ))
        .json(&serde_json::json!({"dry_run": dry_run, "untagged": untagged}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert!(status.is_success(), "POST /admin/gc: {status} {v}");
    v
}

pub async fn get_json(url: &str) -> Value {
    let r = admin_client().get(url).send().await.unwrap();
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.json().await.unwrap()
}

/// Polls `GET /admin/gc/<id>` until the run is no longer running.
pub async fn wait_run(admin: &str, id: i64, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let run = get_json(&format!("{admin}/admin/gc/{id}")).await;
        if run["status"] != "running" {
            return run;
        }
        assert!(Instant::now() < deadline, "run {id} still running: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `GET /admin/status` until the gate is in `state`.
pub async fn wait_gate(admin: &str, state: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let s = get_json(&format!("{admin}/admin/status")).await;
        if s["gate"]["state"] == state {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "gate not {state} within {within:?}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Whether the registry's storage holds the blob's data.
pub fn blob_on_disk(storage: &Path, digest: &str) -> bool {
    let hex = digest.trim_start_matches("sha256:");
    storage
        .join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
        .is_file()
}

/// Total bytes of the files under the storage.
pub fn storage_size(storage: &Path) -> u64 {
    regate::gc::storage_size::storage_bytes(storage).unwrap()
}

/// The value of a counter in the Prometheus text of `/metrics`.
pub async fn metric(admin: &str, name: &str) -> f64 {
    let text = admin_client()
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
