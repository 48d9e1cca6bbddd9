//! Coordination across the replicas of a cluster (`[state] url` set): one
//! write gate ([`gate`], driven locally by [`follower`] and [`applier`]) and
//! one GC at a time ([`gc_lease`]), one retention run at a time
//! ([`run_lease`]), one replica per scheduled time ([`schedule_claims`]),
//! kept in PostgreSQL tables of this module ([`schema`], steps of the
//! state's migrations). Without `[state] url` none of this exists and the gate is
//! the process's own, as for one instance.
//!
//! Owns the replica's identity, its connections (the synchronous `postgres`
//! client, on its own threads or `spawn_blocking`, never on the async
//! threads), its heartbeat, and the rules: a replica that cannot confirm the
//! cluster's gate within [`CONFIRM_BOUND`] closes its own gate (writes held
//! or refused, reads served); a replica whose heartbeat is older than
//! [`DEAD_AFTER`] is not waited for; a gate closed by a GC whose lease is free
//! is reopened ([`follower`]). Calls `write_gate`, and `pg_connect` to make
//! its connections.

mod applier;
mod db;
mod follower;
pub mod gate;
pub mod gc_lease;
pub mod run_lease;
mod schedule_claims;
pub(crate) mod schema;
pub mod tag_locks;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::write_gate::WriteGate;
use db::Db;
pub use run_lease::{RunKind, RunLease};
pub use schedule_claims::Scheduled;

/// A replica that has not confirmed the cluster's gate for this long closes
/// its own (fail safe).
pub const CONFIRM_BOUND: Duration = Duration::from_secs(3);
/// A replica whose heartbeat is older than this is dead: not waited for.
pub const DEAD_AFTER_SECS: i64 = 10;
pub const DEAD_AFTER: Duration = Duration::from_secs(DEAD_AFTER_SECS as u64);
/// How often the follower reads the gate without a notification.
pub const POLL: Duration = Duration::from_millis(250);
/// The first key of every advisory lock of regate ("rega").
pub const LOCK_CLASS: i32 = 0x7265_6761;
/// Second keys: the GC lease, the retention lease (1 was the schema's,
/// before its tables became migration steps of the state).
pub const LOCK_GC: i32 = 2;
pub const LOCK_RETENTION: i32 = 3;
/// The NOTIFY channel of gate changes.
pub const CHANNEL: &str = "regate_gate";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{0}")]
    Thread(String),
    /// Its message says what to do (`pg_connect`'s advice).
    #[error("state.url: cannot reach PostgreSQL or log in: {0}")]
    Connect(#[from] crate::pg_connect::ConnectError),
    #[error("PostgreSQL (state.url): {0}")]
    Sql(#[from] postgres::Error),
    #[error("the gate is closed by hand for maintenance ({reason}) through replica {replica}; switch maintenance off first")]
    InMaintenance { reason: String, replica: String },
    #[error("GC run {run_id} on replica {replica} holds the gate; it reopens it when done")]
    GcHoldsGate { run_id: i64, replica: String },
    #[error("GC run {run_id} is already running on replica {replica}")]
    GcRunningElsewhere { run_id: i64, replica: String },
    #[error("a {kind} run (started by {account} at {started_at}) is already running on replica {replica}; wait for it to end and try again")]
    RunningElsewhere {
        kind: &'static str,
        replica: String,
        account: String,
        started_at: String,
    },
    #[error("replica(s) {0} did not confirm that their writes drained; the gate was reopened")]
    NotDrained(String),
    #[error("replica(s) {0} did not confirm in time that they hold the tag's lock; nothing was changed, retry later")]
    TagLockNotAcked(String),
    /// Another error, told to several callers at once (as its message).
    #[error("PostgreSQL (state.url): {0}")]
    Shared(String),
    #[error(
        "the GC lease was lost (the connection to PostgreSQL broke); the GC command was killed"
    )]
    LeaseLost,
}

impl ClusterError {
    /// The same error for one more caller (the originals are not `Clone`).
    pub fn shared(&self) -> ClusterError {
        match self {
            ClusterError::TagLockNotAcked(l) => ClusterError::TagLockNotAcked(l.clone()),
            ClusterError::NotDrained(l) => ClusterError::NotDrained(l.clone()),
            ClusterError::Shared(m) => ClusterError::Shared(m.clone()),
            other => ClusterError::Shared(other.to_string()),
        }
    }
}

/// The cluster's gate as this replica last read it.
#[derive(Debug, Clone, Serialize)]
pub struct GateRow {
    pub generation: i64,
    /// `open` or `closed`.
    pub state: String,
    pub reason: Option<String>,
    /// `gc` or `maintenance`.
    pub holder_kind: Option<String>,
    pub holder_replica: Option<String>,
    pub run_id: Option<i64>,
}

