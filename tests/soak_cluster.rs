//! The soak test in its cluster form: a PostgreSQL of the test's own, two
//! real docker-registry processes over one storage (one `http.secret`), and
//! three regate binaries on one `[state] url`, each with the GC schedule
//! (each scheduled time is run by one elected replica). Each pusher pushes
//! through one replica; pullers and the deleter pick a replica per request,
//! so reads and deletes mostly go through another replica than the push.
//! An admin worker starts GC runs and switches maintenance on through one
//! replica and off through another; the killer SIGKILLs a random replica and
//! restarts it; PostgreSQL is restarted once mid-run
//! (`REGATE_SOAK_PG_RESTART=0` leaves that out).
//!
//! At the end (every replica restarted cleanly, a final GC through another
//! replica), the one-instance soak's checks (`tests/soak.rs`) hold, and
//! the cluster's: no GC command left running (no run `running` in the shared
//! history, none on any replica, no `garbage-collect` process), the gate
//! open on every replica, no tag-delete journal entry left open in
//! PostgreSQL, and each entry finished once (one deletion record per entry
//! closed `removed`, none for others: a recovery that ran twice would record
//! a second).
//!
//! `REGATE_SOAK_SECS` (default 60) sets how long the load runs;
//! `REGATE_SOAK_SEED` fixes the seed. `scripts/soak --cluster` runs the
//! long form.

#[path = "it/common/mod.rs"]
mod common;
mod soak_support;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::gc::{gc_section, get_json};
use common::postgres::Postgres;
use common::regate::{config_toml, TestCerts};
use common::Registry;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use soak_support::gc_runs::{collect_runs, final_gc, GcProgress};
use soak_support::ledger::{Counters, Ledger, TagState};
use soak_support::process::Regate;
use soak_support::summary::{self, Outcome};
use soak_support::workers::Targets;
use soak_support::{checks, images, workers};

const REPLICAS: usize = 3;
const PUSHERS: usize = 3;
const PULLERS: usize = 2;
/// Milliseconds between kills of a random replica. Slower than the
/// one-instance soak's 1.5-5 s: a killed replica counts as live until its
/// heartbeat is `cluster::DEAD_AFTER` (10 s) old, and until then every tag
/// delete waits 5 s for its ack and fails with 503 and every GC fails its
/// drain; at the one-instance pace no GC run completed in three 60 s runs.
const KILL_EVERY_MS: std::ops::Range<u64> = 6000..16000;
/// What the cluster soak must get done per 100 s (fewer kills and deletes
/// than one instance, see above).
const MINIMUMS: summary::Minimums = summary::Minimums {
    kills: 5,
    gc_completed: 1,
    pushes: 40,
    pulls: 40,
    deletes: 3,
};
/// The database of the cluster's state.
const DB: &str = "soak";

/// What the admin worker and the PostgreSQL restart did.
#[derive(Default)]
struct ClusterCounters {
    admin_gc_started: AtomicU64,
    /// 409: a run was already going somewhere in the cluster.
    admin_gc_refused: AtomicU64,
    maintenance_rounds: AtomicU64,
    /// Admin answers 500: the state unreachable during the PostgreSQL
    /// restart is answered 500, not 503 (reported, not a failure here).
    admin_500: AtomicU64,
    pg_restarts: AtomicU64,
    /// When PostgreSQL was back.
    pg_back: Mutex<Option<Instant>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_soak_with_kills_gc_and_a_postgres_restart() {
    common::require_tool("skopeo");
    let secs = soak_support::env_u64("REGATE_SOAK_SECS").unwrap_or(60);
    let seed = soak_support::env_u64("REGATE_SOAK_SEED").unwrap_or_else(rand::random);
    let pg_restart = soak_support::env_u64("REGATE_SOAK_PG_RESTART").unwrap_or(1) != 0;
    println!(
        "soak: cluster of {REPLICAS} replicas, {secs} s, seed {seed} (REGATE_SOAK_SEED={seed} repeats the choices), PostgreSQL restart {}",
        if pg_restart { "on" } else { "off" }
    );

    let pg = Postgres::start();
    let url = pg.create_database(DB);
    let pg = Arc::new(Mutex::new(pg));
    let ra = Registry::start();
    let rb = Registry::start_sharing_storage_of(&ra);
    let registries = [&ra, &rb];
    let certs = TestCerts::new();
    let dirs: Vec<_> = (0..REPLICAS)
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let mut replicas = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let registry = registries[i % registries.len()];
        let extra = format!(
            "url = {url:?}\n{}",
            gc_section(registry, &soak_support::gc_keys())
        );
        let config = config_toml(&registry.url, &certs, &dir.path().join("state"), &extra);
        let d = dir.path().to_owned();
        replicas.push(Arc::new(
            tokio::task::spawn_blocking(move || Regate::start(&d, &config))
                .await
                .unwrap(),
        ));
    }
    let _keep = KeepLogsOnFailure {
        seed,
        logs: replicas.iter().map(|r| r.log_path.clone()).collect(),
        pg: Arc::clone(&pg),
    };
    let urls: Vec<String> = replicas.iter().map(|r| r.url.clone()).collect();
    let admins: Vec<String> = replicas.iter().map(|r| r.admin_url.clone()).collect();
    let everywhere = Targets::new(urls.clone());
    let client = soak_support::client(&certs.files.ca_cert);

