//! regate's state in PostgreSQL (`[state] url`), with a real PostgreSQL and a
//! real 2.8 registry: a bad URL, a wrong password or a closed port stop the
//! start with a message naming `state.url` and never the password; tag
//! delete, undo (`regate tags restore`) and GC history work through one
//! replica and are seen by another on the same database; a replica killed
//! mid-delete has its journal entry finished or rolled back by a live one,
//! once, within the bound of its periodic check.

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::images::{put_manifest, ACCEPT_ALL};
use common::postgres::{replica_extra, Postgres, PASSWORD};
use common::regate::{client_trusting, config_toml, RegateProcess, TestCerts};
use common::{Image, Regate, Registry};

/// Runs the binary until it exits (30 s at most); (exit code, stdout + stderr).
fn run_regate(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regate"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "regate {args:?} did not exit: {}",
                std::fs::read_to_string(&out_path).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&out_path).unwrap(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_bad_state_url_stops_the_start_naming_the_key_never_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::new();
    let cfg = dir.path().join("regate.toml");
    let base = config_toml(
        "http://127.0.0.1:5000",
        &certs,
        &dir.path().join("state"),
        "",
    );
    let cfg_arg = cfg.to_str().unwrap().to_owned();

    // check-config: not a PostgreSQL URL, no database, verify-full without its CA.
    for (url, says) in [
        ("mysql://regate:hunter2@db/regate", "not a PostgreSQL URL"),
        ("postgres://regate:hunter2@db:5432/", "names no database"),
        (
            "postgres://regate:hunter2@db/regate?sslmode=verify-full",
            "sslmode=verify-full needs the CA",
        ),
    ] {
        std::fs::write(&cfg, format!("{base}url = {url:?}\n")).unwrap();
        let (code, out) = run_regate(&["check-config", "--config", &cfg_arg], &[]);
        assert_eq!(code, 2, "{url}: {out}");
        assert!(
            out.contains("state.url") && out.contains(says),
            "{url}: {out}"
        );
        assert!(!out.contains("hunter2"), "{url}: the password shows: {out}");
    }
    // The same key from the environment.
    std::fs::write(&cfg, &base).unwrap();
    let (code, out) = run_regate(
        &["check-config", "--config", &cfg_arg],
        &[("REGATE_STATE__URL", "postgres://regate:hunter2@db/")],
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("state.url") && !out.contains("hunter2"),
        "{out}"
    );
    std::fs::write(
        &cfg,
        format!("{base}url = \"postgres://regate:hunter2@db/regate\"\n"),
    )
    .unwrap();
    let (code, out) = run_regate(&["check-config", "--config", &cfg_arg], &[]);
    assert_eq!(code, 0, "a good URL passes: {out}");

    // serve: a wrong password, then a port nobody listens on.
    let pg = Postgres::start();
    pg.create_database("regate");
    let wrong = format!(
        "postgres://regate:not-{PASSWORD}@127.0.0.1:{}/regate",
        pg.port
    );
    let closed = format!(
        "postgres://regate:{PASSWORD}@127.0.0.1:{}/regate",
        free_port()
    );
    let unknown_db = format!("postgres://regate:{PASSWORD}@127.0.0.1:{}/nope", pg.port);
    for (url, says, secret) in [
        (
            &wrong,
            "password authentication failed",
            format!("not-{PASSWORD}"),
        ),
        (&closed, "refused", PASSWORD.to_owned()),
        (
            &unknown_db,
            "database \"nope\" does not exist",
            PASSWORD.to_owned(),
        ),
    ] {
        std::fs::write(&cfg, format!("{base}url = {url:?}\n")).unwrap();
        let (code, out) = run_regate(&["serve", "--config", &cfg_arg], &[]);
        assert_ne!(code, 0, "{url}: {out}");
        assert!(
            out.contains("state.url") && out.contains(says),
            "{says}: {out}"
        );
        assert!(!out.contains(&secret), "the password shows: {out}");
    }
}

