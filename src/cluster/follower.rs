//! The follower thread of a replica: its own connection, `LISTEN`s for gate
//! changes and reads the gate at least every [`POLL`] (the heartbeat rides on
//! the same statement), hands the [`Snapshot`] to the async side, writes the
//! applier's "drained at generation N" acks, and reopens a gate left closed
//! by a GC that no longer holds the lease (free, or taken since by another
//! run): at once when that GC was this replica's (its command is over: the
//! lease is dropped after it), after [`GRACE`] otherwise (its replica kills
//! its command within `gc_lease::PING` + `gc_lease::PING_TIMEOUT` of losing
//! the lease).

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;

use crate::pg_connect::PgConnector;

use super::{
    Cluster, ClusterError, GateRow, GcRow, Snapshot, CHANNEL, DEAD_AFTER_SECS, LOCK_CLASS, LOCK_GC,
    POLL,
};

/// How long the GC lease of a closed gate must be free before a replica
/// other than the GC's own reopens it.
pub const GRACE: Duration = Duration::from_secs(10);

pub fn register(client: &mut Client, replica: &str) -> Result<(), postgres::Error> {
    client.execute(
        "INSERT INTO regate_cluster_replicas (replica) VALUES ($1)
         ON CONFLICT (replica) DO UPDATE SET heartbeat_at = now()",
        &[&replica],
    )?;
    Ok(())
}

/// Heartbeat and read, in one statement.
pub fn poll(client: &mut Client, replica: &str) -> Result<Snapshot, postgres::Error> {
    let sql = format!(
        "WITH hb AS (UPDATE regate_cluster_replicas SET heartbeat_at = now() WHERE replica = $1 RETURNING 1)
         SELECT g.generation, g.state, g.reason, g.holder_kind, g.holder_replica, g.run_id,
                (SELECT count(*) FROM hb) AS registered,
                c.replica AS gc_replica, c.run_id AS gc_run,
                EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = {LOCK_CLASS}
                        AND objid = {LOCK_GC} AND objsubid = 2 AND granted) AS lease_held,
                ARRAY(SELECT replica FROM regate_cluster_replicas
                      WHERE heartbeat_at > now() - interval '{DEAD_AFTER_SECS} seconds' ORDER BY replica) AS live
         FROM regate_cluster_gate g LEFT JOIN regate_cluster_gc c ON c.id = 1 WHERE g.id = 1"
    );
    let row = client.query_one(&sql, &[&replica])?;
    if row.get::<_, i64>("registered") == 0 {
        register(client, replica)?;
    }
    let gc_replica: Option<String> = row.get("gc_replica");
    let gc_run: Option<i64> = row.get("gc_run");
    Ok(Snapshot {
        gate: GateRow {
            generation: row.get("generation"),
            state: row.get("state"),
            reason: row.get("reason"),
            holder_kind: row.get("holder_kind"),
            holder_replica: row.get("holder_replica"),
            run_id: row.get("run_id"),
        },
        gc: gc_replica
            .zip(gc_run)
            .map(|(replica, run_id)| GcRow { replica, run_id }),
        gc_lease_held: row.get("lease_held"),
        live_replicas: row.get("live"),
        tag_locks: super::tag_locks::read(client, replica)?,
        read_at: Instant::now(),
    })
}

/// Starts the follower; it ends when the replica stops following (or is
/// dropped: it holds the cluster only for one step at a time).
pub fn spawn(cluster: Arc<Cluster>, connector: PgConnector, acks: Receiver<i64>) {
    let name = format!("regate-cluster-{}", cluster.replica);
    let weak = Arc::downgrade(&cluster);
    drop(cluster);
    let _ = std::thread::Builder::new()
        .name("regate-cluster".into())
        .spawn(move || follow(&weak, &connector, &acks))
        .map_err(|e| tracing::error!(target: "regate::cluster", thread = %name, error = %e, "cannot start the cluster follower"));
}

/// A gate closed by a GC whose lease was seen free, since when.
struct Orphan {
    generation: i64,
    since: Instant,
}

