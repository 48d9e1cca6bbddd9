//! Retention runs by themselves: at each time of `[retention_schedule]
//! schedule` (cron, UTC), and with `before_gc = true` just before each
//! scheduled garbage collection (through [`before_gc`], the hook the GC
//! schedule calls), so the space of the deleted tags comes back in the same
//! window. A scheduled run applies the plan as `regate retention apply
//! --yes` would (the fraction guard holds: never forced) and is kept in the
//! history under the account `schedule`. In a cluster each scheduled time
//! is run by the one replica that claims it (as for scheduled GC).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Retention, RunRequest};
use crate::cluster::Scheduled;
use crate::config::gc::GcSchedule;
use crate::gc::schedule::BeforeRun;

/// Longest sleep between looks at the clock, so a clock jump is noticed.
const RECHECK: Duration = Duration::from_secs(60);
/// The account scheduled runs are audited and kept under.
pub const ACCOUNT: &str = "schedule";

/// One scheduled run; its outcome is logged.
pub async fn run_once(retention: &Retention, why: &str) {
    let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
    match retention.run(RunRequest::default(), ACCOUNT, client).await {
        Ok(r) => tracing::info!(
            target: "regate::retention",
            why,
            id = r.id,
            deleted = r.deleted,
            failed = r.failed,
            skipped = r.plan.skipped.len(),
            "scheduled retention run done"
        ),
        Err(e) => {
            tracing::warn!(target: "regate::retention", why, error = %e, "scheduled retention run failed")
        }
    }
}

/// The hook for the GC schedule: a retention run before each scheduled GC.
pub fn before_gc(retention: Arc<Retention>) -> BeforeRun {
    Arc::new(move || {
        let r = Arc::clone(&retention);
        Box::pin(async move { run_once(&r, "before scheduled gc").await })
    })
}

/// Runs retention at every time of `schedule` until `stop` turns true.
pub async fn run(retention: Arc<Retention>, schedule: GcSchedule, mut stop: watch::Receiver<bool>) {
    tracing::info!(target: "regate::retention", schedule = %schedule.expression, "retention is scheduled");
    loop {
        let next = match schedule
            .cron
            .find_next_occurrence(&chrono::Utc::now(), false)
        {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(target: "regate::retention", schedule = %schedule.expression, error = %e, "the schedule names no future time; scheduled retention stops");
                return;
            }
        };
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
        if let Some(cluster) = retention.tags.cluster() {
            match cluster
                .claim_scheduled(Scheduled::Retention, next.timestamp_millis())
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(target: "regate::retention", at = %next, "scheduled retention run skipped here: another replica runs it");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(target: "regate::retention", at = %next, error = %e, "scheduled retention run skipped: cannot tell which replica runs it");
                    continue;
                }
            }
        }
        // Runs to its end (and into the history) even when regate stops
        // meanwhile; a run longer than the interval makes the next time wait.
        run_once(&retention, "schedule").await;
    }
}
