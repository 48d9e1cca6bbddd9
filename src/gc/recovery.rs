//! After a restart: the gate comes back closed while a GC command started
//! before the restart still runs (it is followed to its end, then the gate
//! opens), or while maintenance is on. A run cut short before its GC command
//! finished is resumed (same run, one more attempt: it drains and closes the
//! gate again, its untagged walk skips the repositories it finished, and it
//! runs the GC command); one whose command had printed its summary before it
//! ended unseen is recorded as `finished_unobserved`. A dry run, a scheduled
//! run past its `[gc] window`, or a run started [`MAX_ATTEMPTS`] times is
//! marked interrupted instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::output::GcCounts;
use super::{command, now_ms, Gc, GcError, GcRequest};
use crate::state::blocking;
use crate::state::gc_history::{GcPhase, GcRun, GcStatus};

/// How many times one run is started before a restart that cuts it short
/// marks it interrupted (a run that brings regate down must not do so forever).
pub const MAX_ATTEMPTS: i64 = 50;

/// What to do with a run found running at start-up whose command is not running.
#[derive(Debug, PartialEq, Eq)]
enum Cut {
    /// Its command printed its summary: it ended, unseen.
    FinishedUnobserved,
    /// Started again.
    Resume,
    /// Given up, for this reason.
    Interrupted(String),
}

fn decide(run: &GcRun, command_summary: bool, now_ms: i64) -> Cut {
    if run.phase == GcPhase::Collecting && command_summary {
        return Cut::FinishedUnobserved;
    }
    if run.dry_run {
        return Cut::Interrupted(format!(
            "regate stopped during the {} phase of a dry run (dry runs are not resumed)",
            run.phase
        ));
    }
    if run.deadline_at_ms.is_some_and(|d| d <= now_ms) {
        return Cut::Interrupted(format!(
            "regate stopped during the {} phase and the gc.window has ended since",
            run.phase
        ));
    }
    if run.attempts >= MAX_ATTEMPTS {
        return Cut::Interrupted(format!(
            "regate stopped during the {} phase of the run's attempt {}; it is not resumed again (the next run starts over)",
            run.phase, run.attempts
        ));
    }
    Cut::Resume
}

/// Whether the command's log holds its summary line.
fn log_has_summary(log: Option<&str>) -> bool {
    let Some(text) = log.and_then(|p| std::fs::read_to_string(p).ok()) else {
        return false;
    };
    let mut counts = GcCounts::default();
    text.lines().for_each(|l| counts.observe(l));
    counts.has_summary()
}

impl Gc {
    /// After a restart: closes the gate again for a GC command that still
    /// runs (and follows it to its end) or for maintenance left on; resumes
    /// runs a restart cut short, or records how they ended.
    pub async fn recover(self: &Arc<Self>) -> Result<(), GcError> {
        let state = self.state.clone();
        for mut run in blocking(move || state.gc_runs_running()).await? {
            let pid = run.pid.and_then(|p| u32::try_from(p).ok());
            if let Some(pid) = pid.filter(|p| command::alive(*p, run.pid_start.as_deref())) {
                tracing::warn!(target: "regate::gc", id = run.id, pid, "a GC command started before the restart still runs; the gate stays closed until it ends");
                if !run.dry_run {
                    self.gate.close_now(&format!(
                        "garbage collection, run {} (resumed after a restart)",
                        run.id
                    ));
                }
                *self.running() = Some(run.clone());
                let gc = Arc::clone(self);
                tokio::spawn(async move { gc.follow_resumed(run, pid).await });
                continue;
            }
            let log = run.log_path.clone();
            let summary = tokio::task::spawn_blocking(move || log_has_summary(log.as_deref()))
                .await
                .unwrap_or(false);
            match decide(&run, summary, now_ms()) {
                Cut::FinishedUnobserved => {
                    *self.running() = Some(run.clone());
                    let gc = Arc::clone(self);
                    let pid = pid.unwrap_or(0);
                    tokio::spawn(async move { gc.follow_resumed(run, pid).await });
                }
                Cut::Resume => {
                    run.attempts += 1;
                    run.phase = GcPhase::Starting;
                    run.pid = None;
                    run.pid_start = None;
                    tracing::warn!(target: "regate::gc", id = run.id, attempt = run.attempts, "a GC run was cut short by a regate stop; resuming it");
                    self.save_async(&run).await;
                    *self.running() = Some(run.clone());
                    let req = GcRequest {
                        dry_run: false,
                        untagged: run.untagged,
                        deadline: run.deadline_at_ms.map(|d| {
                            Instant::now()
                                + Duration::from_millis(u64::try_from(d - now_ms()).unwrap_or(0))
                        }),
                    };
                    let gc = Arc::clone(self);
                    tokio::spawn(async move { gc.run(run, req).await });
                }
                Cut::Interrupted(why) => {
                    tracing::warn!(target: "regate::gc", id = run.id, phase = %run.phase, "a GC run was cut short by a regate stop; marking it interrupted");
                    run.status = GcStatus::Interrupted;
                    run.error = Some(why);
                    run.finished_at_ms = Some(now_ms());
                    let state = self.state.clone();
                    blocking(move || state.gc_run_save(&run)).await?;
                }
            }
        }
        // In a cluster the gate follows the cluster's row, maintenance included.
        if self.cluster.get().is_some() {
            return Ok(());
        }
        if let Some(m) = self.maintenance().await? {
            tracing::warn!(target: "regate::gc", reason = %m.reason, "maintenance is on (switched on before the restart): writes stay stopped");
            self.gate.close_now(&format!("maintenance: {}", m.reason));
        }
        Ok(())
    }

