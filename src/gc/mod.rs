//! Garbage collection without fear: runs the registry's GC with the write
//! gate closed, cleans untagged manifests safely, keeps a history, and
//! closes the gate by hand for other maintenance.
//!
//! Owns [`Gc`]: starting a run (one at a time), its phases (drain and close
//! the gate, untagged cleanup, the GC command, reopen), the result record in
//! the state database, recovery after a restart (the gate comes back closed
//! while a GC command started before the restart still runs, or while
//! maintenance was switched on by hand; open otherwise), and the schedule.
//! A failure at any phase reopens the gate and is recorded; it never leaves
//! writes blocked. Calls `write_gate`, `state` and `metrics`; the admin API
//! ([`admin_api`]) is its HTTP face.

pub mod admin_api;
pub mod command;
pub mod output;
pub mod schedule;
pub mod storage_size;
pub mod untagged;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use http::StatusCode;
use serde::Deserialize;
use tokio::sync::watch;

use crate::config::gc::GcSettings;
use crate::error::{ErrorCode, RegistryError};
use crate::metrics::Metrics;
use crate::state::gc_history::{GcRun, Maintenance};
use crate::state::{State, StateError};
use crate::write_gate::WriteGate;
use output::GcCounts;

/// Why a GC or maintenance request could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("no GC command: regate runs garbage-collect itself for a managed registry ([upstream.managed]); for an external registry set [gc] command to the argv that runs it")]
    NoCommand,
    #[error("untagged cleanup needs to read the registry's storage: use [upstream.managed] or set [gc] storage_root")]
    UntaggedNeedsStorage,
    #[error("GC run {id} is already running")]
    AlreadyRunning { id: i64 },
    #[error("the gate is closed by hand for maintenance ({reason}); switch maintenance off first")]
    InMaintenance { reason: String },
    #[error("GC run {id} holds the gate; it reopens it when done")]
    GcHoldsGate { id: i64 },
    #[error("no GC run {id}")]
    NoSuchRun { id: i64 },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Command(#[from] command::CommandError),
    #[error(transparent)]
    Untagged(#[from] untagged::UntaggedError),
    #[error("the gate was opened by hand while draining for GC; GC did not run")]
    DrainCancelled,
    #[error("reading the storage size of {path}: {source}")]
    StorageSize {
        path: String,
        source: std::io::Error,
    },
    #[error("the GC command did not finish within {secs}s and was killed")]
    Timeout { secs: u64 },
    #[error("the GC command failed ({status}): {last_line}")]
    CommandFailed { status: String, last_line: String },
    #[error(
        "untagged cleanup could not delete {count} manifest(s); see the run's untagged_report"
    )]
    DeletesFailed { count: usize },
}

impl From<GcError> for RegistryError {
    fn from(e: GcError) -> Self {
        let (status, code) = match &e {
            GcError::NoCommand | GcError::UntaggedNeedsStorage => {
                (StatusCode::BAD_REQUEST, ErrorCode::Unsupported)
            }
            GcError::AlreadyRunning { .. }
            | GcError::InMaintenance { .. }
            | GcError::GcHoldsGate { .. } => (StatusCode::CONFLICT, ErrorCode::Denied),
            GcError::NoSuchRun { .. } => (StatusCode::NOT_FOUND, ErrorCode::Unknown),
            GcError::State(_)
            | GcError::Command(_)
            | GcError::Untagged(_)
            | GcError::StorageSize { .. }
            | GcError::Timeout { .. }
            | GcError::CommandFailed { .. }
            | GcError::DrainCancelled
            | GcError::DeletesFailed { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Unknown)
            }
        };
        RegistryError::new(status, code, e.to_string())
    }
}

/// What to run.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub untagged: bool,
    /// The end of the `[gc] window` (scheduled runs): the GC command is
    /// stopped then.
    #[serde(skip)]
    pub deadline: Option<Instant>,
}

/// Where GC runs: the command and, when visible, the storage.
#[derive(Debug, Clone)]
pub struct GcTarget {
    /// None: no command configured (an external registry without `[gc] command`).
    pub argv: Option<Vec<String>>,
    /// Start the command with only `PATH` (the managed registry's binary).
    pub clean_env: bool,
    pub storage_root: Option<PathBuf>,
    /// The registry's origin, for deleting untagged manifests past the gate.
    pub upstream_origin: String,
}

