//! The `[gc] schedule`: starts a run at each time the cron expression names
//! (UTC), until regate stops. A run still going at the next time is not
//! doubled: that time is skipped and logged. With `[gc] window`, a time
//! outside the window is skipped, and a run's GC command is stopped when the
//! window ends. In a cluster, one replica runs each time (the first to claim
//! it); the others skip it and log so. A [`BeforeRun`] hook (a retention
//! run) goes just before each scheduled run, inside the window.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Gc, GcRequest};
use crate::cluster::Scheduled;
use crate::config::gc::{GcSchedule, GcWindow};
use crate::state::gc_history::GcTrigger;

/// Longest sleep between looks at the clock, so a clock jump is noticed.
const RECHECK: Duration = Duration::from_secs(60);

/// Work done just before each scheduled run (retention, so the space of
/// the tags it deletes comes back in the same run).
pub type BeforeRun =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

/// Runs the schedule until `stop` turns true.
pub async fn run(
    gc: Arc<Gc>,
    schedule: GcSchedule,
    window: Option<GcWindow>,
    untagged: bool,
    before: Option<BeforeRun>,
    mut stop: watch::Receiver<bool>,
) {
    tracing::info!(target: "regate::gc", schedule = %schedule.expression, untagged, "garbage collection is scheduled");
    loop {
        let now = chrono::Utc::now();
        let next = match schedule.cron.find_next_occurrence(&now, false) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(target: "regate::gc", schedule = %schedule.expression, error = %e, "the schedule names no future time; scheduled GC stops");
                return;
            }
        };
        // Sleep towards `next` in steps, re-reading the clock after each.
        loop {
            let left = (next - chrono::Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO);
            if left.is_zero() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(left.min(RECHECK)) => {}
                _ = crate::stop_signal::stopped(&mut stop) => return,
            }
        }
        let deadline = match window {
            None => None,
            Some(w) => {
                use chrono::Timelike;
                let now = chrono::Utc::now();
                match w.remaining(now.hour() * 60 + now.minute(), now.second()) {
                    Some(left) => Some(std::time::Instant::now() + left),
                    None => {
                        tracing::info!(target: "regate::gc", at = %next, "scheduled garbage collection skipped: outside gc.window");
                        continue;
                    }
                }
            }
        };
        if let Some(cluster) = gc.cluster() {
            match cluster
                .claim_scheduled(Scheduled::Gc, next.timestamp_millis())
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(target: "regate::gc", at = %next, "scheduled garbage collection skipped here: another replica runs it");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(target: "regate::gc", at = %next, error = %e, "scheduled garbage collection skipped: cannot tell which replica runs it");
                    continue;
                }
            }
        }
        if let Some(before) = &before {
            before().await;
        }
        match gc
            .start(
                GcRequest {
                    dry_run: false,
                    untagged,
                    deadline,
                },
                GcTrigger::Schedule,
            )
            .await
        {
            Ok(id) => {
                tracing::info!(target: "regate::gc", id, at = %next, "scheduled garbage collection started")
            }
            Err(e) => {
                tracing::warn!(target: "regate::gc", at = %next, error = %e, "scheduled garbage collection skipped")
            }
        }
    }
}