    async fn follow_resumed(self: Arc<Self>, mut run: GcRun, pid: u32) {
        let started = Instant::now();
        let mut counts = GcCounts::default();
        if let Some(log) = run.log_path.clone() {
            command::follow_foreign(
                pid,
                run.pid_start.clone(),
                std::path::Path::new(&log),
                |l| counts.observe(l),
            )
            .await;
        }
        let gc = Arc::clone(&self);
        run.bytes_after = tokio::task::spawn_blocking(move || gc.storage_bytes())
            .await
            .ok()
            .flatten();
        run.status = GcStatus::FinishedUnobserved;
        run.phase = GcPhase::Done;
        run.blobs_deleted = Some(counts.deleted(run.dry_run) as i64);
        run.error = Some(if counts.has_summary() {
            "regate restarted while the GC command ran; it completed its mark phase, but its exit status was not seen".into()
        } else {
            "regate restarted while the GC command ran; its exit status was not seen and it printed no summary (it may have failed)".into()
        });
        run.finished_at_ms = Some(now_ms());
        if self.maintenance().await.ok().flatten().is_none() {
            self.gate.open();
        }
        let freed = run.bytes_freed().unwrap_or(0).max(0) as u64;
        self.metrics.gc_run(
            GcStatus::FinishedUnobserved.as_str(),
            started.elapsed(),
            freed,
        );
        self.save_async(&run).await;
        *self.running() = None;
        self.finished.send_replace(run.id);
        tracing::info!(target: "regate::gc", id = run.id, "the GC command started before the restart has ended; the gate is open");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(phase: GcPhase) -> GcRun {
        GcRun {
            status: GcStatus::Running,
            phase,
            attempts: 1,
            ..Default::default()
        }
    }

    #[test]
    fn a_run_cut_short_is_resumed_unless_it_cannot_be() {
        for phase in [
            GcPhase::Starting,
            GcPhase::Draining,
            GcPhase::Untagged,
            GcPhase::Collecting,
        ] {
            assert_eq!(decide(&cut(phase), false, 0), Cut::Resume, "{phase}");
        }
        assert_eq!(
            decide(&cut(GcPhase::Collecting), true, 0),
            Cut::FinishedUnobserved
        );
        let dry = GcRun {
            dry_run: true,
            ..cut(GcPhase::Untagged)
        };
        assert!(matches!(decide(&dry, false, 0), Cut::Interrupted(m) if m.contains("dry run")));
        let late = GcRun {
            deadline_at_ms: Some(100),
            ..cut(GcPhase::Untagged)
        };
        assert!(
            matches!(decide(&late, false, 100), Cut::Interrupted(m) if m.contains("gc.window"))
        );
        assert_eq!(decide(&late, false, 99), Cut::Resume);
        let tired = GcRun {
            attempts: MAX_ATTEMPTS,
            ..cut(GcPhase::Draining)
        };
        assert!(matches!(decide(&tired, false, 0), Cut::Interrupted(_)));
    }
}
