//! One GC run, phase by phase: measure the storage, drain and close the gate,
//! untagged cleanup (the resumable walk of `walk`), the GC command (followed
//! line by line, with its timeout), reopen the gate (whatever happened),
//! record the result. A resumed run (after a restart) goes through the same
//! phases; its walk skips what an earlier attempt finished.

use std::sync::Arc;
use std::time::Instant;

use super::output::GcCounts;
use super::{command, keeper, now_ms, Gc, GcError, GcRequest};
use crate::cluster::gate::Holder;
use crate::cluster::{Cluster, ClusterError};
use crate::state::gc_history::{GcPhase, GcRun, GcStatus};
use crate::write_gate::WriteGate;

/// How many GC output logs are kept in `<state.dir>/gc/`.
const KEEP_LOGS: i64 = 50;

/// Removes the logs of runs older than the last [`KEEP_LOGS`].
fn prune_logs(dir: &std::path::Path, current: i64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let id = name
            .strip_prefix("run-")
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<i64>().ok());
        if id.is_some_and(|id| id <= current - KEEP_LOGS) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Reopens the gate when the GC phases end, however they end: the local
/// gate, or the cluster's (the generation this run closed).
struct ClosedForGc<'a> {
    gate: &'a WriteGate,
    cluster: Option<(Arc<Cluster>, i64, i64)>,
    closed_at: Instant,
}

impl Drop for ClosedForGc<'_> {
    fn drop(&mut self) {
        match self.cluster.take() {
            None => self.gate.open(),
            Some((cluster, generation, run_id)) => {
                // If this fails (PostgreSQL gone), the follower reopens it
                // once the lease is seen free.
                tokio::spawn(async move {
                    if let Err(e) = cluster
                        .open_gate(Some(generation), Holder::Gc { run_id })
                        .await
                    {
                        tracing::error!(target: "regate::gc", run_id, error = %e, "cannot reopen the cluster's gate; it reopens once PostgreSQL answers");
                    }
                });
            }
        }
    }
}

impl Gc {
    pub(super) async fn run(self: Arc<Self>, mut run: GcRun, req: GcRequest) {
        let started = Instant::now();
        if run.bytes_before.is_none() {
            // A resumed run keeps the size measured by its first attempt.
            let gc = Arc::clone(&self);
            run.bytes_before = tokio::task::spawn_blocking(move || gc.storage_bytes())
                .await
                .ok()
                .flatten();
        }
        let result = match self.cluster_lease(run.id).await {
            Ok(()) => self.phases(&mut run, req, started).await,
            Err(e) => Err(e),
        };
        // After the gate has reopened: the lease goes last, and is free
        // before the run is reported finished.
        let lease = self.lease_slot().take();
        if let Some(lease) = lease {
            lease.release().await;
        }
        let gc = Arc::clone(&self);
        run.bytes_after = tokio::task::spawn_blocking(move || gc.storage_bytes())
            .await
            .ok()
            .flatten();
        run.phase = GcPhase::Done;
        run.finished_at_ms = Some(now_ms());
        let outcome = match &result {
            Ok(()) => GcStatus::Succeeded,
            Err(_) => GcStatus::Failed,
        };
        run.status = outcome;
        if let Err(e) = &result {
            run.error = Some(e.to_string());
            tracing::error!(target: "regate::gc", id = run.id, error = %e, "garbage collection failed; the gate is open again");
        } else {
            tracing::info!(target: "regate::gc", id = run.id, attempts = run.attempts, drain_ms = ?run.drain_ms, untagged_ms = ?run.untagged_ms, gc_ms = ?run.gc_ms, repositories = ?run.repositories, tags = ?run.tags, revisions = ?run.revisions, blobs_deleted = ?run.blobs_deleted, manifests_deleted = ?run.manifests_deleted, bytes_freed = ?run.bytes_freed(), "garbage collection finished");
        }
        let freed = run.bytes_freed().unwrap_or(0).max(0) as u64;
        self.metrics.gc_run(
            outcome.as_str(),
            started.elapsed(),
            if run.dry_run { 0 } else { freed },
        );
        self.save_async(&run).await;
        *self.running() = None;
        self.finished.send_replace(run.id);
    }

    /// In a cluster, a run resumed after a restart takes the GC lease here
    /// (a run started by `start` holds it already).
    async fn cluster_lease(&self, run_id: i64) -> Result<(), GcError> {
        let Some(cluster) = self.cluster.get() else {
            return Ok(());
        };
        if self.lease_slot().is_some() {
            return Ok(());
        }
        let lease = cluster.gc_lease().await?;
        cluster.gc_lease_names_run(run_id).await?;
        *self.lease_slot() = Some(lease);
        Ok(())
    }

    /// The phases of one run; the gate is open again when this returns.
    async fn phases(
        &self,
        run: &mut GcRun,
        req: GcRequest,
        started: Instant,
    ) -> Result<(), GcError> {
        let mut closed = None;
        if !req.dry_run {
            run.phase = GcPhase::Draining;
            self.save_async(run).await;
            let reason = format!("garbage collection, run {}", run.id);
            let (report, cluster) = match self.cluster.get() {
                None => (
                    self.gate
                        .drain_and_close(&reason, self.settings.drain_timeout)
                        .await,
                    None,
                ),
                Some(c) => {
                    let holder = Holder::Gc { run_id: run.id };
                    let (generation, report) = c.close_gate(holder, &reason).await?;
                    (report, Some((Arc::clone(c), generation, run.id)))
                }
            };
            if report.cancelled {
                return Err(GcError::DrainCancelled);
            }
            closed = Some(ClosedForGc {
                gate: &self.gate,
                cluster,
                closed_at: Instant::now(),
            });
            run.drain_ms = Some(started.elapsed().as_millis() as i64);
            run.drain_timed_out = Some(report.timed_out);
        }
        let keep_pushes = run.drain_timed_out == Some(true);
        let result = self.collect(run, req, keep_pushes).await;
        if let Some(c) = closed {
            run.closed_ms = Some(c.closed_at.elapsed().as_millis() as i64);
            drop(c);
        }
        result
    }