    let ledger = Arc::new(Ledger::default());
    let counters = Arc::new(ClusterCounters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(Mutex::new(BTreeMap::new()));
    let pool = Arc::new(images::shared_pool(seed, 6));
    let faults = Arc::new(tokio::sync::Mutex::new(()));
    let mut tasks = Vec::new();
    for id in 0..PUSHERS {
        // Each pusher through one replica.
        tasks.push(tokio::spawn(workers::pusher(
            id,
            seed,
            client.clone(),
            Targets::new(vec![urls[id % REPLICAS].clone()]),
            Arc::clone(&pool),
            Arc::clone(&ledger),
            Arc::clone(&stop),
        )));
    }
    for id in 0..PULLERS {
        tasks.push(tokio::spawn(workers::puller(
            id,
            seed,
            client.clone(),
            everywhere.clone(),
            Arc::clone(&ledger),
            Arc::clone(&stop),
        )));
    }
    tasks.push(tokio::spawn(workers::deleter(
        seed,
        client.clone(),
        everywhere.clone(),
        Arc::clone(&ledger),
        Arc::clone(&stop),
    )));
    tasks.push(tokio::spawn(workers::killer(
        seed,
        replicas.clone(),
        KILL_EVERY_MS,
        Arc::clone(&faults),
        Arc::clone(&ledger),
        Arc::clone(&stop),
    )));
    tasks.push(tokio::spawn(workers::gc_monitor(
        admins.clone(),
        Arc::clone(&runs),
        Arc::clone(&stop),
    )));
    tasks.push(tokio::spawn(admin_worker(
        seed,
        admins.clone(),
        Arc::clone(&counters),
        Arc::clone(&ledger),
        Arc::clone(&stop),
    )));
    if pg_restart {
        tasks.push(tokio::spawn(restart_postgres_once(
            seed,
            secs,
            Arc::clone(&pg),
            Arc::clone(&faults),
            Arc::clone(&counters),
            Arc::clone(&stop),
        )));
    }

    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let stopped = Instant::now();
    for (i, t) in tasks.into_iter().enumerate() {
        t.await.unwrap();
        if stopped.elapsed() > Duration::from_secs(20) {
            println!(
                "soak: worker {i} ended {:?} after the stop",
                stopped.elapsed()
            );
        }
    }
    let load_secs = started.elapsed().as_secs();

    // A last clean restart of every replica without the schedule, then a
    // final GC through another replica than the one that lists the runs.
    // The restarted replicas take over the GC runs dead ones left, but not
    // within 30 s of a PostgreSQL restart (`state::replicas`): wait for that.
    let pg_back = *counters.pg_back.lock().unwrap();
    if let Some(back) = pg_back {
        let bound = Duration::from_secs(31);
        if back.elapsed() < bound {
            tokio::time::sleep(bound - back.elapsed()).await;
        }
    }
    for r in &replicas {
        let r = Arc::clone(r);
        tokio::task::spawn_blocking(move || {
            r.kill();
            r.restart(soak_support::without_schedule);
        })
        .await
        .unwrap();
    }
    // The killed processes count as live until their heartbeat is
    // DEAD_AFTER old; a GC waits for their drain until then.
    wait_live(&admins, REPLICAS).await;
    collect_runs(&admins[0], &runs).await;
    let final_gc = final_gc(&admins[1]).await;
    assert_eq!(final_gc["status"], "succeeded", "final GC: {final_gc}");
    let final_id = final_gc["id"].as_i64();
    collect_runs(&admins[2], &runs).await;
    runs.lock().unwrap().retain(|id, _| Some(*id) != final_id);

    // The cluster is at rest.
    let mut problems = ledger.failures();
    let sql = |q: &str| pg.lock().unwrap().sql(DB, q);
    problems.extend(journal_closed(&sql).await);
    problems.extend(finished_once(&sql, &ledger));
    problems.extend(no_gc_running(&admins, &sql, &[&ra, &rb]).await);
    problems.extend(gates_open(&admins).await);

    // What clients were told holds (the one-instance soak's checks).
    problems.extend(checks::tags(&client, &everywhere, &ledger).await);
    let (sampled, sample_problems) =
        checks::skopeo_sample(&ledger, &replicas[2].host, &certs.trust_dir);
    problems.extend(sample_problems);
    let (report, fsck_problems) = checks::fsck(&replicas[0].host, &certs.files.ca_cert).await;
    problems.extend(fsck_problems);
    for d in checks::dummies_in_storage(&ra.storage) {
        problems.push(format!("dummy manifest left in storage: {d}"));
    }
    for (i, r) in replicas.iter().enumerate() {
        if r.log().contains("panicked") {
            problems.push(format!("the log of replica {i} contains \"panicked\""));
        }
    }

    // The summary.
    let runs = runs.lock().unwrap().clone();
    let gc = GcProgress::of(&runs);
    let outcome = Outcome {
        seed,
        load_secs,
        ledger: &ledger,
        runs: runs.len(),
        gc: &gc,
        fsck: &report,
        sampled,
        problems: problems.len(),
    };
    let by_trigger = runs_by_trigger(&runs);
    let summary = format!(
        "{}; cluster: {REPLICAS} replicas, GC runs by trigger {by_trigger:?} for {} scheduled times claimed, started through the admin API {} (409 while another ran {}), maintenance on and off through two replicas {}, admin answers 500 {}, PostgreSQL restarts {}, deletions recorded {}",
        summary::line(&outcome),
        sql("SELECT count(*) FROM regate_cluster_ticks WHERE kind = 'gc'"),
        Counters::get(&counters.admin_gc_started),
        Counters::get(&counters.admin_gc_refused),
        Counters::get(&counters.maintenance_rounds),
        Counters::get(&counters.admin_500),
        Counters::get(&counters.pg_restarts),
        sql("SELECT count(*) FROM tag_deletions"),
    );
    println!("{summary}");
    assert!(problems.is_empty(), "{summary}\n{}", problems.join("\n"));
    summary::assert_progress(secs, &MINIMUMS, &outcome, &summary);
    assert_eq!(
        Counters::get(&counters.pg_restarts),
        u64::from(pg_restart),
        "{summary}"
    );
    assert!(
        Counters::get(&counters.maintenance_rounds) >= 1,
        "maintenance never went on and off: {summary}"
    );
}

/// Waits (up to 30 s) until every replica sees `n` live replicas: the
/// processes killed at the last restart no longer count.
async fn wait_live(admins: &[String], n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for admin in admins {
        loop {
            let v = get_json(&format!("{admin}/admin/gc")).await;
            let live = &v["gate"]["cluster"]["live_replicas"];
            if live.as_array().map(Vec::len) == Some(n) {
                break;
            }
            assert!(Instant::now() < deadline, "not {n} live replicas: {live}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Copies the replicas' logs and PostgreSQL's to
/// `target/tmp/soak-cluster-<seed>/` when the test fails (its temporary
/// directories go with it).
struct KeepLogsOnFailure {
    seed: u64,
    logs: Vec<std::path::PathBuf>,
    pg: Arc<Mutex<Postgres>>,
}

impl Drop for KeepLogsOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() && std::env::var_os("REGATE_SOAK_KEEP_LOGS").is_none() {
            return;
        }
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("soak-cluster-{}", self.seed));
        let _ = std::fs::create_dir_all(&dir);
        for (i, log) in self.logs.iter().enumerate() {
            let _ = std::fs::copy(log, dir.join(format!("replica-{i}.log")));
        }
        if let Ok(pg) = self.pg.lock() {
            let _ = std::fs::write(dir.join("postgres.log"), pg.log_text());
        }
        eprintln!("soak: the logs are kept in {}", dir.display());
    }
}

/// Now and then (every 3-8 s): a GC through the admin API of a random
/// replica, or maintenance switched on through one replica and off through
/// another. Leaves maintenance off when it stops.
async fn admin_worker(
    seed: u64,
    admins: Vec<String>,
    counters: Arc<ClusterCounters>,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(4000));
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(3000..8000))).await;
        let on = rng.gen_range(0..admins.len());
        if rng.gen_bool(0.5) {
            let untagged = rng.gen_bool(0.5);
            let r = c
                .post(format!("{}/admin/gc", admins[on]))
                .json(&serde_json::json!({"untagged": untagged}))
                .send()
                .await;
            match r.map(|r| r.status().as_u16()) {
                Ok(202) => Counters::add(&counters.admin_gc_started),
                Ok(409) => Counters::add(&counters.admin_gc_refused),
                // Maintenance on, or the gate unknown (PostgreSQL restarting),
                // or the replica killed meanwhile: nothing to check.
                Ok(503) | Err(_) => {}
                Ok(500) => Counters::add(&counters.admin_500),
                Ok(s) => ledger.fail(format!("POST /admin/gc through replica {on}: {s}")),
            }
        } else {
            // A GC holding the gate (409) or PostgreSQL away (503) is
            // waited out for a while: with a GC every few seconds, a single
            // try rarely lands in a gap, and the round would not happen.
            let mut tries = 0;
            let r = loop {
                let r = c
                    .put(format!("{}/admin/maintenance", admins[on]))
                    .json(&serde_json::json!({"reason": "soak"}))
                    .send()
                    .await;
                match r.as_ref().map(|r| r.status().as_u16()) {
                    Ok(409 | 503) if tries < 10 && !stop.load(Ordering::Relaxed) => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1000))).await;
                    }
                    _ => break r,
                }
            };
            match r.map(|r| r.status().as_u16()) {
                Ok(200) => {}
                // Still a GC holding the gate, or PostgreSQL away.
                Ok(409 | 503) => continue,
                // Cut by a kill: it may be on; switch it off all the same.
                Err(_) => {}
                Ok(500) => Counters::add(&counters.admin_500),
                Ok(s) => ledger.fail(format!("PUT /admin/maintenance through replica {on}: {s}")),
            }
            tokio::time::sleep(Duration::from_millis(rng.gen_range(500..2500))).await;
            let off = (on + rng.gen_range(1..admins.len())) % admins.len();
            if maintenance_off(&c, &admins, off).await {
                Counters::add(&counters.maintenance_rounds);
            } else {
                ledger.fail("maintenance could not be switched off within 60 s".into());
            }
        }
    }
}