impl GcTarget {
    /// The target for `settings`: the managed registry's own garbage-collect
    /// with its config and storage, or the configured command and root.
    pub fn new(
        settings: &GcSettings,
        managed: Option<(&str, &crate::managed::ManagedPaths)>,
        upstream_origin: &str,
    ) -> Self {
        match managed {
            Some((binary, paths)) => GcTarget {
                argv: Some(vec![
                    binary.to_owned(),
                    "garbage-collect".into(),
                    paths.config.display().to_string(),
                ]),
                clean_env: true,
                storage_root: Some(
                    settings
                        .storage_root
                        .clone()
                        .unwrap_or(paths.storage.clone()),
                ),
                upstream_origin: upstream_origin.to_owned(),
            },
            None => GcTarget {
                argv: settings.command.clone(),
                clean_env: false,
                storage_root: settings.storage_root.clone(),
                upstream_origin: upstream_origin.to_owned(),
            },
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

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

/// Reopens the gate when the GC phases end, however they end.
struct ClosedForGc<'a> {
    gate: &'a WriteGate,
    closed_at: Instant,
}

impl Drop for ClosedForGc<'_> {
    fn drop(&mut self) {
        self.gate.open();
    }
}

pub struct Gc {
    settings: GcSettings,
    target: GcTarget,
    gate: Arc<WriteGate>,
    state: State,
    metrics: Arc<Metrics>,
    log_dir: PathBuf,
    /// The run in progress, as last updated.
    running: Mutex<Option<GcRun>>,
    /// The id of the last run that finished.
    finished: watch::Sender<i64>,
}

impl Gc {
    pub fn new(
        settings: GcSettings,
        target: GcTarget,
        gate: Arc<WriteGate>,
        state: State,
        metrics: Arc<Metrics>,
        log_dir: PathBuf,
    ) -> Arc<Self> {
        Arc::new(Gc {
            settings,
            target,
            gate,
            state,
            metrics,
            log_dir,
            running: Mutex::new(None),
            finished: watch::channel(0).0,
        })
    }

    fn running(&self) -> MutexGuard<'_, Option<GcRun>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn gate(&self) -> &Arc<WriteGate> {
        &self.gate
    }

    pub fn settings(&self) -> &GcSettings {
        &self.settings
    }

    /// The run in progress, if any.
    pub fn current(&self) -> Option<GcRun> {
        self.running().clone()
    }

    pub fn history(&self, limit: usize) -> Result<Vec<GcRun>, GcError> {
        Ok(self.state.gc_runs_recent(limit)?)
    }

    pub fn run_record(&self, id: i64) -> Result<GcRun, GcError> {
        if let Some(r) = self.running().as_ref().filter(|r| r.id == id) {
            return Ok(r.clone());
        }
        self.state.gc_run(id)?.ok_or(GcError::NoSuchRun { id })
    }

    pub fn maintenance(&self) -> Result<Option<Maintenance>, GcError> {
        Ok(self.state.maintenance()?)
    }

    /// Starts a run in the background and returns its id.
    pub fn start(self: &Arc<Self>, req: GcRequest, trigger: &str) -> Result<i64, GcError> {
        if self.target.argv.is_none() {
            return Err(GcError::NoCommand);
        }
        if req.untagged && self.target.storage_root.is_none() {
            return Err(GcError::UntaggedNeedsStorage);
        }
        let mut running = self.running();
        if let Some(r) = running.as_ref() {
            return Err(GcError::AlreadyRunning { id: r.id });
        }
        if !req.dry_run {
            if let Some(m) = self.state.maintenance()? {
                return Err(GcError::InMaintenance { reason: m.reason });
            }
        }
        let mut run = GcRun {
            trigger: trigger.to_owned(),
            dry_run: req.dry_run,
            untagged: req.untagged,
            status: "running".into(),
            phase: "starting".into(),
            started_at_ms: now_ms(),
            ..Default::default()
        };
        run.id = self.state.gc_run_insert(&run)?;
        *running = Some(run.clone());
        drop(running);
        tracing::info!(target: "regate::gc", id = run.id, trigger, dry_run = req.dry_run, untagged = req.untagged, "garbage collection started");
        let id = run.id;
        let gc = Arc::clone(self);
        tokio::spawn(async move { gc.run(run, req).await });
        Ok(id)
    }

    /// Waits until run `id` is no longer running; returns its record.
    pub async fn wait(&self, id: i64) -> Result<GcRun, GcError> {
        let mut rx = self.finished.subscribe();
        loop {
            if !matches!(self.running().as_ref(), Some(r) if r.id == id) {
                return self.run_record(id);
            }
            if rx.changed().await.is_err() {
                return self.run_record(id);
            }
        }
    }

    /// Updates the in-memory copy and the database.
    fn save(&self, run: &GcRun) {
        if let Some(r) = self.running().as_mut().filter(|r| r.id == run.id) {
            *r = run.clone();
        }
        if let Err(e) = self.state.gc_run_save(run) {
            tracing::error!(target: "regate::gc", id = run.id, error = %e, "cannot record the GC run");
        }
    }

    fn storage_bytes(&self) -> Option<i64> {
        let root = self.target.storage_root.as_ref()?;
        match storage_size::storage_bytes(root) {
            Ok(n) => Some(n as i64),
            Err(e) => {
                tracing::warn!(target: "regate::gc", root = %root.display(), error = %e, "cannot measure the storage");
                None
            }
        }
    }