    /// Untagged cleanup (when asked) and the GC command, gate closed. With
    /// `keep_pushes` (the drain timed out), the blobs the pushes under way
    /// have stored are referenced by keeper manifests while GC runs.
    async fn collect(
        &self,
        run: &mut GcRun,
        req: GcRequest,
        keep_pushes: bool,
    ) -> Result<(), GcError> {
        let manifests_deleted = if req.untagged {
            self.untagged_cleanup(run, req).await?
        } else {
            0
        };
        let api = &self.target.api;
        let keepers = if keep_pushes {
            keeper::protect(self.gate.pending_blobs(), api, run.id).await
        } else {
            Vec::new()
        };
        let result = self.gc_command(run, req, manifests_deleted).await;
        keeper::release(&keepers, api).await;
        result
    }

    /// Deletes the manifests no tag reaches; returns how many (or would),
    /// earlier attempts of the run included.
    async fn untagged_cleanup(&self, run: &mut GcRun, req: GcRequest) -> Result<i64, GcError> {
        run.phase = GcPhase::Untagged;
        self.save_async(run).await;
        let plan = self.untagged_walk(run, req).await?;
        run.untagged_report = serde_json::to_value(&plan).ok();
        self.save_async(run).await;
        let failed: usize = plan.repositories.iter().map(|r| r.failed.len()).sum();
        if failed > 0 {
            return Err(GcError::DeletesFailed { count: failed });
        }
        Ok(run.manifests_deleted.unwrap_or(0))
    }

    /// The GC command, followed to its end.
    async fn gc_command(
        &self,
        run: &mut GcRun,
        req: GcRequest,
        manifests_deleted: i64,
    ) -> Result<(), GcError> {
        run.phase = GcPhase::Collecting;
        self.save_async(run).await;
        if let Some(root) = &self.target.storage_root {
            if !root.join("docker/registry/v2/blobs").is_dir() {
                // garbage-collect fails on a storage that holds no blob yet.
                tracing::info!(target: "regate::gc", "the storage holds no blob yet: nothing to collect");
                run.blobs_deleted = Some(0);
                run.gc_ms = Some(0);
                run.exit_code = Some(0);
                return Ok(());
            }
        }
        let argv = command::argv_for(
            self.target.argv.as_deref().ok_or(GcError::NoCommand)?,
            req.dry_run,
        );
        let log_path = self.log_dir.join(format!("run-{}.log", run.id));
        {
            let (dir, id) = (self.log_dir.clone(), run.id);
            let _ = tokio::task::spawn_blocking(move || prune_logs(&dir, id)).await;
        }
        let in_cluster = self.cluster.get().is_some();
        let spawned = command::spawn(&argv, self.target.clean_env, &log_path, in_cluster)?;
        if let Some(lease) = self.lease_slot().as_ref() {
            if !lease.watch_command(spawned.pid) {
                return Err(ClusterError::LeaseLost.into());
            }
        }
        run.pid = Some(i64::from(spawned.pid));
        run.pid_start = spawned.pid_start.clone();
        run.log_path = Some(log_path.display().to_string());
        self.save_async(run).await;
        tracing::info!(target: "regate::gc", id = run.id, argv = ?argv, pid = spawned.pid, "GC command started");

        let gc_started = Instant::now();
        let mut counts = GcCounts::default();
        let mut last_line = String::new();
        let run_id = run.id;
        let timeout = match req.deadline {
            Some(d) => self
                .settings
                .timeout
                .min(d.saturating_duration_since(Instant::now())),
            None => self.settings.timeout,
        };
        let waited = command::wait(spawned, timeout, |line| {
            tracing::info!(target: "regate::gc", "{line}");
            let before = counts.blobs_deleted;
            counts.observe(line);
            if counts.blobs_deleted != before {
                // Live progress for GET /admin/gc.
                if let Some(r) = self.running().as_mut().filter(|r| r.id == run_id) {
                    r.blobs_deleted = Some(counts.blobs_deleted as i64);
                }
            }
            if !line.trim().is_empty() {
                last_line = line.to_owned();
            }
        })
        .await?;
        if let Some(lease) = self.lease_slot().as_ref() {
            lease.command_ended();
            if lease.lost() {
                return Err(ClusterError::LeaseLost.into());
            }
        }
        run.gc_ms = Some(gc_started.elapsed().as_millis() as i64);
        run.blobs_deleted = Some(counts.deleted(req.dry_run) as i64);
        run.manifests_deleted = Some(
            manifests_deleted
                + counts.manifests_eligible.unwrap_or(0) as i64 * i64::from(!req.dry_run),
        );
        match waited {
            command::Waited::TimedOut => Err(GcError::Timeout {
                secs: timeout.as_secs(),
            }),
            command::Waited::Exited(status) => {
                run.exit_code = status.code().map(i64::from);
                if status.success() {
                    Ok(())
                } else {
                    Err(GcError::CommandFailed {
                        status: status.to_string(),
                        last_line,
                    })
                }
            }
        }
    }
}
