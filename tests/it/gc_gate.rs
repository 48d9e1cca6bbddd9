//! The write gate with real garbage collection: a real `docker-registry`
//! (serving and running `garbage-collect`), regate in front of it, skopeo
//! and raw HTTP pushes.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::gc::{blob_on_disk, gc_section, get_json, metric, start_gc, wait_gate, wait_run};
use common::images::{absolute, pseudo_random, push_blob, put_manifest, ACCEPT_ALL};
use common::skopeo;
use common::{Image, Regate, Registry};

fn layout_ref(dir: &std::path::Path, tag: &str) -> String {
    format!("oci:{}:{tag}", dir.display())
}

/// Pulls `repo:tag` with skopeo into a fresh layout and checks the manifest
/// digest and every blob's bytes.
async fn pull_and_check(regate: &Regate, repo: &str, tag: &str, img: &Image) {
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("pulled");
    let trust = regate.certs.trust_dir.clone();
    let (s, d) = (
        format!("docker://{}/{repo}:{tag}", regate.host),
        layout_ref(&dest, tag),
    );
    tokio::task::spawn_blocking(move || skopeo::copy(&s, &d, &trust, false))
        .await
        .unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"],
        img.digest.as_str(),
        "{repo}:{tag}"
    );
    for b in img.all_blobs() {
        let path = dest
            .join("blobs/sha256")
            .join(b.digest.trim_start_matches("sha256:"));
        assert_eq!(std::fs::read(path).unwrap(), b.bytes, "{repo}:{tag} blob");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pushes_in_a_loop_all_survive_gc_running_over_and_over() {
    const PUSHERS: usize = 3;
    const ROUNDS: usize = 4;
    let registry = Registry::start();
    let regate = Regate::start_with(
        &registry.url,
        &gc_section(&registry, "drain_timeout = \"60s\"\nhold_timeout = \"60s\""),
    )
    .await;
    // Garbage GC must remove: a blob no manifest refers to (uploaded to the
    // registry directly: through regate it would count as a push under way).
    let orphan = push_blob(
        &reqwest::Client::new(),
        &registry.url,
        "junk/orphan",
        &pseudo_random("orphan", 40_000),
    )
    .await;

    let done = Arc::new(AtomicBool::new(false));
    let gc_loop = {
        let admin = regate.admin_url.clone();
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut runs = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let v = start_gc(&admin, false, false, true).await;
                runs.push(v["run"].clone());
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            runs
        })
    };

    let mut pushers = Vec::new();
    for p in 0..PUSHERS {
        let host = regate.host.clone();
        let trust = regate.certs.trust_dir.clone();
        pushers.push(tokio::task::spawn_blocking(move || {
            let work = tempfile::tempdir().unwrap();
            let mut pushed = Vec::new();
            for r in 0..ROUNDS {
                let img = Image::oci(&format!("loop-{p}-{r}"), 150_000);
                let src = work.path().join(format!("src-{r}"));
                img.write_oci_layout(&src, "t");
                let repo = format!("loop{p}/app");
                let tag = format!("r{r}");
                skopeo::copy(
                    &layout_ref(&src, "t"),
                    &format!("docker://{host}/{repo}:{tag}"),
                    &trust,
                    false,
                );
                pushed.push((repo, tag, img));
            }
            pushed
        }));
    }
    let mut pushed = Vec::new();
    for p in pushers {
        pushed.extend(p.await.expect("every skopeo push succeeds"));
    }
    done.store(true, Ordering::SeqCst);
    let runs = gc_loop.await.unwrap();

    assert!(runs.len() >= 2, "GC ran only {} times", runs.len());
    for run in &runs {
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    assert!(
        !blob_on_disk(&registry.storage, &orphan),
        "GC really ran and deleted an unreferenced blob"
    );
    let held = metric(&regate.admin_url, "regate_write_gate_held_writes_total").await;
    assert!(
        held > 0.0,
        "no write met a draining or closed gate: the test proved nothing"
    );

    for (repo, tag, img) in &pushed {
        pull_and_check(&regate, repo, tag, img).await;
        for b in img.all_blobs() {
            assert!(blob_on_disk(&registry.storage, &b.digest), "{repo}:{tag}");
        }
    }
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_under_way_when_gc_starts_finishes_first_and_new_pushes_wait() {
    let registry = Registry::start();
    let regate = Regate::start_with(
        &registry.url,
        &gc_section(&registry, "drain_timeout = \"30s\""),
    )
    .await;
    let client = regate.client();
    let img = Image::oci("straddle", 300_000);
    let (config, layer) = (&img.blobs[0], &img.blobs[1]);
    let repo = "straddle/app";

    // The push starts: half of the layer is uploaded.
    let r = client
        .post(format!("{}/v2/{repo}/blobs/uploads/", regate.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = absolute(&regate.url, r.headers()["location"].to_str().unwrap());
    let half = layer.bytes.len() / 2;
    let r = client
        .patch(&loc)
        .header("content-type", "application/octet-stream")
        .body(layer.bytes[..half].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = absolute(&regate.url, r.headers()["location"].to_str().unwrap());

    // GC is asked for now: the gate drains.
    let id = start_gc(&regate.admin_url, false, false, false).await["id"]
        .as_i64()
        .unwrap();
    let status = wait_gate(&regate.admin_url, "draining", Duration::from_secs(5)).await;
    assert_eq!(
        status["gate"]["pushes_under_way"],
        serde_json::json!([repo])
    );

    // A new push elsewhere is stopped at its first request and held.
    let newcomer = {
        let (client, url) = (client.clone(), regate.url.clone());
        tokio::spawn(async move {
            push_blob(
                &client,
                &url,
                "newcomer/app",
                &pseudo_random("newcomer", 10_000),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!newcomer.is_finished(), "a new push passed a draining gate");

    // The push under way goes on and finishes: rest of the layer, the config
    // (a new session in the same repository), the manifest by tag.
    let r = client
        .patch(&loc)
        .header("content-type", "application/octet-stream")
        .body(layer.bytes[half..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = absolute(&regate.url, r.headers()["location"].to_str().unwrap());
    let r = client
        .put(format!("{loc}&digest={}", layer.digest))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    push_blob(&client, &regate.url, repo, &config.bytes).await;
    put_manifest(&client, &regate.url, repo, "v1", &img).await;

    let run = wait_run(&regate.admin_url, id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["drain_timed_out"], false, "{run}");
    let digest = tokio::time::timeout(Duration::from_secs(10), newcomer)
        .await
        .expect("the held push goes on once the gate opens")
        .unwrap();
    assert!(blob_on_disk(&registry.storage, &digest));

    pull_and_check(&regate, repo, "v1", &img).await;
    regate.stop().await;
}

/// Revisions of `repo` that still have a `link` file.
fn revision_links(storage: &std::path::Path, repo: &str) -> usize {
    let dir = storage.join(format!(
        "docker/registry/v2/repositories/{repo}/_manifests/revisions/sha256"
    ));
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("link").is_file())
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_cut_by_drain_timeout_keeps_its_blobs_through_gc_and_completes() {
    let registry = Registry::start();
    let regate = Regate::start_with(
        &registry.url,
        &gc_section(&registry, "drain_timeout = \"1s\""),
    )
    .await;
    let client = regate.client();
    let img = Image::oci("cut", 100_000);
    let repo = "cut/app";
    // Blobs uploaded, and the client stalls before its manifest.
    for b in &img.blobs {
        push_blob(&client, &regate.url, repo, &b.bytes).await;
    }
    let run = start_gc(&regate.admin_url, false, false, true).await["run"].clone();
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["drain_timed_out"], true, "{run}");
    assert!(run["drain_ms"].as_i64().unwrap() >= 1000, "{run}");
    // A keeper manifest held the push's blobs through GC, and is gone again.
    for b in &img.blobs {
        assert!(blob_on_disk(&registry.storage, &b.digest));
    }
    assert_eq!(revision_links(&registry.storage, repo), 0);
    // The late manifest completes the push.
    put_manifest(&client, &regate.url, repo, "v1", &img).await;
    pull_and_check(&regate, repo, "v1", &img).await;
    assert_eq!(revision_links(&registry.storage, repo), 1);

    // Blobs regate never saw (uploaded past it) are garbage to GC: a late
    // manifest then gets a clear error, never a manifest without its blobs,
    // and a retried push succeeds.
    let other = Image::oci("past-regate", 50_000);
    for b in &other.blobs {
        push_blob(
            &reqwest::Client::new(),
            &registry.url,
            "cut/other",
            &b.bytes,
        )
        .await;
    }
    let run = start_gc(&regate.admin_url, false, false, true).await["run"].clone();
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(!blob_on_disk(&registry.storage, &other.blobs[1].digest));
    let r = client
        .put(format!("{}/v2/cut/other/manifests/v1", regate.url))
        .header("content-type", &other.media_type)
        .body(other.manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN", "{body}");
    other.push(&client, &regate.url, "cut/other", "v1").await;
    pull_and_check(&regate, "cut/other", "v1", &other).await;
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_mode_refuses_writes_during_gc_with_retry_after_and_reads_go_on() {
    let registry = Registry::start();
    let regate = Regate::start_with(
        &registry.url,
        &common::gc::slow_gc_section(&registry, 2, "closed_writes = \"reject\"\nretry_after = 17"),
    )
    .await;
    let client = regate.client();
    let img = Image::oci("reads", 20_000);
    img.push(&client, &regate.url, "r/app", "v1").await;

    let id = start_gc(&regate.admin_url, false, false, false).await["id"]
        .as_i64()
        .unwrap();
    wait_gate(&regate.admin_url, "closed", Duration::from_secs(5)).await;

    let writes = [
        client.post(format!("{}/v2/r/app/blobs/uploads/", regate.url)),
        client
            .put(format!("{}/v2/r/app/manifests/v2", regate.url))
            .header("content-type", &img.media_type)
            .body(img.manifest.clone()),
        client.delete(format!("{}/v2/r/app/manifests/{}", regate.url, img.digest)),
        client.patch(format!(
            "{}/v2/r/app/blobs/uploads/some-session",
            regate.url
        )),
    ];
    for w in writes {
        let r = w.send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "17");
        assert_eq!(
            r.headers()["docker-distribution-api-version"],
            "registry/2.0"
        );
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "UNAVAILABLE");
        let msg = body["errors"][0]["message"].as_str().unwrap();
        assert!(msg.contains("maintenance"), "{msg}");
    }
    // Reads are served while the gate is closed.
    let r = client
        .get(format!("{}/v2/r/app/manifests/v1", regate.url))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), img.manifest.as_slice());
    for b in &img.blobs {
        let r = client
            .get(format!("{}/v2/r/app/blobs/{}", regate.url, b.digest))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), b.bytes.as_slice());
    }
    assert_eq!(
        get_json(&format!("{}/admin/status", regate.admin_url)).await["gate"]["state"],
        "closed"
    );

    let run = wait_run(&regate.admin_url, id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(run["closed_ms"].as_i64().unwrap() >= 2000, "{run}");
    assert!(metric(&regate.admin_url, "regate_write_gate_rejected_writes_total").await >= 4.0);
    // Open again: writes pass.
    Image::oci("after", 1_000)
        .push(&client, &regate.url, "r/app", "v2")
        .await;
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_by_hand_closes_and_opens_the_gate_with_a_reason() {
    let registry = Registry::start();
    let regate = Regate::start_with(
        &registry.url,
        &gc_section(&registry, "closed_writes = \"reject\""),
    )
    .await;
    let client = regate.client();
    let admin = regate.admin_url.clone();
    let cli = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_regate"))
                .args(&args)
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    };
    let (code, out, err) = cli(vec![
        "maintenance".into(),
        "on".into(),
        "--reason".into(),
        "nightly backup".into(),
        "--admin".into(),
        admin.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("closed (maintenance: nightly backup)"),
        "{out}"
    );

    let r = client
        .post(format!("{}/v2/m/app/blobs/uploads/", regate.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("nightly backup"));
    // GC refuses to run while maintenance holds the gate.
    let r = common::gc::admin_client()
        .post(format!("{admin}/admin/gc"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);

    let (code, out, _) = cli(vec![
        "maintenance".into(),
        "off".into(),
        "--admin".into(),
        admin.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(code, Some(0));
    assert!(out.contains("write gate: open"), "{out}");
    let (code, out, _) = cli(vec![
        "maintenance".into(),
        "status".into(),
        "--admin".into(),
        admin.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(code, Some(0));
    assert!(out.contains("write gate: open"), "{out}");
    let (code, out, _) = cli(vec![
        "gc".into(),
        "status".into(),
        "--json".into(),
        "--admin".into(),
        admin.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["gate"]["state"], "open", "{out}");
    assert_eq!(
        v["history"],
        serde_json::json!([]),
        "the refused run left no record"
    );
    // An unreachable admin listener is an error, not a hang.
    let (code, _, err) = cli(vec![
        "gc".into(),
        "status".into(),
        "--admin".into(),
        "http://127.0.0.1:1".into(),
    ])
    .await
    .unwrap();
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot reach the admin API"), "{err}");
    Image::oci("after-maintenance", 1_000)
        .push(&client, &regate.url, "m/app", "v1")
        .await;
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_hanging_gc_command_reopens_the_gate_and_is_reported() {
    let registry = Registry::start();
    let regate = Regate::start_with(
        &registry.url,
        &format!(
            "[gc]\ncommand = [\"sh\", \"-c\", \"echo 'failed to garbage collect: boom' >&2; exit 7\"]\nstorage_root = {:?}\n",
            registry.storage.display().to_string()
        ),
    )
    .await;
    let client = regate.client();
    // Something stored, so the command really runs.
    Image::oci("x", 1_000)
        .push(&client, &regate.url, "f/app", "v1")
        .await;

    let run = start_gc(&regate.admin_url, false, false, true).await["run"].clone();
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["exit_code"], 7, "{run}");
    assert!(run["error"].as_str().unwrap().contains("boom"), "{run}");
    assert_eq!(
        get_json(&format!("{}/admin/status", regate.admin_url)).await["gate"]["state"],
        "open"
    );
    // Writes are not held: a push goes through at once.
    tokio::time::timeout(
        Duration::from_secs(5),
        Image::oci("y", 1_000).push(&client, &regate.url, "f/app", "v2"),
    )
    .await
    .expect("writes pass after a failed GC");

    // The CLI reports the failure with exit code 1.
    let admin = regate.admin_url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_regate"))
            .args(["gc", "run", "--wait", "--admin", &admin])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("failed") && stdout.contains("boom"),
        "{stdout}"
    );
    regate.stop().await;

    // A command that hangs is killed at the timeout; the gate opens.
    let regate = Regate::start_with(
        &registry.url,
        &format!(
            "[gc]\ncommand = [\"sleep\", \"30\"]\ntimeout = \"1s\"\nstorage_root = {:?}\n",
            registry.storage.display().to_string()
        ),
    )
    .await;
    let run = start_gc(&regate.admin_url, false, false, true).await["run"].clone();
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("did not finish within 1s"),
        "{run}"
    );
    assert_eq!(
        get_json(&format!("{}/admin/status", regate.admin_url)).await["gate"]["state"],
        "open"
    );
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_upload_that_waits_for_100_continue_goes_on_after_the_hold() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let registry = Registry::start();
    // The body idle timeout (1s) is shorter than the hold (2s): the timer must
    // start when the body is first read, not when the request arrived.
    let regate = {
        let certs = common::regate::TestCerts::new();
        let state = tempfile::tempdir().unwrap();
        let text = common::regate::config_toml(
            &registry.url,
            &certs,
            state.path(),
            &gc_section(&registry, "drain_timeout = \"1s\""),
        )
        .replace(
            "shutdown_timeout_secs = 2",
            "shutdown_timeout_secs = 2\nidle_timeout_secs = 1",
        );
        let settings =
            regate::config::Settings::from_toml(&text, "test", std::iter::empty()).unwrap();
        let server = regate::server::start(settings).await.unwrap();
        (server, certs, state)
    };
    let (server, _certs, _state) = regate;
    let plain = format!("http://{}", server.plain_addr.unwrap());
    let admin = format!("http://{}", server.admin_addr.unwrap());
    let client = common::gc::admin_client();
    let blob = pseudo_random("continue", 5_000);
    let digest = common::images::sha256(&blob);

    let r = client
        .post(format!("{plain}/v2/cont/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let uri: http::Uri = loc.parse().unwrap();
    let path = format!("{}&digest={digest}", uri.path_and_query().unwrap());

    let r = client
        .put(format!("{admin}/admin/maintenance"))
        .json(&serde_json::json!({"reason": "hold test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A client that sends its body only after `100 Continue`.
    let mut tcp = tokio::net::TcpStream::connect(server.plain_addr.unwrap())
        .await
        .unwrap();
    tcp.write_all(
        format!(
            "PUT {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            server.plain_addr.unwrap(),
            blob.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = client
        .delete(format!("{admin}/admin/maintenance"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 100"), "{head}");
    tcp.write_all(&blob).await.unwrap();
    let mut answer = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !answer.contains("\r\n\r\n") && std::time::Instant::now() < deadline {
        let n = tcp.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(blob_on_disk(&registry.storage, &digest));
    server.shutdown().await;
}

/// Against a registry with its own htpasswd, regate sends its
/// `[upstream] username` credentials on its own GC calls too: the keeper
/// that holds a cut push's blobs through GC, and untagged cleanup's deletes
/// (without them both got 401: GC deleted the push's blobs, and the cleanup
/// failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeper_and_untagged_cleanup_use_the_upstream_credentials() {
    use common::auth::{password, GuardedRegistry};
    let registry = GuardedRegistry::start(&["regate-upstream"]);
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("upstream-password");
    std::fs::write(&pw_file, format!("{}\n", password("regate-upstream"))).unwrap();
    let gc = format!(
        "[gc]\ncommand = [\"docker-registry\", \"garbage-collect\", {:?}]\nstorage_root = {:?}\ndrain_timeout = \"1s\"\n",
        registry.config.display().to_string(),
        registry.storage.display().to_string(),
    );
    let env = vec![
        ("REGATE_UPSTREAM__USERNAME".into(), "regate-upstream".into()),
        (
            "REGATE_UPSTREAM__PASSWORD_FILE".into(),
            pw_file.display().to_string(),
        ),
    ];
    let regate = Regate::start_with_env(&registry.url, &gc, env).await;
    let client = regate.client();

    // A push cut by the drain: its blobs are kept through GC by a keeper.
    let img = Image::oci("guarded-cut", 50_000);
    let repo = "guarded/cut";
    for b in &img.blobs {
        push_blob(&client, &regate.url, repo, &b.bytes).await;
    }
    let run = start_gc(&regate.admin_url, false, false, true).await["run"].clone();
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["drain_timed_out"], true, "{run}");
    for b in &img.blobs {
        assert!(
            blob_on_disk(&registry.storage, &b.digest),
            "GC deleted a blob of the push under way: the keeper was not stored"
        );
    }
    assert_eq!(revision_links(&registry.storage, repo), 0, "keeper left");
    put_manifest(&client, &regate.url, repo, "v1", &img).await;

    // A tag moved to another image: untagged cleanup deletes the old one.
    let old = Image::oci("guarded-old", 1_000);
    let new = Image::oci("guarded-new", 1_000);
    old.push(&client, &regate.url, "guarded/app", "v1").await;
    new.push(&client, &regate.url, "guarded/app", "v1").await;
    assert_eq!(revision_links(&registry.storage, "guarded/app"), 2);
    let run = start_gc(&regate.admin_url, false, true, true).await["run"].clone();
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["manifests_deleted"], 1, "{run}");
    assert_eq!(revision_links(&registry.storage, "guarded/app"), 1);
    assert!(!blob_on_disk(&registry.storage, &old.blobs[1].digest));
    pull_and_check(&regate, "guarded/app", "v1", &new).await;
    pull_and_check(&regate, repo, "v1", &img).await;
    regate.stop().await;
}
