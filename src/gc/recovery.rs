//! After a restart: the gate comes back closed while a GC command started
//! before the restart still runs (it is followed to its end, then the gate
//! opens), or while maintenance is on; a run whose command is gone is marked
//! interrupted.

use std::sync::Arc;
use std::time::Instant;

use super::output::GcCounts;
use super::{command, now_ms, Gc, GcError};
use crate::state::gc_history::GcRun;

impl Gc {
    /// After a restart: closes the gate again for a GC command that still
    /// runs (and follows it to its end) or for maintenance left on; marks
    /// runs whose command is gone as interrupted.
    pub fn recover(self: &Arc<Self>) -> Result<(), GcError> {
        for mut run in self.state.gc_runs_running()? {
            let pid = run.pid.and_then(|p| u32::try_from(p).ok());
            let alive = pid.is_some_and(|p| command::alive(p, run.pid_start.as_deref()));
            match (pid, alive) {
                (Some(pid), true) => {
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
                }
                _ => {
                    tracing::warn!(target: "regate::gc", id = run.id, phase = %run.phase, "a GC run was cut short by a regate stop; marking it interrupted");
                    run.status = "interrupted".into();
                    run.error = Some(format!(
                        "regate stopped during the {} phase and the GC command is not running",
                        run.phase
                    ));
                    run.finished_at_ms = Some(now_ms());
                    self.state.gc_run_save(&run)?;
                }
            }
        }
        if let Some(m) = self.state.maintenance()? {
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
        run.status = "finished_unobserved".into();
        run.phase = "done".into();
        run.blobs_deleted = Some(counts.deleted(run.dry_run) as i64);
        run.error = Some(if counts.has_summary() {
            "regate restarted while the GC command ran; it completed its mark phase, but its exit status was not seen".into()
        } else {
            "regate restarted while the GC command ran; its exit status was not seen and it printed no summary (it may have failed)".into()
        });
        run.finished_at_ms = Some(now_ms());
        if self.state.maintenance().ok().flatten().is_none() {
            self.gate.open();
        }
        let freed = run.bytes_freed().unwrap_or(0).max(0) as u64;
        self.metrics
            .gc_run("finished_unobserved", started.elapsed(), freed);
        self.save(&run);
        *self.running() = None;
        self.finished.send_replace(run.id);
        tracing::info!(target: "regate::gc", id = run.id, "the GC command started before the restart has ended; the gate is open");
    }
}