    async fn run(self: Arc<Self>, mut run: GcRun, req: GcRequest) {
        let started = Instant::now();
        let gc = Arc::clone(&self);
        run.bytes_before = tokio::task::spawn_blocking(move || gc.storage_bytes())
            .await
            .ok()
            .flatten();
        let result = self.phases(&mut run, req, started).await;
        let gc = Arc::clone(&self);
        run.bytes_after = tokio::task::spawn_blocking(move || gc.storage_bytes())
            .await
            .ok()
            .flatten();
        run.phase = "done".into();
        run.finished_at_ms = Some(now_ms());
        let outcome = match &result {
            Ok(()) => "succeeded",
            Err(_) => "failed",
        };
        run.status = outcome.into();
        if let Err(e) = &result {
            run.error = Some(e.to_string());
            tracing::error!(target: "regate::gc", id = run.id, error = %e, "garbage collection failed; the gate is open again");
        } else {
            tracing::info!(target: "regate::gc", id = run.id, blobs_deleted = ?run.blobs_deleted, manifests_deleted = ?run.manifests_deleted, bytes_freed = ?run.bytes_freed(), "garbage collection finished");
        }
        let freed = run.bytes_freed().unwrap_or(0).max(0) as u64;
        self.metrics.gc_run(
            outcome,
            started.elapsed(),
            if run.dry_run { 0 } else { freed },
        );
        self.save(&run);
        *self.running() = None;
        self.finished.send_replace(run.id);
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
            run.phase = "draining".into();
            self.save(run);
            let report = self
                .gate
                .drain_and_close(
                    &format!("garbage collection, run {}", run.id),
                    self.settings.drain_timeout,
                )
                .await;
            if report.cancelled {
                return Err(GcError::DrainCancelled);
            }
            closed = Some(ClosedForGc {
                gate: &self.gate,
                closed_at: Instant::now(),
            });
            run.drain_ms = Some(started.elapsed().as_millis() as i64);
            run.drain_timed_out = Some(report.timed_out);
        }
        let result = self.collect(run, req).await;
        if let Some(c) = closed {
            run.closed_ms = Some(c.closed_at.elapsed().as_millis() as i64);
            drop(c);
        }
        result
    }

    /// Untagged cleanup (when asked) and the GC command, gate closed.
    async fn collect(&self, run: &mut GcRun, req: GcRequest) -> Result<(), GcError> {
        let mut manifests_deleted = 0i64;
        if req.untagged {
            run.phase = "untagged".into();
            self.save(run);
            let root = self
                .target
                .storage_root
                .clone()
                .ok_or(GcError::UntaggedNeedsStorage)?;
            let mut plan = tokio::task::spawn_blocking(move || untagged::plan(&root))
                .await
                .map_err(|e| GcError::CommandFailed {
                    status: "panicked".into(),
                    last_line: e.to_string(),
                })??;
            if !req.dry_run {
                untagged::delete(&mut plan, &self.target.upstream_origin).await;
                manifests_deleted = plan.deleted() as i64;
            } else {
                manifests_deleted = plan.to_delete() as i64;
            }
            run.untagged_report = serde_json::to_value(&plan).ok();
            run.manifests_deleted = Some(manifests_deleted);
            self.save(run);
            let failed: usize = plan.repositories.iter().map(|r| r.failed.len()).sum();
            if failed > 0 {
                return Err(GcError::DeletesFailed { count: failed });
            }
        }

        run.phase = "collecting".into();
        self.save(run);
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
        prune_logs(&self.log_dir, run.id);
        let spawned = command::spawn(&argv, self.target.clean_env, &log_path)?;
        run.pid = Some(i64::from(spawned.pid));
        run.pid_start = spawned.pid_start.clone();
        run.log_path = Some(log_path.display().to_string());
        self.save(run);
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

    /// Switches maintenance on: persists it, then drains and closes the gate.
    pub async fn maintenance_on(
        &self,
        reason: &str,
    ) -> Result<crate::write_gate::DrainReport, GcError> {
        {
            let running = self.running();
            if let Some(r) = running.as_ref().filter(|r| !r.dry_run) {
                return Err(GcError::GcHoldsGate { id: r.id });
            }
            self.state.set_maintenance(Some(&Maintenance {
                reason: reason.to_owned(),
                since_ms: now_ms(),
            }))?;
        }
        tracing::info!(target: "regate::gc", reason, "maintenance switched on");
        Ok(self
            .gate
            .drain_and_close(
                &format!("maintenance: {reason}"),
                self.settings.drain_timeout,
            )
            .await)
    }

    /// Switches maintenance off and opens the gate.
    pub fn maintenance_off(&self) -> Result<(), GcError> {
        let running = self.running();
        if let Some(r) = running.as_ref().filter(|r| !r.dry_run) {
            return Err(GcError::GcHoldsGate { id: r.id });
        }
        self.state.set_maintenance(None)?;
        self.gate.open();
        tracing::info!(target: "regate::gc", "maintenance switched off");
        Ok(())
    }

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
