//! The cluster's gate when a GC run or a maintenance switch goes wrong
//! across replicas. Each case was found by the cluster soak
//! (tests/soak_cluster.rs).

use crate::common;

use std::time::{Duration, Instant};

use common::gc::{admin_client, gc_section, get_json, slow_gc_section, start_gc, wait_run};
use common::postgres::{replica_extra, Postgres};
use common::regate::{config_toml, RegateProcess, TestCerts};
use common::{Image, Regate, Registry};

/// A gate left closed by the GC of a replica that died is reopened within
/// the bound (`follower::GRACE` after its lease is seen free) even while
/// other replicas keep trying to start GC runs: each attempt takes the lease
/// for a moment and fails on the closed gate, and is no sign of life of the
/// dead GC (soak seed 10046643277446462000: a scheduled GC every 8 s kept
/// such a gate closed 72 s, until the load ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_replicas_gc_gate_reopens_while_others_keep_trying_gc() {
    let pg = Postgres::start();
    let url = pg.create_database("reap");
    let ra = Registry::start();
    let rb = Registry::start_sharing_storage_of(&ra);
    // B tries a scheduled GC every 2 s (well under GRACE).
    let b = Regate::start_with(
        &rb.url,
        &replica_extra(&url, &gc_section(&rb, "schedule = \"*/2 * * * * *\"")),
    )
    .await;
    // A: the binary, so it can be killed; its GC command sleeps.
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::new();
    let gc = format!(
        "[gc]\ncommand = [\"sleep\", \"120\"]\nstorage_root = {:?}\n",
        ra.storage.display().to_string()
    );
    let config = config_toml(
        &ra.url,
        &certs,
        &dir.path().join("state"),
        &replica_extra(&url, &gc),
    );
    let mut a = RegateProcess::spawn(dir.path(), &config, &[]);
    let a_admin = a.admin_url.clone().unwrap();
    let a_replica = get_json(&format!("{a_admin}/admin/gc")).await["gate"]["cluster"]["replica"]
        .as_str()
        .unwrap()
        .to_owned();
    let held_by_a = |v: &serde_json::Value| {
        v["gate"]["state"] == "closed"
            && v["gate"]["cluster"]["gate"]["holder_replica"] == a_replica.as_str()
    };
    // A's run may meet one of B's scheduled runs (409, or it fails on B's
    // closed gate): try again until A's run holds the gate.
    let deadline = Instant::now() + Duration::from_secs(40);
    'started: loop {
        assert!(Instant::now() < deadline, "A's GC never closed the gate");
        let r = common::gc::admin_client()
            .post(format!("{a_admin}/admin/gc"))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        if r.status() != 202 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let id = r.json::<serde_json::Value>().await.unwrap()["id"].clone();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if held_by_a(&get_json(&format!("{}/admin/gc", b.admin_url)).await) {
                break 'started;
            }
            let run = get_json(&format!("{a_admin}/admin/gc/{id}")).await;
            if run["status"] != "running" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    a.kill(); // SIGKILL: its lease goes with its session
    let killed = Instant::now();
    loop {
        let v = get_json(&format!("{}/admin/gc", b.admin_url)).await;
        if !held_by_a(&v) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "B's gate still held by the dead replica's GC {:?} after the kill, while B's scheduled runs failed on it: {}",
            killed.elapsed(),
            v["gate"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "the dead replica's gate released {:?} after the kill",
        killed.elapsed()
    );
    // Writes go through again (B's own scheduled runs may hold them briefly).
    tokio::time::timeout(
        Duration::from_secs(30),
        Image::oci("reap-after", 512).push(&b.client(), &b.url, "app", "v1"),
    )
    .await
    .expect("a push through B completes once the gate is reopened");
}

