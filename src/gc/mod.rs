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
//! writes blocked. A run that a restart cut short before its GC command
//! started is resumed at the next start (same run, one more attempt): its
//! untagged walk skips the repositories it finished ([`walk`]). State calls
//! run off the async threads. Calls `write_gate`, `state`, `metrics` and
//! `registry_api` (keepers, untagged deletes, with the upstream credentials); the
//! admin API ([`admin_api`]) is its HTTP face.

pub mod admin_api;
pub mod command;
mod keeper;
mod maintenance;
pub mod output;
mod recovery;
mod run;
pub mod schedule;
pub mod storage_size;
pub mod untagged;
mod walk;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use http::StatusCode;
use serde::Deserialize;
use tokio::sync::watch;

use crate::cluster::{Cluster, ClusterError};
use crate::config::gc::GcSettings;
use crate::error::{ErrorCode, RegistryError};
use crate::metrics::Metrics;
use crate::registry_api::RegistryApi;
use crate::state::gc_history::{GcPhase, GcRun, GcStatus, GcTrigger, Maintenance};
use crate::state::{blocking, State, StateError};
use crate::write_gate::WriteGate;

/// Why a GC or maintenance request could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("no GC command: regate runs garbage-collect itself for a managed registry ([upstream.managed]); for an external registry set [gc] command to the argv that runs it")]
    NoCommand,
    #[error("untagged cleanup needs to read the registry's storage: use [upstream.managed] or set [gc] storage_root")]
    UntaggedNeedsStorage,
    #[error("GC run {id} is already running")]
    AlreadyRunning { id: i64 },
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
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
            GcError::State(s) if s.is_unavailable() => {
                return RegistryError::unavailable(e.to_string())
            }
            GcError::NoCommand | GcError::UntaggedNeedsStorage => {
                (StatusCode::BAD_REQUEST, ErrorCode::Unsupported)
            }
            GcError::AlreadyRunning { .. }
            | GcError::InMaintenance { .. }
            | GcError::GcHoldsGate { .. } => (StatusCode::CONFLICT, ErrorCode::Denied),
            GcError::Cluster(c) => match c {
                ClusterError::InMaintenance { .. }
                | ClusterError::GcHoldsGate { .. }
                | ClusterError::GcRunningElsewhere { .. }
                | ClusterError::RunningElsewhere { .. } => {
                    (StatusCode::CONFLICT, ErrorCode::Denied)
                }
                ClusterError::Thread(_)
                | ClusterError::Connect(_)
                | ClusterError::Sql(_)
                | ClusterError::NotDrained(_)
                | ClusterError::TagLockNotAcked(_)
                | ClusterError::Shared(_)
                | ClusterError::LeaseLost => return RegistryError::unavailable(e.to_string()),
            },
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
    /// The registry's API (with regate's upstream credentials), for keepers
    /// and deleting untagged manifests past the gate.
    pub api: RegistryApi,
}

