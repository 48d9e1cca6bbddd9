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
use indicatif::ProgressBar;
use regate::client::{RegistryClient, Scheme};
use soak_support::ledger::{Counters, Ledger, TagState};
use soak_support::process::Regate;
use soak_support::{checks, images, workers};

const PUSHERS: usize = 3;
const PULLERS: usize = 2;
/// Milliseconds between kills (uniform).
const KILL_EVERY_MS: std::ops::Range<u64> = 1500..5000;
/// Six-field cron (seconds first): a scheduled GC every 8 seconds.
const GC_SCHEDULE: &str = "*/8 * * * * *";

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_with_kills_and_gc() {
    common::require_tool("skopeo");
    let secs = env_u64("REGATE_SOAK_SECS").unwrap_or(100);
    let seed = env_u64("REGATE_SOAK_SEED").unwrap_or_else(rand::random);
    println!("soak: {secs} s, seed {seed} (REGATE_SOAK_SEED={seed} repeats the choices)");

    let registry = Registry::start();
    let certs = TestCerts::new();
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gc = gc_section(
        &registry,
        &format!("schedule = \"{GC_SCHEDULE}\"\nuntagged = true\ndrain_timeout = \"3s\"\npush_window = \"2s\"\nhold_timeout = \"60s\""),
    );
    let config = config_toml(&registry.url, &certs, state.path(), &gc);
    let regate = {
        let (d, c) = (dir.path().to_owned(), config.clone());
        Arc::new(
            tokio::task::spawn_blocking(move || Regate::start(&d, &c))
                .await
                .unwrap(),
        )
    };
    let client = {
        let pem = std::fs::read(&certs.files.ca_cert).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .tls_built_in_root_certs(false)
            .no_proxy()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap()
    };

    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(Mutex::new(BTreeMap::new()));
    let pool = Arc::new(images::shared_pool(seed, 6));
    let mut tasks = Vec::new();
    for id in 0..PUSHERS {
        tasks.push(tokio::spawn(workers::pusher(
            id,
            seed,
            client.clone(),
            regate.url.clone(),
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
            regate.url.clone(),
            Arc::clone(&ledger),
            Arc::clone(&stop),
        )));
    }
    tasks.push(tokio::spawn(workers::deleter(
        seed,
        client.clone(),
        regate.url.clone(),
        Arc::clone(&ledger),
        Arc::clone(&stop),
    )));
    tasks.push(tokio::spawn(workers::killer(
        seed,
        Arc::clone(&regate),
        KILL_EVERY_MS,
        Arc::clone(&ledger),
        Arc::clone(&stop),
    )));
    tasks.push(tokio::spawn(workers::gc_monitor(
        regate.admin_url.clone(),
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
            r.restart(|c| c.replace(&format!("schedule = \"{GC_SCHEDULE}\"\n"), ""));
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
    problems.extend(checks::tags(&client, &regate.url, &ledger).await);
    let sample: Vec<_> = ledger
        .all()
        .into_iter()
        .filter_map(|(r, t, s)| matches!(s, TagState::Acked(_)).then_some((r, t)))
        .step_by(7)
        .take(4)
        .collect();
    let out = tempfile::tempdir().unwrap();
    for (i, (repo, tag)) in sample.iter().enumerate() {
        let dest = format!("oci:{}/img{i}:x", out.path().display());
        let src = format!("docker://{}/{repo}:{tag}", regate.host);
        let trust = certs.trust_dir.display().to_string();
        if let Err(e) =
            common::skopeo::try_skopeo(&["copy", "--all", "--src-cert-dir", &trust, &src, &dest])
        {
            problems.push(format!("skopeo copy {src}: {e}"));
        }
    }
    let fsck_client = RegistryClient::with_scheme(
        Scheme::Https,
        &regate.host,
        Some(&certs.files.ca_cert),
        None,
    )
    .unwrap();
    let report = regate::fsck::run(
        &fsck_client,
        &regate::fsck::Options::default(),
        &ProgressBar::hidden(),
    )
    .await
    .unwrap();
    if !report.clean {
        problems.push(format!(
            "fsck: {:#?}",
            report.findings().collect::<Vec<_>>()
        ));
    }
    for d in checks::dummies_in_storage(&registry.storage) {
        problems.push(format!("dummy manifest left in storage: {d}"));
    }
    let log = regate.log();
    if log.contains("panicked") {
        problems.push("regate's log contains \"panicked\"".into());
    }

    // The summary.
    let c = &ledger.counters;
    let runs = runs.lock().unwrap().clone();
    let gc = GcProgress::of(&runs);
    let summary = format!(
        "soak summary: seed {seed}, {load_secs} s of load; pushes acknowledged {}, failed {}; pulls {} (retries {}); deletes acknowledged {}, failed {}; kills {}; GC runs {} ({:?}; completed {}, attempts {}, resumed {}, repositories walked {}, longest walk {} ms, longest command {} ms); tags acknowledged at the end {}, deleted {}, uncertain {}; fsck: {} repositories, {} errors, {} warnings; sampled with skopeo {}; problems {}",
        Counters::get(&c.pushes_acked),
        Counters::get(&c.pushes_failed),
        Counters::get(&c.pulls),
        Counters::get(&c.pull_retries),
        Counters::get(&c.deletes_acked),
        Counters::get(&c.deletes_failed),
        Counters::get(&c.kills),
        runs.len(),
        gc.statuses,
        gc.completed,
        gc.attempts,
        gc.resumed,
        gc.repositories_walked,
        gc.longest_walk_ms,
        gc.longest_command_ms,
        ledger.count(|s| matches!(s, TagState::Acked(_))),
        ledger.count(|s| matches!(s, TagState::Deleted(_))),
        ledger.count(|s| matches!(s, TagState::Uncertain(_))),
        report.repositories.len(),
        report.errors,
        report.warnings,
        sample.len(),
        problems.len(),
    );
    println!("{summary}");
    assert!(problems.is_empty(), "{summary}\n{}", problems.join("\n"));

    // It did something: work scales with the duration.
    let min = |per_100s: u64| (per_100s * secs / 100).max(1);
    assert!(
        Counters::get(&c.kills) >= min(10),
        "too few kills: {summary}"
    );
    // GC progress, whatever the machine's speed (a faster machine pushes
    // more, so each run has more to walk): kills cut runs short, but no
    // restart throws a run's work away (a run cut short is resumed, never
    // left interrupted), and runs get through their GC command.
    assert_eq!(
        gc.statuses.get("interrupted"),
        None,
        "a restart threw away a GC run's work: {summary}"
    );
    assert!(gc.completed >= min(1), "no GC run completed: {summary}");
    assert!(
        Counters::get(&c.pushes_acked) >= min(40),
        "too few pushes: {summary}"
    );
    assert!(
        Counters::get(&c.pulls) >= min(40),
        "too few pulls: {summary}"
    );
    assert!(
        Counters::get(&c.deletes_acked) >= min(10),
        "too few deletes: {summary}"
    );
    assert!(!sample.is_empty(), "nothing to sample: {summary}");
}

/// What the GC runs of the load got done.
#[derive(Debug, Default)]
struct GcProgress {
    statuses: BTreeMap<String, usize>,
    /// Runs whose GC command ran to its end (seen, or followed after a restart).
    completed: u64,
    attempts: i64,
    /// Runs that needed more than one attempt.
    resumed: usize,
    repositories_walked: i64,
    longest_walk_ms: i64,
    longest_command_ms: i64,
}

impl GcProgress {
    fn of(runs: &BTreeMap<i64, serde_json::Value>) -> Self {
        let mut p = GcProgress::default();
        for run in runs.values() {
            let status = run["status"].as_str().unwrap_or("?").to_owned();
            if status == "succeeded" || status == "finished_unobserved" {
                p.completed += 1;
            }
            *p.statuses.entry(status).or_default() += 1;
            let attempts = run["attempts"].as_i64().unwrap_or(1);
            p.attempts += attempts;
            p.resumed += usize::from(attempts > 1);
            p.repositories_walked += run["repositories"].as_i64().unwrap_or(0);
            p.longest_walk_ms = p
                .longest_walk_ms
                .max(run["untagged_ms"].as_i64().unwrap_or(0));
            p.longest_command_ms = p.longest_command_ms.max(run["gc_ms"].as_i64().unwrap_or(0));
        }
        p
    }
}

/// Starts a GC (with untagged cleanup) once no run is going, and waits for it.
async fn final_gc(admin: &str) -> serde_json::Value {
    let c = common::gc::admin_client();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let r = c
            .post(format!("{admin}/admin/gc?wait=true"))
            .json(&serde_json::json!({"dry_run": false, "untagged": true}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: serde_json::Value = r.json().await.unwrap();
        if status.is_success() {
            return v["run"].clone();
        }
        assert!(Instant::now() < deadline, "no final GC: {status} {v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Adds the runs regate lists now (the monitor stopped with the load).
async fn collect_runs(admin: &str, runs: &Mutex<BTreeMap<i64, serde_json::Value>>) {
    let v = common::gc::get_json(&format!("{admin}/admin/gc")).await;
    let mut runs = runs.lock().unwrap();
    for run in v["history"].as_array().into_iter().flatten() {
        if let (Some(id), Some(s)) = (run["id"].as_i64(), run["status"].as_str()) {
            if s != "running" {
                runs.insert(id, run.clone());
            }
        }
    }
}
