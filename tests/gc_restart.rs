//! The gate across a crash: the regate binary is killed (SIGKILL) while a GC
//! command runs or while maintenance is on, and comes back in the right state.

mod common;

use std::time::{Duration, Instant};

use common::gc::{get_json, slow_gc_section, start_gc, wait_gate, wait_run};
use common::images::{absolute, ACCEPT_ALL};
use common::regate::{client_trusting, config_toml, RegateProcess, TestCerts};
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
async fn a_run_whose_command_died_with_regate_is_marked_interrupted_and_the_gate_opens() {
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

    let second = RegateProcess::spawn(dir.path(), &text, &[]);
    let admin = second.admin_url.clone().unwrap();
    let status = get_json(&format!("{admin}/admin/status")).await;
    assert_eq!(status["gate"]["state"], "open", "{status}");
    let run = get_json(&format!("{admin}/admin/gc/{id}")).await;
    assert_eq!(run["status"], "interrupted", "{run}");
    assert!(run["error"].as_str().unwrap().contains("draining"), "{run}");
    assert_eq!(upload_status(&client, &second.url).await, 202);
}
