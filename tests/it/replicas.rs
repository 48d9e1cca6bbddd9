//! Several replicas on one `[state] url`: a PostgreSQL of the test's own, two
//! real `docker-registry` processes over ONE storage directory (one
//! `http.secret`), and two regate replicas, one in front of each. The write
//! gate and the GC lease are the cluster's (`regate::cluster`).

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::gc::{
    admin_client, gc_section, get_json, slow_gc_section, start_gc, wait_gate, wait_run,
};
use common::images::{put_manifest, ACCEPT_ALL};
use common::postgres::{replica_extra, Postgres};
use common::regate::{config_toml, RegateProcess, TestCerts};
use common::{Image, Regate, Registry};

async fn gc_json(admin: &str) -> serde_json::Value {
    get_json(&format!("{admin}/admin/gc")).await
}

/// The image behind `repo:tag` through `base` is `img`, byte for byte.
async fn check_image(client: &reqwest::Client, base: &str, repo: &str, tag: &str, img: &Image) {
    let r = client
        .get(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{repo}:{tag}");
    assert_eq!(r.headers()["docker-content-digest"], img.digest.as_str());
    for b in img.all_blobs() {
        let r = client
            .get(format!("{base}/v2/{repo}/blobs/{}", b.digest))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "blob {}", b.digest);
        assert_eq!(r.bytes().await.unwrap().as_ref(), b.bytes.as_slice());
    }
}