/// `DELETE /admin/maintenance` through replica `first`, then the others in
/// turn until one answers 200 (a replica may be down, or PostgreSQL).
async fn maintenance_off(c: &reqwest::Client, admins: &[String], first: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = first;
    while Instant::now() < deadline {
        let r = c
            .delete(format!("{}/admin/maintenance", admins[i % admins.len()]))
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == 200) {
            return true;
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    false
}

/// Stops PostgreSQL (fast shutdown) once, at a random time in the middle
/// third of the load, and starts it again 2 s later; no replica is killed
/// or restarted meanwhile (`faults`).
async fn restart_postgres_once(
    seed: u64,
    secs: u64,
    pg: Arc<Mutex<Postgres>>,
    faults: Arc<tokio::sync::Mutex<()>>,
    counters: Arc<ClusterCounters>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(5000));
    let at = Duration::from_millis(rng.gen_range(secs * 1000 / 3..=secs * 2000 / 3));
    tokio::time::sleep(at).await;
    if stop.load(Ordering::Relaxed) {
        return;
    }
    let _fault = faults.lock().await;
    tokio::task::spawn_blocking(move || {
        let mut pg = pg.lock().unwrap();
        pg.stop();
        std::thread::sleep(Duration::from_secs(2));
        pg.start_again();
    })
    .await
    .unwrap();
    println!("soak: PostgreSQL restarted after {at:?} of load");
    *counters.pg_back.lock().unwrap() = Some(Instant::now());
    Counters::add(&counters.pg_restarts);
}