fn follow(weak: &Weak<Cluster>, connector: &PgConnector, acks: &Receiver<i64>) {
    let mut client: Option<Client> = None;
    let mut orphan: Option<Orphan> = None;
    let mut last_error_logged: Option<Instant> = None;
    let mut replica = String::new();
    loop {
        let Some(cluster) = weak.upgrade() else {
            break;
        };
        if cluster.stopping.load(Ordering::SeqCst) {
            break;
        }
        replica.clone_from(&cluster.replica);
        let c = match client.as_mut().filter(|c| !c.is_closed()) {
            Some(c) => c,
            None => match connector
                .connect("follower")
                .map_err(ClusterError::from)
                .and_then(|mut c| {
                    // This connection's writes need no wait for the WAL flush:
                    // after a PostgreSQL crash a lost heartbeat or registration
                    // is written again at the next poll, a lost drained ack was
                    // true when it was read, and a lost reopening leaves the
                    // gate closed (fail safe).
                    c.batch_execute(&format!("SET synchronous_commit = off; LISTEN {CHANNEL}"))?;
                    Ok(c)
                }) {
                Ok(c) => client.insert(c),
                Err(e) => {
                    client = None;
                    log_unreachable(&mut last_error_logged, &e);
                    std::thread::sleep(POLL);
                    continue;
                }
            },
        };
        let step = (|| -> Result<(), postgres::Error> {
            loop {
                match acks.try_recv() {
                    Ok(generation) => {
                        c.execute(
                            "UPDATE regate_cluster_replicas SET drained_generation = GREATEST(drained_generation, $2)
                             WHERE replica = $1",
                            &[&cluster.replica, &generation],
                        )?;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Ok(()),
                }
            }
            let snap = poll(c, &cluster.replica)?;
            reap(c, &cluster, &snap, &mut orphan)?;
            cluster.snapshot.send_replace(Some(snap));
            // Wait for a notification (a change), at most POLL.
            let mut n = c.notifications();
            if n.timeout_iter(POLL).next()?.is_some() {
                // Several changes at once: one read covers them all.
                while n.iter().next()?.is_some() {}
            }
            Ok(())
        })();
        if let Err(e) = step {
            log_unreachable(&mut last_error_logged, &super::ClusterError::Sql(e));
            if client.as_ref().is_some_and(Client::is_closed) {
                client = None;
            }
            std::thread::sleep(Duration::from_millis(100));
        } else if last_error_logged.take().is_some() {
            tracing::info!(target: "regate::cluster", "PostgreSQL (state.url) reached again");
        }
    }
    if let Some(c) = client.as_mut() {
        let _ = c.execute(
            "DELETE FROM regate_cluster_replicas WHERE replica = $1",
            &[&replica],
        );
    }
}

fn log_unreachable(last: &mut Option<Instant>, e: &super::ClusterError) {
    if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
        tracing::error!(target: "regate::cluster", error = %e, "cannot confirm the cluster's write gate: writes are held or refused until PostgreSQL (state.url) answers");
        *last = Some(Instant::now());
    }
}

/// Reopens a gate a GC closed if that GC's lease is free (see the module doc).
fn reap(
    c: &mut Client,
    cluster: &Cluster,
    snap: &Snapshot,
    orphan: &mut Option<Orphan>,
) -> Result<(), postgres::Error> {
    let g = &snap.gate;
    // The lease counts only while the GC that closed the gate holds it (the
    // lease row names its replica and run). Another GC that took the free
    // lease for a moment, and failed on the closed gate, is no sign of life
    // of that GC: every scheduled or asked attempt did that, and kept a gate
    // closed by a dead replica's GC closed as long as they came.
    let holder_holds_lease = snap.gc_lease_held
        && snap.gc.as_ref().is_some_and(|c| {
            g.holder_replica.as_deref() == Some(c.replica.as_str()) && g.run_id == Some(c.run_id)
        });
    if g.state != "closed" || g.holder_kind.as_deref() != Some("gc") || holder_holds_lease {
        *orphan = None;
        return Ok(());
    }
    let since = match orphan {
        Some(o) if o.generation == g.generation => o.since,
        _ => {
            *orphan = Some(Orphan {
                generation: g.generation,
                since: Instant::now(),
            });
            Instant::now()
        }
    };
    let mine = g.holder_replica.as_deref() == Some(cluster.replica.as_str());
    if !mine && since.elapsed() < GRACE {
        return Ok(());
    }
    if super::gate::open_where(c, g.generation, "gc")? {
        tracing::warn!(
            target: "regate::cluster",
            generation = g.generation,
            holder = g.holder_replica.as_deref().unwrap_or("-"),
            run_id = g.run_id.unwrap_or(0),
            "the GC that closed the gate holds no lease any more (its replica stopped or lost PostgreSQL); reopened the gate"
        );
    }
    Ok(())
}