impl GcTarget {
    /// The target for `settings`: the managed registry's own garbage-collect
    /// with its config and storage, or the configured command and root.
    pub fn new(
        settings: &GcSettings,
        managed: Option<(&str, &crate::managed::ManagedPaths)>,
        api: RegistryApi,
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
                api,
            },
            None => GcTarget {
                argv: settings.command.clone(),
                clean_env: false,
                storage_root: settings.storage_root.clone(),
                api,
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
    /// Held while a run is started or maintenance switched, so the checks
    /// and the state writes of one are not interleaved with the other's.
    switching: tokio::sync::Mutex<()>,
    /// Set with `[state] url`: the gate and the GC lease are the cluster's.
    cluster: std::sync::OnceLock<Arc<Cluster>>,
    /// The cluster's GC lease, held by the run in progress.
    lease: Mutex<Option<crate::cluster::gc_lease::GcLease>>,
}

/// How many times (a second apart) a run's final record is written again.
const SAVE_RETRIES: usize = 3600;

impl Gc {
    /// Keeps the history at `gc.history_keep` finished runs, removing the
    /// logs of the runs it drops. A failure here never stops a GC.
    async fn prune_history(&self) {
        let (state, keep) = (self.state.clone(), self.settings.history_keep);
        let logs = match blocking(move || state.gc_runs_prune(keep)).await {
            Ok(logs) => logs,
            Err(e) => {
                tracing::warn!(target: "regate::gc", error = %e, "cannot prune the GC history");
                return;
            }
        };
        for log in logs {
            match std::fs::remove_file(&log) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(target: "regate::gc", log, error = %e, "cannot remove an old GC log")
                }
            }
        }
    }

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
            switching: tokio::sync::Mutex::new(()),
            cluster: std::sync::OnceLock::new(),
            lease: Mutex::new(None),
        })
    }

    fn running(&self) -> MutexGuard<'_, Option<GcRun>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the gate and the GC lease the cluster's (before `recover`).
    pub fn join_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    fn lease_slot(&self) -> MutexGuard<'_, Option<crate::cluster::gc_lease::GcLease>> {
        self.lease.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn gate(&self) -> &Arc<WriteGate> {
        &self.gate
    }

    /// The registry's storage, when regate can read it (managed mode or
    /// `gc.storage_root`).
    pub fn storage_root(&self) -> Option<&std::path::Path> {
        self.target.storage_root.as_deref()
    }

    pub fn settings(&self) -> &GcSettings {
        &self.settings
    }

    /// The run in progress, if any.
    pub fn current(&self) -> Option<GcRun> {
        self.running().clone()
    }

    pub async fn history(&self, limit: usize) -> Result<Vec<GcRun>, GcError> {
        let state = self.state.clone();
        Ok(blocking(move || state.gc_runs_recent(limit)).await?)
    }

    pub async fn run_record(&self, id: i64) -> Result<GcRun, GcError> {
        if let Some(r) = self.running().as_ref().filter(|r| r.id == id) {
            return Ok(r.clone());
        }
        let state = self.state.clone();
        blocking(move || state.gc_run(id))
            .await?
            .ok_or(GcError::NoSuchRun { id })
    }

    pub async fn maintenance(&self) -> Result<Option<Maintenance>, GcError> {
        let state = self.state.clone();
        Ok(blocking(move || state.maintenance()).await?)
    }

    /// Starts a run in the background and returns its id.
    pub async fn start(
        self: &Arc<Self>,
        req: GcRequest,
        trigger: GcTrigger,
    ) -> Result<i64, GcError> {
        if self.target.argv.is_none() {
            return Err(GcError::NoCommand);
        }
        if req.untagged && self.target.storage_root.is_none() {
            return Err(GcError::UntaggedNeedsStorage);
        }
        let _switching = self.switching.lock().await;
        if let Some(r) = self.running().as_ref() {
            return Err(GcError::AlreadyRunning { id: r.id });
        }
        if !req.dry_run {
            if let Some(m) = self.maintenance().await? {
                return Err(GcError::InMaintenance { reason: m.reason });
            }
        }
        let deadline_at_ms = req
            .deadline
            .map(|d| now_ms() + d.saturating_duration_since(Instant::now()).as_millis() as i64);
        let mut run = GcRun {
            trigger,
            dry_run: req.dry_run,
            untagged: req.untagged,
            status: GcStatus::Running,
            phase: GcPhase::Starting,
            started_at_ms: now_ms(),
            attempts: 1,
            deadline_at_ms,
            ..Default::default()
        };
        // One GC at a time in the cluster: the lease first (409 naming the
        // run that holds it), then the record.
        let lease = match self.cluster.get() {
            Some(cluster) => Some(cluster.gc_lease().await?),
            None => None,
        };
        let state = self.state.clone();
        let inserted = run.clone();
        run.id = blocking(move || state.gc_run_insert(&inserted)).await?;
        if let (Some(cluster), Some(lease)) = (self.cluster.get(), lease) {
            cluster.gc_lease_names_run(run.id).await?;
            *self.lease_slot() = Some(lease);
        }
        *self.running() = Some(run.clone());
        self.prune_history().await;
        tracing::info!(target: "regate::gc", id = run.id, trigger = trigger.as_str(), dry_run = req.dry_run, untagged = req.untagged, "garbage collection started");
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
                return self.run_record(id).await;
            }
            if rx.changed().await.is_err() {
                return self.run_record(id).await;
            }
        }
    }

    /// Updates the in-memory copy and the database (off the async threads).
    async fn save_async(&self, run: &GcRun) {
        if let Some(r) = self.running().as_mut().filter(|r| r.id == run.id) {
            *r = run.clone();
        }
        let (state, saved) = (self.state.clone(), run.clone());
        if let Err(e) = blocking(move || state.gc_run_save(&saved)).await {
            tracing::error!(target: "regate::gc", id = run.id, error = %e, "cannot record the GC run");
            if run.finished_at_ms.is_some() {
                self.save_later(run.clone());
            }
        }
    }

    /// The final record of a run the state could not take (PostgreSQL away,
    /// for replicas), written again every second until it lands, so the
    /// history never keeps a finished run as running.
    fn save_later(&self, run: GcRun) {
        let state = self.state.clone();
        tokio::spawn(async move {
            for _ in 0..SAVE_RETRIES {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let (state, saved) = (state.clone(), run.clone());
                if blocking(move || state.gc_run_save(&saved)).await.is_ok() {
                    tracing::info!(target: "regate::gc", id = run.id, "recorded the GC run's end");
                    return;
                }
            }
            tracing::error!(target: "regate::gc", id = run.id, "gave up recording the GC run's end; the history shows it running until a restart resolves it");
        });
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
}
