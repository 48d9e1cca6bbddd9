//! The GC runs of the soak: collected from the admin API, the final run, and
//! what they got done (for the summary and the progress checks).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common;

/// What the GC runs of the load got done.
#[derive(Debug, Default)]
pub struct GcProgress {
    pub statuses: BTreeMap<String, usize>,
    /// Runs whose GC command ran to its end (seen, or followed after a restart).
    pub completed: u64,
    pub attempts: i64,
    /// Runs that needed more than one attempt.
    pub resumed: usize,
    pub repositories_walked: i64,
    pub longest_walk_ms: i64,
    pub longest_command_ms: i64,
}

impl GcProgress {
    pub fn of(runs: &BTreeMap<i64, serde_json::Value>) -> Self {
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
pub async fn final_gc(admin: &str) -> serde_json::Value {
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
pub async fn collect_runs(admin: &str, runs: &Mutex<BTreeMap<i64, serde_json::Value>>) {
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