/// Maintenance refused (409: a GC of another replica holds the gate) is not
/// left recorded as on (it was: every GC after it was refused "in
/// maintenance", and a restart would have closed the gate for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn maintenance_refused_while_a_gc_holds_the_gate_is_not_left_on() {
    let pg = Postgres::start();
    let url = pg.create_database("refused");
    let ra = Registry::start();
    let rb = Registry::start_sharing_storage_of(&ra);
    let a = Regate::start_with(&ra.url, &replica_extra(&url, &slow_gc_section(&ra, 3, ""))).await;
    let b = Regate::start_with(&rb.url, &replica_extra(&url, &gc_section(&rb, ""))).await;
    let id = start_gc(&a.admin_url, false, false, false).await["id"]
        .as_i64()
        .unwrap();
    common::gc::wait_gate(&b.admin_url, "closed", Duration::from_secs(5)).await;

    // Through B, while A's GC holds the gate: refused...
    let r = admin_client()
        .put(format!("{}/admin/maintenance", b.admin_url))
        .json(&serde_json::json!({"reason": "backup"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "{}", r.text().await.unwrap());
    // ...and not recorded, on either replica.
    for admin in [&a.admin_url, &b.admin_url] {
        let m = get_json(&format!("{admin}/admin/maintenance")).await;
        assert!(m["maintenance"].is_null(), "left on: {m}");
    }
    let run = wait_run(&a.admin_url, id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    // The next GC is not refused "in maintenance" (A's lease may take a
    // moment to go after its run ended: "already running" is retried).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = admin_client()
            .post(format!("{}/admin/gc?wait=true", b.admin_url))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        if status == 200 {
            assert!(body.contains("\"succeeded\""), "{body}");
            break;
        }
        assert!(
            body.contains("already running") && Instant::now() < deadline,
            "{status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A GC run cut by the death of its replica and resumed by a replica that
/// took it over closes the gate again, although its first attempt closed it
/// (it failed "GC run N ... holds the gate": no run cut by a kill was ever
/// resumed in a cluster).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gc_run_resumed_after_its_replica_died_closes_the_gate_again() {
    let pg = Postgres::start();
    let url = pg.create_database("resumed");
    let ra = Registry::start();
    Image::oci("resumed-first", 512)
        .push(&reqwest::Client::new(), &ra.url, "app", "v1")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::new();
    let config = config_toml(
        &ra.url,
        &certs,
        &dir.path().join("state"),
        &replica_extra(&url, &slow_gc_section(&ra, 2, "")),
    );
    let mut a = RegateProcess::spawn(dir.path(), &config, &[]);
    let admin = a.admin_url.clone().unwrap();
    let id = start_gc(&admin, false, false, false).await["id"]
        .as_i64()
        .unwrap();
    common::gc::wait_gate(&admin, "closed", Duration::from_secs(10)).await;
    a.kill(); // mid-run: the command (sleeping) dies with it
              // The same replica started again takes the dead process's run over and
              // resumes it; the gate is still closed by that run's first attempt.
    let a = RegateProcess::spawn(dir.path(), &config, &[]);
    let admin = a.admin_url.clone().unwrap();
    let run = wait_run(&admin, id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["attempts"], 2, "{run}");
    common::gc::wait_gate(&admin, "open", Duration::from_secs(5)).await;
}

/// A replica still draining for one closing of the gate when the next one
/// comes acks that one too (a resumed GC run closes again; maintenance
/// switched on twice). Its second drain found the gate closed by the first,
/// counted itself cancelled and never acked: the closer failed "did not
/// confirm that their writes drained" with the replica alive (soak seed
/// 12853498353094683324).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_close_during_a_drain_is_acked() {
    let pg = Postgres::start();
    let url = pg.create_database("reclose");
    let ra = Registry::start();
    let rb = Registry::start_sharing_storage_of(&ra);
    let section = "[gc]\ndrain_timeout = \"2s\"\n";
    let a = Regate::start_with(&ra.url, &replica_extra(&url, section)).await;
    let b = Regate::start_with(&rb.url, &replica_extra(&url, section)).await;
    // A push under way through B: B's drains last their whole drain_timeout.
    let r = b
        .client()
        .post(format!("{}/v2/app/blobs/uploads/", b.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let on = |reason: &'static str| {
        admin_client()
            .put(format!("{}/admin/maintenance", a.admin_url))
            .json(&serde_json::json!({ "reason": reason }))
            .send()
    };
    let first = tokio::spawn(on("first"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let second = on("second").await.unwrap();
    let status = second.status();
    assert_eq!(status, 200, "{}", second.text().await.unwrap());
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
}

/// A tag delete that ends while PostgreSQL is away still releases the tag on
/// the other replicas once PostgreSQL is back. The release was tried once:
/// its row stayed, the other replicas kept the tag locked for the live
/// deleting replica, and every read of the tag through them hung (120 s
/// client timeouts in the cluster soak, seed 5963594080580544014).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_ending_while_postgres_is_away_releases_the_tag_after() {
    let mut pg = Postgres::start();
    let url = pg.create_database("release");
    let ra = Registry::start();
    let rb = Registry::start_sharing_storage_of(&ra);
    // A's registry answers slowly: PostgreSQL is stopped while A's delete,
    // holding the tag on B, plans.
    let relay = common::relay::Relay::start_with_delay(
        &format!("127.0.0.1:{}", ra.port),
        Duration::from_millis(1500),
    )
    .await;
    let a = Regate::start_with(&relay.url, &replica_extra(&url, "")).await;
    let b = Regate::start_with(&rb.url, &replica_extra(&url, "")).await;
    Image::oci("release-one", 512)
        .push(&b.client(), &b.url, "app", "x")
        .await;
    let b_locks = || b.server.as_ref().unwrap().app.tags.locks.is_empty();
    let (ac, aurl) = (a.client(), a.url.clone());
    let delete =
        tokio::spawn(async move { ac.delete(format!("{aurl}/v2/app/manifests/x")).send().await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while b_locks() {
        assert!(Instant::now() < deadline, "B never took the tag's lock");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pg.stop();
    let _ = tokio::time::timeout(Duration::from_secs(30), delete).await;
    pg.start_again();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !b_locks() {
        assert!(
            Instant::now() < deadline,
            "B still holds the tag's lock 15 s after PostgreSQL came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = b
        .client()
        .get(format!("{}/v2/app/manifests/x", b.url))
        .header("accept", common::images::ACCEPT_ALL)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("a read of the tag through B is answered");
    assert!(matches!(r.status().as_u16(), 200 | 404), "{}", r.status());
}

/// A GC run reported finished has given its lease back: the next run, asked
/// of any replica right after, starts. The lease's thread used to free the
/// lock at its next ping, up to 0.5 s later, so a run asked for at once got
/// 409 naming the finished one (seen in the cluster soak's admin worker).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_finished_gc_run_has_freed_the_lease_when_it_is_reported() {
    let pg = Postgres::start();
    let url = pg.create_database("lease_freed");
    let ra = Registry::start();
    let rb = Registry::start_sharing_storage_of(&ra);
    let a = Regate::start_with(&ra.url, &replica_extra(&url, &gc_section(&ra, ""))).await;
    let b = Regate::start_with(&rb.url, &replica_extra(&url, &gc_section(&rb, ""))).await;
    Image::oci("lease-freed", 1024)
        .push(&a.client(), &a.url, "app", "v1")
        .await;
    // start_gc fails on any answer but 2xx (a 409 included).
    for admin in [&a.admin_url, &b.admin_url, &b.admin_url, &a.admin_url] {
        let done = start_gc(admin, false, false, true).await;
        assert_eq!(done["run"]["status"], "succeeded", "{done}");
    }
}