/// No tag-delete journal entry open in PostgreSQL, within a bound: a
/// replica killed at the last restart left its entries to the others (or
/// its restarted self), which claim them every few seconds, and not within
/// 30 s of a PostgreSQL restart.
async fn journal_closed(sql: &impl Fn(&str) -> String) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let open = sql(
            "SELECT id || ' ' || repository || ':' || tag || ' owner ' || owner FROM tag_delete_journal WHERE open = 1 ORDER BY id",
        );
        if open.is_empty() {
            return Vec::new();
        }
        if Instant::now() > deadline {
            return open
                .lines()
                .map(|l| format!("tag-delete journal entry left open 60 s after the load: {l}"))
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Each journal entry finished once. The soak deletes each tag at most once
/// and never restores one, so per tag: at most one journal entry, one
/// deletion record if it was closed `removed` and none otherwise; and an
/// acknowledged delete has both.
fn finished_once(sql: &impl Fn(&str) -> String, ledger: &Ledger) -> Vec<String> {
    let mut problems = Vec::new();
    // repository:tag -> (entries, entries closed removed, deletion records)
    let mut per_tag: HashMap<String, (u64, u64, u64)> = HashMap::new();
    let rows = sql(
        "SELECT repository || ':' || tag, step FROM tag_delete_journal
         UNION ALL SELECT repository || ':' || tag, '#deletion' FROM tag_deletions",
    );
    for row in rows.lines() {
        let (tag, kind) = row.rsplit_once('|').unwrap();
        let e = per_tag.entry(tag.to_owned()).or_default();
        match kind {
            "#deletion" => e.2 += 1,
            "removed" => {
                e.0 += 1;
                e.1 += 1;
            }
            _ => e.0 += 1,
        }
    }
    for (tag, (entries, removed, deletions)) in &per_tag {
        if *entries > 1 || deletions != removed {
            problems.push(format!(
                "{tag}: {entries} journal entries, {removed} closed removed, {deletions} deletion records (each entry is finished once)"
            ));
        }
    }
    for (repo, tag, state) in ledger.all() {
        if let TagState::Deleted(_) = state {
            let key = format!("{repo}:{tag}");
            if per_tag.get(&key).map(|e| (e.1, e.2)) != Some((1, 1)) {
                problems.push(format!(
                    "{key}: acknowledged deleted, but journal/deletions {:?}",
                    per_tag.get(&key)
                ));
            }
        }
    }
    problems
}

/// No GC command left running: none in the shared history, none on any
/// replica, no `garbage-collect` process on the registries' configs.
async fn no_gc_running(
    admins: &[String],
    sql: &impl Fn(&str) -> String,
    registries: &[&Registry],
) -> Vec<String> {
    let mut problems = Vec::new();
    let running =
        sql("SELECT id || ' on ' || coalesce(replica, '?') FROM gc_runs WHERE status = 'running'");
    for r in running.lines() {
        problems.push(format!("GC run {r} still recorded running"));
    }
    for (i, admin) in admins.iter().enumerate() {
        let v = get_json(&format!("{admin}/admin/gc")).await;
        if !v["running"].is_null() {
            problems.push(format!("replica {i} still runs GC: {}", v["running"]));
        }
    }
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let ours = registries
            .iter()
            .any(|r| cmdline.contains(&r.config.display().to_string()));
        if ours && cmdline.contains("garbage-collect") {
            problems.push(format!("a GC command is still running: {cmdline}"));
        }
    }
    problems
}

/// The gate open on every replica (within 10 s of the final GC).
async fn gates_open(admins: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, admin) in admins.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = get_json(&format!("{admin}/admin/status")).await;
            if s["gate"]["state"] == "open" {
                break;
            }
            if Instant::now() > deadline {
                problems.push(format!(
                    "the gate of replica {i} is not open: {}",
                    s["gate"]
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    problems
}

/// How many runs of the load each trigger started.
fn runs_by_trigger(runs: &BTreeMap<i64, serde_json::Value>) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for run in runs.values() {
        let trigger = run["trigger"].as_str().unwrap_or("?").to_owned();
        *by.entry(trigger).or_default() += 1;
    }
    by
}