/// The GC holding the lease, as last read.
#[derive(Debug, Clone, Serialize)]
pub struct GcRow {
    pub replica: String,
    pub run_id: i64,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub gate: GateRow,
    pub gc: Option<GcRow>,
    pub gc_lease_held: bool,
    pub live_replicas: Vec<String>,
    /// Tag locks other replicas announced (for their deletes).
    pub tag_locks: Vec<tag_locks::TagLockRow>,
    pub read_at: Instant,
}

/// One replica's membership of the cluster.
pub struct Cluster {
    replica: String,
    db: Db,
    gate: Arc<WriteGate>,
    drain_timeout: Duration,
    snapshot: watch::Sender<Option<Snapshot>>,
    /// Acks from the applier to the follower: drained generation.
    acks: Mutex<std::sync::mpsc::Sender<i64>>,
    stopping: AtomicBool,
    /// This replica's tag locks, taken on behalf of other replicas' deletes.
    local_tags: std::sync::OnceLock<Arc<crate::tag_locks::TagLocks>>,
    /// Those locks, by the lock row they are held for.
    held_for_others: Mutex<std::collections::HashMap<i64, tag_locks::Held>>,
}

/// The cluster part of `GET /admin/gc`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub replica: String,
    /// `open`, `closed`, or `unknown` (PostgreSQL not reached lately).
    pub state: String,
    pub gate: Option<GateRow>,
    pub gc: Option<GcRow>,
    pub live_replicas: Vec<String>,
    pub confirmed_ms_ago: Option<u64>,
}

impl Cluster {
    /// Connects (the state has migrated the tables), registers this replica, reads the gate
    /// and applies it before the first request, then follows it.
    pub async fn start(
        url: &crate::config::StateUrl,
        replica: String,
        gate: Arc<WriteGate>,
        drain_timeout: Duration,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let connector = crate::pg_connect::PgConnector::new(url, &replica);
        let db = Db::new(connector.clone());
        let (ack_tx, ack_rx) = std::sync::mpsc::channel();
        let cluster = Arc::new(Cluster {
            replica: replica.clone(),
            db,
            gate,
            drain_timeout,
            snapshot: watch::channel(None).0,
            acks: Mutex::new(ack_tx),
            stopping: AtomicBool::new(false),
            local_tags: std::sync::OnceLock::new(),
            held_for_others: Mutex::new(Default::default()),
        });
        let c = Arc::clone(&cluster);
        let first = tokio::task::spawn_blocking(move || {
            c.db.with(schema::tidy)?;
            c.db.with(|client| follower::register(client, &c.replica))?;
            c.db.with(|client| follower::poll(client, &c.replica))
        })
        .await
        .expect("cluster start panicked")?;
        cluster.snapshot.send_replace(Some(first.clone()));
        applier::apply_at_start(&cluster, &first);
        follower::spawn(Arc::clone(&cluster), connector, ack_rx);
        tracing::info!(target: "regate::cluster", replica = %replica, "joined the cluster (state.url)");
        Ok(cluster)
    }

    /// Drives the local gate and tag locks from the cluster's until `stop` turns true.
    pub async fn follow(self: Arc<Self>, stop: watch::Receiver<bool>) {
        tokio::select! {
            _ = applier::run(&self, stop) => {}
            _ = tag_locks::hold_for_others(&self) => {}
        }
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    pub fn latest(&self) -> Option<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// Why this replica cannot confirm the cluster's gate (for `/readyz`), if it cannot.
    pub fn unconfirmed(&self) -> Option<String> {
        match self.latest() {
            Some(s) if s.read_at.elapsed() < CONFIRM_BOUND => None,
            Some(s) => Some(format!(
                "PostgreSQL (state.url) not reached for {}s: the cluster's write gate cannot be confirmed, writes are held or refused, reads are served",
                s.read_at.elapsed().as_secs()
            )),
            None => Some("PostgreSQL (state.url) never reached".into()),
        }
    }

    pub fn status(&self) -> ClusterStatus {
        let snap = self.latest();
        let state = match (&snap, self.unconfirmed()) {
            (Some(s), None) => s.gate.state.clone(),
            _ => "unknown".into(),
        };
        ClusterStatus {
            replica: self.replica.clone(),
            state,
            gate: snap.as_ref().map(|s| s.gate.clone()),
            gc: snap.as_ref().and_then(|s| s.gc.clone()),
            live_replicas: snap
                .as_ref()
                .map(|s| s.live_replicas.clone())
                .unwrap_or_default(),
            confirmed_ms_ago: snap.map(|s| s.read_at.elapsed().as_millis() as u64),
        }
    }

    fn ack_drained(&self, generation: i64) {
        let tx = self.acks.lock().unwrap_or_else(|e| e.into_inner());
        let _ = tx.send(generation);
    }
}
