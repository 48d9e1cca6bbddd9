//! The GC lease: one GC at a time in the cluster. A session-level advisory
//! lock on a connection of its own, held for the run. The session is set to
//! end after `idle_session_timeout` without a statement, and a thread pings
//! it every [`PING`]: if a ping fails or takes over [`PING_TIMEOUT`], the
//! lease is lost and the GC command's process group is killed at once, well
//! before another replica may reopen the gate (`follower::GRACE` after the
//! lock is seen free). A replica that dies drops its session (the lock is
//! freed) and its GC command gets SIGKILL from the kernel (parent-death
//! signal, set by `gc::command`).
//!
//! A run gives the lease back with [`GcLease::release`], which returns once
//! the lock is free, so the next run asked for after a run is reported
//! finished never meets the finished one's lease.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use postgres::Client;

use super::{Cluster, ClusterError, LOCK_CLASS, LOCK_GC};

pub const PING: Duration = Duration::from_millis(500);
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// PostgreSQL ends the lease's session after this long without a ping.
const IDLE_SESSION_TIMEOUT_MS: u64 = 5000;

/// Held for a GC run; [`GcLease::release`] gives it back, and so does
/// dropping it (without waiting for the lock to be free).
pub struct GcLease {
    shared: Arc<Shared>,
    /// Dropped to wake the holding thread, which then frees the lock.
    stop: Option<mpsc::Sender<()>>,
    /// Told by the holding thread once the lock is free (or lost).
    freed: Option<tokio::sync::oneshot::Receiver<()>>,
}

struct Shared {
    /// The GC command's pid (its process group), 0 while none runs.
    pid: AtomicI32,
    lost: AtomicBool,
}

impl GcLease {
    /// Registers the GC command so a lost lease kills it; false (and the
    /// command killed) if the lease is already lost.
    pub fn watch_command(&self, pid: u32) -> bool {
        self.shared.pid.store(pid as i32, Ordering::SeqCst);
        if self.lost() {
            kill_group(pid as i32);
            return false;
        }
        true
    }

    /// The command has ended.
    pub fn command_ended(&self) {
        self.shared.pid.store(0, Ordering::SeqCst);
    }

    pub fn lost(&self) -> bool {
        self.shared.lost.load(Ordering::SeqCst)
    }

    /// Gives the lease back and waits (at most [`PING_TIMEOUT`]: PostgreSQL
    /// may be away, and then its session ends on its own) until the lock is
    /// free.
    pub async fn release(mut self) {
        self.stop.take();
        if let Some(freed) = self.freed.take() {
            let _ = tokio::time::timeout(PING_TIMEOUT, freed).await;
        }
    }
}

impl Drop for GcLease {
    fn drop(&mut self) {
        self.stop.take();
    }
}

fn kill_group(pid: i32) {
    use nix::sys::signal::{killpg, Signal};
    if pid > 0 {
        let _ = killpg(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    }
}

impl Cluster {
    /// Takes the GC lease, or says which replica's run holds it.
    pub async fn gc_lease(self: &Arc<Self>) -> Result<GcLease, ClusterError> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || me.gc_lease_blocking(0))
            .await
            .expect("gc lease panicked")
    }

    /// Records which run of this replica holds the lease (`GET /admin/gc`, 409s).
    pub async fn gc_lease_names_run(self: &Arc<Self>, run_id: i64) -> Result<(), ClusterError> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            me.db.with(|c| {
                c.execute(
                    "UPDATE regate_cluster_gc SET run_id = $2 WHERE id = 1 AND replica = $1",
                    &[&me.replica, &run_id],
                )
            })
        })
        .await
        .expect("gc lease panicked")?;
        Ok(())
    }

    fn gc_lease_blocking(&self, run_id: i64) -> Result<GcLease, ClusterError> {
        let mut client = self.db.connector().connect_with("gc-lease", |config| {
            config.options(&format!(
                "-c idle_session_timeout={IDLE_SESSION_TIMEOUT_MS}"
            ));
        })?;
        let got: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[&LOCK_CLASS, &LOCK_GC],
            )?
            .get(0);
        if !got {
            let row = client.query_opt(
                "SELECT replica, run_id FROM regate_cluster_gc WHERE id = 1",
                &[],
            )?;
            return Err(ClusterError::GcRunningElsewhere {
                replica: row.as_ref().map(|r| r.get(0)).unwrap_or_else(|| "?".into()),
                run_id: row.map(|r| r.get(1)).unwrap_or(0),
            });
        }
        client.execute(
            "INSERT INTO regate_cluster_gc (id, replica, run_id) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET replica = $1, run_id = $2, started_at = now()",
            &[&self.replica, &run_id],
        )?;
        let shared = Arc::new(Shared {
            pid: AtomicI32::new(0),
            lost: AtomicBool::new(false),
        });
        let (stop, stopped) = mpsc::channel();
        let (tell_freed, freed) = tokio::sync::oneshot::channel();
        let s = Arc::clone(&shared);
        let replica = self.replica.clone();
        std::thread::Builder::new()
            .name("regate-gc-lease".into())
            .spawn(move || {
                hold(client, &s, &replica, &stopped);
                let _ = tell_freed.send(());
            })
            .map_err(|e| ClusterError::Thread(format!("cannot start the GC lease thread: {e}")))?;
        Ok(GcLease {
            shared,
            stop: Some(stop),
            freed: Some(freed),
        })
    }
}

/// Pings the lease's session every [`PING`] until the lease is released
/// (`stopped` says so at once) or lost.
fn hold(mut client: Client, shared: &Shared, replica: &str, stopped: &mpsc::Receiver<()>) {
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(PING) {
        if let Err(e) = client.is_valid(PING_TIMEOUT) {
            shared.lost.store(true, Ordering::SeqCst);
            let pid = shared.pid.load(Ordering::SeqCst);
            kill_group(pid);
            tracing::error!(target: "regate::cluster", error = %e, pid, "the GC lease is lost (PostgreSQL, state.url, does not answer); killed the GC command");
            return;
        }
    }
    let _ = client.execute(
        "DELETE FROM regate_cluster_gc WHERE id = 1 AND replica = $1",
        &[&replica],
    );
    let _ = client.execute(
        "SELECT pg_advisory_unlock($1, $2)",
        &[&LOCK_CLASS, &LOCK_GC],
    );
}
