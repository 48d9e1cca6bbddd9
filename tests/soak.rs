//! Soak test with faults: a real docker-registry behind the regate binary,
//! GC scheduled every few seconds (untagged cleanup on), pushers, pullers and
//! deleters running while a killer SIGKILLs regate at random moments and
//! restarts it on the same ports. What clients were told must hold at the
//! end: acknowledged tags at their digest and complete, acknowledged deletes
//! gone, uncertain tags absent or at their pushed digest, fsck clean, no
//! dummy manifest in storage, no panic.
//!
//! `REGATE_SOAK_SECS` (default 100) sets how long the load runs;
//! `REGATE_SOAK_SEED` fixes the seed (printed either way). `scripts/soak`
//! runs the long form.

#[path = "it/common/mod.rs"]
mod common;
mod soak_support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::gc::gc_section;
use common::regate::{config_toml, TestCerts};
use common::Registry;
use soak_support::gc_runs::{collect_runs, final_gc, GcProgress};
use soak_support::ledger::Ledger;
use soak_support::process::Regate;
use soak_support::summary::{self, Outcome};
use soak_support::workers::Targets;
use soak_support::{checks, images, workers};

const PUSHERS: usize = 3;
const PULLERS: usize = 2;
/// Milliseconds between kills (uniform).
const KILL_EVERY_MS: std::ops::Range<u64> = 1500..5000;
/// What the soak must get done per 100 s of load.
const MINIMUMS: summary::Minimums = summary::Minimums {
    kills: 10,
    gc_completed: 1,
    pushes: 40,
    pulls: 40,
    deletes: 10,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_with_kills_and_gc() {
    common::require_tool("skopeo");
    let secs = soak_support::env_u64("REGATE_SOAK_SECS").unwrap_or(100);
    let seed = soak_support::env_u64("REGATE_SOAK_SEED").unwrap_or_else(rand::random);
    println!("soak: {secs} s, seed {seed} (REGATE_SOAK_SEED={seed} repeats the choices)");

    let registry = Registry::start();
    let certs = TestCerts::new();
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gc = gc_section(&registry, &soak_support::gc_keys());
    let config = config_toml(&registry.url, &certs, state.path(), &gc);
    let regate = {
        let (d, c) = (dir.path().to_owned(), config.clone());
        Arc::new(
            tokio::task::spawn_blocking(move || Regate::start(&d, &c))
                .await
                .unwrap(),
        )
    };
    let client = soak_support::client(&certs.files.ca_cert);

    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(Mutex::new(BTreeMap::new()));
    let pool = Arc::new(images::shared_pool(seed, 6));
    let targets = Targets::new(vec![regate.url.clone()]);
    let mut tasks = Vec::new();
    for id in 0..PUSHERS {
        tasks.push(tokio::spawn(workers::pusher(
            id,
            seed,
            client.clone(),
            targets.clone(),
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
            targets.clone(),
            Arc::clone(&ledger),
            Arc::clone(&stop),
        )));
    }
    tasks.push(tokio::spawn(workers::deleter(
        seed,
        client.clone(),
        targets.clone(),
        Arc::clone(&ledger),
        Arc::clone(&stop),
    )));
    tasks.push(tokio::spawn(workers::killer(
        seed,
        vec![Arc::clone(&regate)],
        KILL_EVERY_MS,
        Arc::default(),
        Arc::clone(&ledger),
        Arc::clone(&stop),
    )));
    tasks.push(tokio::spawn(workers::gc_monitor(
        vec![regate.admin_url.clone()],
        Arc::clone(&runs),
        Arc::clone(&stop),
    )));

    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let load_secs = started.elapsed().as_secs();

    // A last clean restart without the schedule, then a final GC.
    {
        let r = Arc::clone(&regate);
        tokio::task::spawn_blocking(move || {
            r.kill();
            r.restart(soak_support::without_schedule);
        })
        .await
        .unwrap();
    }
    // Runs that ended during the load (a run resumed by the restart above
    // may still end: it counts with them).
    collect_runs(&regate.admin_url, &runs).await;
    let final_gc = final_gc(&regate.admin_url).await;
    assert_eq!(final_gc["status"], "succeeded", "final GC: {final_gc}");
    let final_id = final_gc["id"].as_i64();
    collect_runs(&regate.admin_url, &runs).await;
    runs.lock().unwrap().retain(|id, _| Some(*id) != final_id);

    // What clients were told holds.
    let mut problems = ledger.failures();
    problems.extend(checks::tags(&client, &targets, &ledger).await);
    let (sampled, sample_problems) = checks::skopeo_sample(&ledger, &regate.host, &certs.trust_dir);
    problems.extend(sample_problems);
    let (report, fsck_problems) = checks::fsck(&regate.host, &certs.files.ca_cert).await;
    problems.extend(fsck_problems);
    for d in checks::dummies_in_storage(&registry.storage) {
        problems.push(format!("dummy manifest left in storage: {d}"));
    }
    let log = regate.log();
    if log.contains("panicked") {
        problems.push("regate's log contains \"panicked\"".into());
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
    let summary = summary::line(&outcome);
    println!("{summary}");
    assert!(problems.is_empty(), "{summary}\n{}", problems.join("\n"));
    summary::assert_progress(secs, &MINIMUMS, &outcome, &summary);
}
