//! The gate across a crash: the regate binary is killed (SIGKILL) while a GC
//! command runs, while its untagged walk runs, or while maintenance is on, and
//! comes back in the right state (a walk cut short is resumed, not restarted).

use crate::common;

use std::time::{Duration, Instant};

use common::gc::{get_json, slow_gc_section, start_gc, wait_gate, wait_run};
use common::images::{absolute, ACCEPT_ALL};
use common::regate::{client_trusting, config_toml, RegateProcess, TestCerts};
use common::relay::Relay;
use common::{Image, Registry};

/// Starts an upload and, when it is accepted, cancels it (an open session
/// counts as a push under way, which a drain would wait for).
async fn upload_status(client: &reqwest::Client, url: &str) -> u16 {
    let r = client
        .post(format!("{url}/v2/crash/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    if status == 202 {
        let loc = absolute(url, r.headers()["location"].to_str().unwrap());
        let r = client.delete(loc).send().await.unwrap();
        assert_eq!(r.status(), 204);
    }
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_regate_comes_back_closed_while_its_gc_runs_and_open_after() {
    let registry = Registry::start();
    let certs = TestCerts::new();
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config_toml(
        &registry.url,
        &certs,
        state.path(),
        &slow_gc_section(&registry, 3, "closed_writes = \"reject\""),
    );
    let client = client_trusting(&certs.files.ca_cert);

    let mut first = RegateProcess::spawn(dir.path(), &text, &[]);
    let admin = first.admin_url.clone().unwrap();
    let img = Image::oci("crash", 20_000);
    img.push(&client, &first.url, "crash/app", "v1").await;

    let id = start_gc(&admin, false, false, false).await["id"]
        .as_i64()
        .unwrap();
    // Wait until the GC command runs, then kill regate under it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let run = get_json(&format!("{admin}/admin/gc/{id}")).await;
        if run["phase"] == "collecting" && run["pid"].is_i64() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "GC never reached its command: {run}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill();

    let mut second = RegateProcess::spawn(dir.path(), &text, &[]);
    let admin = second.admin_url.clone().unwrap();
    let status = get_json(&format!("{admin}/admin/status")).await;
    assert_eq!(status["gate"]["state"], "closed", "{status}");
    assert!(
        status["gate"]["reason"]
            .as_str()
            .unwrap()
            .contains("resumed after a restart"),
        "{status}"
    );
    assert_eq!(status["gc"]["running"]["id"], id, "{status}");
    assert_eq!(upload_status(&client, &second.url).await, 503);
    // Reads are served meanwhile.
    let r = client
        .get(format!("{}/v2/crash/app/manifests/v1", second.url))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // When the command ends, the run is recorded and the gate opens.
    let run = wait_run(&admin, id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "finished_unobserved", "{run}");
    assert!(run["error"]
        .as_str()
        .unwrap()
        .contains("completed its mark phase"));
    wait_gate(&admin, "open", Duration::from_secs(5)).await;
    assert_eq!(upload_status(&client, &second.url).await, 202);

    // Maintenance switched on by hand survives a crash too.
    let r = common::gc::admin_client()
        .put(format!("{admin}/admin/maintenance"))
        .json(&serde_json::json!({"reason": "storage move"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    second.kill();
    let third = RegateProcess::spawn(dir.path(), &text, &[]);
    let admin = third.admin_url.clone().unwrap();
    let status = get_json(&format!("{admin}/admin/status")).await;
    assert_eq!(status["gate"]["state"], "closed", "{status}");
    assert!(status["gate"]["reason"]
        .as_str()
        .unwrap()
        .contains("storage move"));
    assert_eq!(upload_status(&client, &third.url).await, 503);
    let r = common::gc::admin_client()
        .delete(format!("{admin}/admin/maintenance"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(upload_status(&client, &third.url).await, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cut_short_while_draining_is_resumed_at_the_next_start_and_the_gate_opens() {
    let registry = Registry::start();
    let certs = TestCerts::new();
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A long drain: regate is killed while the gate drains, before any command runs.
    let text = config_toml(
        &registry.url,
        &certs,
        state.path(),
        &common::gc::gc_section(
            &registry,
            "closed_writes = \"reject\"\ndrain_timeout = \"30s\"",
        ),
    );
    let client = client_trusting(&certs.files.ca_cert);
    let mut first = RegateProcess::spawn(dir.path(), &text, &[]);
    let admin = first.admin_url.clone().unwrap();
    // A push under way (a blob without its manifest) keeps the gate draining.
    common::images::push_blob(&client, &first.url, "crash/app", b"pending").await;
    let id = start_gc(&admin, false, false, false).await["id"]
        .as_i64()
        .unwrap();
    wait_gate(&admin, "draining", Duration::from_secs(5)).await;
    first.kill();

    // The push under way died with the process that tracked it: the resumed
    // run drains at once, runs its command and opens the gate.
    let second = RegateProcess::spawn(dir.path(), &text, &[]);
    let admin = second.admin_url.clone().unwrap();
    let run = wait_run(&admin, id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["attempts"], 2, "{run}");
    assert_eq!(run["exit_code"], 0, "{run}");
    wait_gate(&admin, "open", Duration::from_secs(5)).await;
    assert_eq!(upload_status(&client, &second.url).await, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gc_run_killed_mid_walk_resumes_at_the_next_start_without_redoing_finished_repositories()
{
    const REPOS: usize = 6;
    let registry = Registry::start();
    // Each repository: a tag moved on from an old image (untagged) to a new one.
    let direct = common::gc::admin_client();
    let mut old = Vec::new();
    let mut new = Vec::new();
    for i in 0..REPOS {
        let repo = format!("walk/r{i}");
        let a = Image::oci(&format!("walk-old-{i}"), 2_000);
        a.push(&direct, &registry.url, &repo, "v1").await;
        let b = Image::oci(&format!("walk-new-{i}"), 2_000);
        b.push(&direct, &registry.url, &repo, "v1").await;
        old.push((repo.clone(), a.digest.clone()));
        new.push((repo, b.digest.clone()));
    }
    // A slow registry: each untagged delete takes half a second, so the
    // walk is still going when regate is killed.
    let relay = Relay::start_with_delay(
        registry.url.trim_start_matches("http://"),
        Duration::from_millis(500),
    )
    .await;
    let certs = TestCerts::new();
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config_toml(
        &relay.url,
        &certs,
        state.path(),
        &common::gc::gc_section(&registry, "closed_writes = \"reject\""),
    );

    let mut first = RegateProcess::spawn(dir.path(), &text, &[]);
    let admin = first.admin_url.clone().unwrap();
    let id = start_gc(&admin, false, true, false).await["id"]
        .as_i64()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let walked_before = loop {
        let run = get_json(&format!("{admin}/admin/gc/{id}")).await;
        let walked = run["repositories"].as_i64().unwrap_or(0);
        if walked >= 2 {
            assert_eq!(run["phase"], "untagged", "{run}");
            break walked;
        }
        assert!(
            Instant::now() < deadline,
            "the walk never got through two repositories: {run}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    first.kill();
    assert!(walked_before < REPOS as i64, "killed too late");

    // The next start resumes the same run (second attempt) and finishes it.
    let second = RegateProcess::spawn(dir.path(), &text, &[]);
    let admin = second.admin_url.clone().unwrap();
    let status = get_json(&format!("{admin}/admin/status")).await;
    assert_eq!(status["gc"]["running"]["id"], id, "{status}");
    assert_eq!(status["gc"]["running"]["attempts"], 2, "{status}");
    let run = wait_run(&admin, id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["attempts"], 2, "{run}");
    assert_eq!(run["repositories"], REPOS as i64, "{run}");
    assert_eq!(run["tags"], REPOS as i64, "{run}");
    assert_eq!(run["manifests_deleted"], REPOS as i64, "{run}");
    assert!(run["untagged_ms"].as_i64().unwrap() > 0, "{run}");
    assert!(run["gc_ms"].is_i64(), "{run}");
    wait_gate(&admin, "open", Duration::from_secs(5)).await;

    // Repositories finished before the kill were not walked again: the
    // report still has them from the first attempt, with their delete.
    let report = run["untagged_report"]["repositories"].as_array().unwrap();
    assert_eq!(report.len(), REPOS, "{run}");
    let first_attempt: Vec<&serde_json::Value> =
        report.iter().filter(|r| r["attempt"] == 1).collect();
    assert!(
        first_attempt.len() as i64 >= walked_before,
        "repositories finished before the kill were walked again: {run}"
    );
    for (i, r) in report.iter().enumerate() {
        assert_eq!(r["repository"], old[i].0, "{run}");
        let deleted =
            r["delete"].as_array().unwrap().len() as i64 + r["deleted_earlier"].as_i64().unwrap();
        assert_eq!(deleted, 1, "{r}");
        if r["attempt"] == 1 {
            assert_eq!(r["delete"], serde_json::json!([old[i].1]), "{r}");
        } else {
            assert_eq!(r["attempt"], 2, "{r}");
        }
    }
    // Attempt 1 walked a prefix (in name order), attempt 2 the rest.
    let attempts: Vec<i64> = report
        .iter()
        .map(|r| r["attempt"].as_i64().unwrap())
        .collect();
    let mut sorted = attempts.clone();
    sorted.sort();
    assert_eq!(attempts, sorted, "{run}");
    let log = std::fs::read_to_string(&second.log_path).unwrap();
    assert!(log.contains("untagged walk resumed"), "{log}");

    // The storage: every old image gone, every new one whole.
    for ((repo, gone), (_, kept)) in old.iter().zip(&new) {
        let at = |d: &str| format!("{}/v2/{repo}/manifests/{d}", registry.url);
        let r = direct
            .get(at(gone))
            .header("accept", ACCEPT_ALL)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{repo}@{gone}");
        let r = direct
            .get(at(kept))
            .header("accept", ACCEPT_ALL)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{repo}@{kept}");
    }
}