/// Polls until the gate of `admin` is `state`; how long it took.
async fn gate_becomes(admin: &str, state: &str, within: Duration) -> Duration {
    let t = Instant::now();
    wait_gate(admin, state, within).await;
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_and_maintenance_through_a_hold_pushes_through_b() {
    let pg = Postgres::start();
    let url = pg.create_database("gate");
    let ra = Registry::start();
    let rb = Registry::start_sharing_storage_of(&ra);
    let a = Regate::start_with(
        &ra.url,
        &replica_extra(&url, &slow_gc_section(&ra, 3, "hold_timeout = \"60s\"")),
    )
    .await;
    let b = Regate::start_with(
        &rb.url,
        &replica_extra(&url, &gc_section(&rb, "hold_timeout = \"60s\"")),
    )
    .await;
    let first = Image::oci("replicas-first", 2048);
    first.push(&b.client(), &b.url, "app", "v1").await;

    // GC through A closes B's gate too.
    let id = start_gc(&a.admin_url, false, false, false).await["id"]
        .as_i64()
        .unwrap();
    let seen = gate_becomes(&b.admin_url, "closed", Duration::from_secs(5)).await;
    let a_replica = gc_json(&a.admin_url).await["gate"]["cluster"]["replica"]
        .as_str()
        .unwrap()
        .to_owned();
    let view = gc_json(&b.admin_url).await;
    assert_eq!(
        view["gate"]["cluster"]["gate"]["holder_replica"],
        a_replica.as_str(),
        "{view}"
    );
    assert_eq!(
        view["gate"]["cluster"]["gc"]["replica"],
        a_replica.as_str(),
        "{view}"
    );
    assert_eq!(view["gate"]["cluster"]["gc"]["run_id"], id, "{view}");

    // One GC at a time: B answers 409 naming A's run.
    let r = admin_client()
        .post(format!("{}/admin/gc", b.admin_url))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body = r.text().await.unwrap();
    assert!(
        body.contains(&a_replica) && body.contains(&format!("run {id}")),
        "{body}"
    );

    // A push through B is held while A's GC runs, then completes whole.
    let img = Image::oci("replicas-during-gc", 4096);
    let (client, base, pushed) = (b.client(), b.url.clone(), img.clone());
    let push = tokio::spawn(async move { pushed.push(&client, &base, "app", "v2").await });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        !push.is_finished(),
        "a push through B went on during A's GC"
    );
    let run = wait_run(&a.admin_url, id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    tokio::time::timeout(Duration::from_secs(20), push)
        .await
        .expect("the held push completes after the GC")
        .unwrap();
    check_image(&a.client(), &a.url, "app", "v2", &img).await;
    check_image(&b.client(), &b.url, "app", "v1", &first).await;
    eprintln!("B saw A's gate close after {seen:?} (polling B's admin API)");

    // Maintenance through A holds B's pushes; switching it off through B opens A's gate.
    let r = admin_client()
        .put(format!("{}/admin/maintenance", a.admin_url))
        .json(&serde_json::json!({"reason": "backup"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    gate_becomes(&b.admin_url, "closed", Duration::from_secs(2)).await;
    let img3 = Image::oci("replicas-during-maintenance", 1024);
    let (client, base, pushed) = (b.client(), b.url.clone(), img3.clone());
    let push = tokio::spawn(async move { pushed.push(&client, &base, "app", "v3").await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !push.is_finished(),
        "a push through B went on during maintenance"
    );
    let r = admin_client()
        .delete(format!("{}/admin/maintenance", b.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    gate_becomes(&a.admin_url, "open", Duration::from_secs(2)).await;
    tokio::time::timeout(Duration::from_secs(10), push)
        .await
        .expect("the held push completes after maintenance")
        .unwrap();
    check_image(&a.client(), &a.url, "app", "v3", &img3).await;
}

/// Whether `pid` is gone (or a zombie nobody reaped yet).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 2..]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_owned();
            state == "Z" || state == "X"
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_a_mid_gc_kills_its_command_and_b_reopens_the_gate() {
    let pg = Postgres::start();
    let url = pg.create_database("sigkill");
    let ra = Registry::start();
    let rb = Registry::start_sharing_storage_of(&ra);
    let b = Regate::start_with(&rb.url, &replica_extra(&url, "")).await;
    Image::oci("sigkill-first", 1024)
        .push(&b.client(), &b.url, "app", "v1")
        .await;
    // A: the binary, so it can be killed; its GC command sleeps (a stand-in
    // for a long garbage-collect).
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
    let id = start_gc(&a_admin, false, false, false).await["id"]
        .as_i64()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        let v = gc_json(&a_admin).await;
        if let Some(pid) = v["running"]["pid"].as_u64() {
            break pid as u32;
        }
        assert!(
            Instant::now() < deadline,
            "the GC command did not start: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!process_gone(pid));
    gate_becomes(&b.admin_url, "closed", Duration::from_secs(2)).await;

    a.kill(); // SIGKILL
    let killed = Instant::now();
    while !process_gone(pid) {
        assert!(
            killed.elapsed() < Duration::from_secs(2),
            "the GC command {pid} of run {id} outlived its replica"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Still closed right after (the command might have been running)...
    assert_eq!(gc_json(&b.admin_url).await["gate"]["state"], "closed");
    // ...and reopened within the bound.
    let reopened = gate_becomes(&b.admin_url, "open", Duration::from_secs(30)).await;
    eprintln!("B reopened the gate {reopened:?} after A was killed");
    assert!(
        reopened >= Duration::from_secs(5),
        "reopened too early: {reopened:?}"
    );
    Image::oci("sigkill-after", 1024)
        .push(&b.client(), &b.url, "app", "v2")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_mid_run_stops_writes_until_it_is_back() {
    let mut pg = Postgres::start();
    let url = pg.create_database("outage");
    let ra = Registry::start();
    let rb = Registry::start_sharing_storage_of(&ra);
    let a = Regate::start_with(&ra.url, &replica_extra(&url, &slow_gc_section(&ra, 30, ""))).await;
    let b = Regate::start_with(
        &rb.url,
        &replica_extra(
            &url,
            &gc_section(&rb, "closed_writes = \"reject\"\nretry_after = \"7s\""),
        ),
    )
    .await;
    let img = Image::oci("outage-first", 1024);
    img.push(&b.client(), &b.url, "app", "v1").await;
    let id = start_gc(&a.admin_url, false, false, false).await["id"]
        .as_i64()
        .unwrap();
    gate_becomes(&b.admin_url, "closed", Duration::from_secs(3)).await;
    let pid = loop {
        if let Some(pid) = gc_json(&a.admin_url).await["running"]["pid"].as_u64() {
            break pid as u32;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let stopped = Instant::now();
    pg.stop();
    // A lost its lease: its GC command is killed (the run's record, in
    // PostgreSQL too, is read once it is back, below).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !process_gone(pid) {
        assert!(
            Instant::now() < deadline,
            "the GC command outlived the lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // B cannot confirm the gate: unknown, not ready, writes refused, reads served.
    wait_gate(&b.admin_url, "unknown", Duration::from_secs(6)).await;
    eprintln!(
        "B says unknown {:?} after PostgreSQL stopped",
        stopped.elapsed()
    );
    let r = admin_client()
        .get(format!("{}/readyz", b.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("state.url"));
    let r = b
        .client()
        .post(format!("{}/v2/app/blobs/uploads/", b.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "7");
    assert!(r.text().await.unwrap().contains("UNAVAILABLE"));
    check_image(&b.client(), &b.url, "app", "v1", &img).await;
    // What needs the state says "retry", not "fault": a GC asked of B, the
    // referrers of the image.
    let r = admin_client()
        .post(format!("{}/admin/gc", b.admin_url))
        .json(&serde_json::json!({"dry_run": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "POST /admin/gc while PostgreSQL is down");
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(r.text().await.unwrap().contains("UNAVAILABLE"));
    let r = b
        .client()
        .get(format!("{}/v2/app/referrers/{}", b.url, img.digest))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "referrers while PostgreSQL is down");
    assert_eq!(r.headers()["retry-after"], "1");
    // A too, through its own gate.
    let r = a
        .client()
        .post(format!("{}/v2/app/blobs/uploads/", a.url))
        .timeout(Duration::from_secs(3))
        .send()
        .await;
    assert!(
        r.map(|r| r.status() != 202).unwrap_or(true),
        "A admitted a write"
    );

    pg.start_again();
    let back = gate_becomes(&b.admin_url, "open", Duration::from_secs(10)).await;
    eprintln!("B open again {back:?} after PostgreSQL came back");
    // The run is recorded as failed: its lease was lost.
    let run = wait_run(&a.admin_url, id, Duration::from_secs(10)).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(run["error"].as_str().unwrap().contains("lease"), "{run}");
    Image::oci("outage-after", 1024)
        .push(&b.client(), &b.url, "app", "v2")
        .await;
    Image::oci("outage-after-a", 1024)
        .push(&a.client(), &a.url, "app", "v3")
        .await;
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_start_at_once_on_an_empty_database() {
    let pg = Postgres::start();
    let url = pg.create_database("empty");
    let r = Registry::start();
    let extra = replica_extra(&url, "");
    let (a, b, c) = tokio::join!(
        Regate::start_with(&r.url, &extra),
        Regate::start_with(&r.url, &extra),
        Regate::start_with(&r.url, &extra),
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let v = gc_json(&b.admin_url).await;
        if v["gate"]["cluster"]["live_replicas"]
            .as_array()
            .map(Vec::len)
            == Some(3)
        {
            assert_eq!(v["gate"]["state"], "open");
            break;
        }
        assert!(Instant::now() < deadline, "not three live replicas: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Image::oci("at-once", 512)
        .push(&c.client(), &c.url, "app", "v1")
        .await;
    drop((a, b, c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tag_delete_through_a_is_ordered_with_reads_and_pushes_through_b() {
    let pg = Postgres::start();
    let url = pg.create_database("tags");
    let ra = Registry::start();
    let rb = Registry::start_sharing_storage_of(&ra);
    // A's registry answers slowly: the dummy stays on the tag for a while.
    let relay = common::relay::Relay::start_with_delay(
        &format!("127.0.0.1:{}", ra.port),
        Duration::from_millis(40),
    )
    .await;
    let a = Regate::start_with(&relay.url, &replica_extra(&url, "")).await;
    let b = Regate::start_with(&rb.url, &replica_extra(&url, "")).await;
    let repo = "race/app";
    let one = Image::oci("cluster-race-one", 1000);
    let two = Image::docker("cluster-race-two", 1000);
    one.push(&b.client(), &b.url, repo, "base-one").await;
    two.push(&b.client(), &b.url, repo, "base-two").await;
    let allowed = [one.digest.clone(), two.digest.clone()];

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicUsize::new(0));
    let reader = common::images::watch_tag(
        b.client(),
        b.url.clone(),
        repo,
        "x",
        allowed.to_vec(),
        stop.clone(),
        seen.clone(),
    );
    let mut removed = 0;
    let rounds = 15;
    for round in 0..rounds {
        put_manifest(&b.client(), &b.url, repo, "x", &one).await;
        let (bc, ac) = (b.client(), a.client());
        let push = async {
            // Half the rounds push through B while A deletes.
            if round % 2 == 1 {
                put_manifest(&bc, &b.url, repo, "x", &two).await;
            }
        };
        let delete = ac.delete(format!("{}/v2/{repo}/manifests/x", a.url)).send();
        let (_, del) = tokio::join!(push, delete);
        let del = del.unwrap();
        assert_eq!(
            del.status(),
            202,
            "round {round}: {}",
            del.text().await.unwrap()
        );
        let r = b
            .client()
            .head(format!("{}/v2/{repo}/manifests/x", b.url))
            .header("accept", ACCEPT_ALL)
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            404 => removed += 1,
            200 => assert_eq!(
                r.headers()["docker-content-digest"],
                two.digest.as_str(),
                "round {round}: only the pushed digest may remain"
            ),
            s => panic!("round {round}: {s}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let foreign = reader.await.unwrap();
    assert!(foreign.is_empty(), "B's readers saw dummies: {foreign:?}");
    assert!(seen.load(Ordering::Relaxed) > 0, "B's reader saw the tag");
    eprintln!(
        "{rounds} rounds: removed {removed}, pushed digest kept {}",
        rounds - removed
    );
    for rev in common::storage::revisions(&ra.storage, repo) {
        assert!(allowed.contains(&rev), "stray manifest {rev}");
    }
    // B's locks taken for A's deletes are all released.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !b.server.as_ref().unwrap().app.tags.locks.is_empty() {
        assert!(Instant::now() < deadline, "B still holds tag locks");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_bad_state_url_is_a_problem_naming_the_key_never_the_password() {
    let certs = TestCerts::new();
    let dir = tempfile::tempdir().unwrap();
    let text = config_toml(
        "http://127.0.0.1:1",
        &certs,
        dir.path(),
        "url = \"postgres://u:s3cret@127.0.0.1:notaport/db\"\n",
    );
    let Err(err) = regate::config::Settings::from_toml(&text, "t", std::iter::empty()) else {
        panic!("a URL that does not parse is refused");
    };
    let err = err.to_string();
    assert!(err.contains("state.url"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    // REGATE_STATE__URL sets it too.
    let text = config_toml("http://127.0.0.1:1", &certs, dir.path(), "");
    let env = vec![(
        "REGATE_STATE__URL".to_owned(),
        "postgres://u:p@127.0.0.1:5/db".to_owned(),
    )];
    let s = regate::config::Settings::from_toml(&text, "t", env.into_iter()).unwrap();
    let url = s.state.url.expect("REGATE_STATE__URL sets state.url");
    assert_eq!(url.config().get_dbname(), Some("db"));
    assert_eq!(url.config().get_password(), Some(&b"p"[..]));

    // A wrong password: a start-up error naming the key, not the password.
    let pg = Postgres::start();
    pg.create_database("login");
    let wrong = pg
        .url("login")
        .replace(common::postgres::PASSWORD, "wrong-s3cret");
    let r = Registry::start();
    let text = config_toml(&r.url, &certs, dir.path(), &replica_extra(&wrong, ""));
    let settings = regate::config::Settings::from_toml(&text, "t", std::iter::empty()).unwrap();
    let Err(err) = regate::server::start(settings).await else {
        panic!("a wrong password stops the start");
    };
    let err = err.to_string();
    assert!(err.contains("state.url"), "{err}");
    assert!(!err.contains("wrong-s3cret"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduled_time_is_run_by_one_replica_only() {
    let pg = Postgres::start();
    let url = pg.create_database("schedule");
    let ra = Registry::start();
    let rb = Registry::start_sharing_storage_of(&ra);
    Image::oci("schedule-first", 512)
        .push(&reqwest::Client::new(), &ra.url, "app", "v1")
        .await;
    let every = "schedule = \"*/2 * * * * *\"";
    let a = Regate::start_with(&ra.url, &replica_extra(&url, &gc_section(&ra, every))).await;
    let b = Regate::start_with(&rb.url, &replica_extra(&url, &gc_section(&rb, every))).await;
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let (ha, hb) = (gc_json(&a.admin_url).await, gc_json(&b.admin_url).await);
    let runs = |v: &serde_json::Value| {
        v["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["trigger"] == "schedule")
            .count()
    };
    // The history is the cluster's (shared in PostgreSQL): both replicas
    // list the same runs.
    assert_eq!(runs(&ha), runs(&hb), "{ha} {hb}");
    let total = runs(&ha);
    let ticks: usize = pg
        .sql(
            "schedule",
            "SELECT count(*) FROM regate_cluster_ticks WHERE kind = 'gc'",
        )
        .trim()
        .parse()
        .unwrap();
    assert!(ticks >= 2, "scheduled times claimed: {ticks}");
    // Each time ran once in the cluster (a run may still be starting).
    assert!(
        total == ticks || total + 1 == ticks,
        "{total} runs for {ticks} times: {ha} {hb}"
    );
}

/// Not a check but a measurement (`cargo test --test replicas -- --ignored
/// --nocapture gate_visibility`): how long after maintenance is asked of A
/// B's own gate leaves `open`, while clients push through B.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn gate_visibility_under_push_load() {
    let pg = Postgres::start();
    let url = pg.create_database("visibility");
    let ra = Registry::start();
    let rb = Registry::start_sharing_storage_of(&ra);
    // The load keeps a push under way on B: its drain ends at drain_timeout.
    let a = Regate::start_with(
        &ra.url,
        &replica_extra(&url, "[gc]\ndrain_timeout = \"1s\"\n"),
    )
    .await;
    let b = Regate::start_with(
        &rb.url,
        &replica_extra(
            &url,
            "[gc]\nclosed_writes = \"reject\"\ndrain_timeout = \"1s\"\n",
        ),
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let pushed = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for i in 0..4 {
        let (client, base, stop, pushed) =
            (b.client(), b.url.clone(), stop.clone(), pushed.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let bytes = common::images::pseudo_random(&format!("load-{i}-{n}"), 64 * 1024);
                let r = client
                    .post(format!("{base}/v2/load/blobs/uploads/"))
                    .send()
                    .await
                    .unwrap();
                if r.status() != 202 {
                    continue;
                }
                let loc =
                    common::images::absolute(&base, r.headers()["location"].to_str().unwrap());
                let sep = if loc.contains('?') { '&' } else { '?' };
                let digest = common::images::sha256(&bytes);
                let r = client
                    .put(format!("{loc}{sep}digest={digest}"))
                    .body(bytes)
                    .send()
                    .await
                    .unwrap();
                if r.status() == 201 {
                    pushed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut seen = Vec::new();
    for _ in 0..15 {
        let t0 = Instant::now();
        let put = admin_client()
            .put(format!("{}/admin/maintenance", a.admin_url))
            .json(&serde_json::json!({"reason": "measure"}))
            .send();
        let watch = async {
            loop {
                let v = gc_json(&b.admin_url).await;
                if v["gate"]["local_state"] != "open" {
                    return t0.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        let (r, t) = tokio::join!(put, watch);
        assert_eq!(r.unwrap().status(), 200);
        seen.push(t);
        let r = admin_client()
            .delete(format!("{}/admin/maintenance", a.admin_url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        wait_gate(&b.admin_url, "open", Duration::from_secs(5)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    seen.sort();
    eprintln!(
        "B's gate left open after A was asked: p50 {:?}, max {:?} (15 closes, {} blobs pushed through B meanwhile)",
        seen[seen.len() / 2],
        seen[seen.len() - 1],
        pushed.load(Ordering::Relaxed)
    );
}