async fn head_digest(
    client: &reqwest::Client,
    base: &str,
    repo: &str,
    tag: &str,
) -> Option<String> {
    let r = client
        .head(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    (r.status() == 200).then(|| {
        r.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_restore_and_gc_history_are_shared_by_replicas() {
    let pg = Postgres::start();
    let url = pg.create_database("shared");
    let registry = Registry::start();
    let gc = common::gc::gc_section(&registry, "");
    let a = Regate::start_with(&registry.url, &replica_extra(&url, &gc)).await;
    let b = Regate::start_with(&registry.url, &replica_extra(&url, &gc)).await;
    let (ca, cb) = (a.client(), b.client());
    let repo = "shared/app";
    let img = Image::oci("shared", 2000);
    img.push(&ca, &a.url, repo, "v1").await;
    put_manifest(&ca, &a.url, repo, "keep", &img).await;

    // Delete through A.
    let r = ca
        .delete(format!("{}/v2/{repo}/manifests/v1", a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(head_digest(&cb, &b.url, repo, "v1").await, None);
    assert_eq!(
        head_digest(&cb, &b.url, repo, "keep").await.as_deref(),
        Some(img.digest.as_str())
    );
    assert_eq!(
        pg.sql("shared", "SELECT tag || ' ' || digest FROM tag_deletions"),
        format!("v1 {}", img.digest)
    );
    assert_eq!(
        pg.sql(
            "shared",
            "SELECT count(*) FROM tag_delete_journal WHERE open = 1"
        ),
        "0"
    );

    // Undo through B: it finds what A recorded.
    let (ca_path, home) = (b.certs.files.ca_cert.clone(), b.state_dir.path().to_owned());
    let target = format!("{}/{repo}:v1", b.host);
    let (code, out) = tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_regate"))
            .args(["tags", "restore", &target, "--cacert"])
            .arg(&ca_path)
            .env_remove("REGISTRY_AUTH_FILE")
            .env("HOME", &home)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        head_digest(&ca, &a.url, repo, "v1").await.as_deref(),
        Some(img.digest.as_str())
    );
    assert!(
        pg.sql(
            "shared",
            "SELECT restored_at IS NOT NULL FROM tag_deletions"
        ) == "t",
        "marked restored"
    );

    // A GC run through A is in the history B shows.
    let run = common::gc::start_gc(a.admin_url.as_str(), true, false, true).await;
    let id = run["id"].as_i64().unwrap_or_else(|| panic!("{run}"));
    let seen = common::gc::get_json(&format!("{}/admin/gc", b.admin_url)).await;
    let history = seen["history"]
        .as_array()
        .unwrap_or_else(|| panic!("{seen}"));
    let started_by = pg.sql(
        "shared",
        &format!("SELECT replica FROM gc_runs WHERE id = {id}"),
    );
    assert!(!started_by.is_empty(), "the run records its replica");
    assert!(
        history.iter().any(|r| r["id"].as_i64() == Some(id)
            && r["status"] == "succeeded"
            && r["replica"].as_str() == Some(started_by.as_str())),
        "{seen}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_delete_is_recovered_by_a_live_one_once() {
    let pg = Postgres::start();
    let url = pg.create_database("crash");
    let registry = Registry::start();
    let direct = reqwest::Client::new();
    let live = Regate::start_with(&registry.url, &replica_extra(&url, "")).await;
    for (i, step) in ["after_intent", "after_dummy_put"].iter().enumerate() {
        let repo = format!("crash/r{i}");
        let img = Image::oci(&format!("crash-{step}"), 1500);
        img.push(&direct, &registry.url, &repo, "victim").await;
        put_manifest(&direct, &registry.url, &repo, "other", &img).await;

        // Replica B, on the same database, dies in the middle of a delete.
        let certs = TestCerts::new();
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "{}{}",
            config_toml(&registry.url, &certs, &dir.path().join("state"), ""),
            replica_extra(&url, "")
        );
        let client = client_trusting(&certs.files.ca_cert);
        RegateProcess::crash_during(dir.path(), &config, &format!("tag_delete:{step}"), |u| {
            client
                .delete(format!("{u}/v2/{repo}/manifests/victim"))
                .send()
        })
        .await;
        let open = pg.sql(
            "crash",
            "SELECT count(*) FROM tag_delete_journal WHERE open = 1",
        );
        assert_eq!(open, "1", "{step}: the dead replica left its entry open");

        // The live replica claims and resolves it within its check interval
        // (5 s) and the recovery's settle time (2 s), with room for a loaded machine.
        let started = Instant::now();
        while pg.sql(
            "crash",
            "SELECT count(*) FROM tag_delete_journal WHERE open = 1",
        ) != "0"
        {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{step}: the entry is still open"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let took = started.elapsed();
        let lc = live.client();
        let now = head_digest(&lc, &live.url, &repo, "victim").await;
        let expect_removed = *step == "after_dummy_put";
        if expect_removed {
            assert_eq!(now, None, "{step}: rolled forward");
            assert_eq!(
                pg.sql(
                    "crash",
                    &format!("SELECT count(*) FROM tag_deletions WHERE repository = '{repo}'")
                ),
                "1",
                "{step}: recorded once"
            );
        } else {
            assert_eq!(
                now.as_deref(),
                Some(img.digest.as_str()),
                "{step}: rolled back"
            );
        }
        assert_eq!(
            pg.sql(
                "crash",
                &format!("SELECT owner FROM tag_delete_journal WHERE repository = '{repo}'")
            ),
            live.server
                .as_ref()
                .map(|_| pg.sql("crash", "SELECT string_agg(id, ',') FROM replicas"))
                .unwrap(),
            "{step}: the live replica (the only one left) took it over"
        );
        assert_eq!(
            head_digest(&lc, &live.url, &repo, "other").await.as_deref(),
            Some(img.digest.as_str()),
            "{step}: the other tag is untouched"
        );
        eprintln!("{step}: recovered by the live replica after {took:?}");
    }
    live.stop().await;
}
