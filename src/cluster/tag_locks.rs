//! Tag locks across replicas, for tag deletes. The deleting replica holds its
//! own [`TagLocks`] write lock, then announces the lock (a row and a
//! `NOTIFY`); every live replica takes its own write lock on that tag (waiting
//! for its reads and pushes of the tag in flight), acks, and holds it until
//! the row goes. The delete goes on only once every live replica acked
//! ([`TAG_ACK_BOUND`]; a live replica that stays silent fails the delete with
//! 503, nothing changed; a dead one, heartbeat older than `DEAD_AFTER`, is
//! not waited for). Reads and pushes take only the local locks: a read of a
//! tag no delete touches makes no round trip to PostgreSQL.
//!
//! A replica that dies mid-delete leaves its row: the others keep holding
//! the tag (for [`HOLD_FOR_DEAD_SECS`] of silence at most), so their reads
//! wait rather than meet the dummy. The replica that recovers the delete
//! takes its own such lock over ([`Cluster::take_held`]) and swaps the dead
//! replica's row for its own in one transaction
//! ([`Cluster::lock_tag_replacing`]); each other replica hands its lock from
//! the old row to the new one without letting go, so no read slips in
//! between.
//!
//! A delete's wait is round trips on loaded machines, so each step is one
//! statement: the row and its `NOTIFY` in one; the others' followers read
//! it without waiting for a WAL flush of their heartbeat (their connection
//! runs with `synchronous_commit = off`); the deleting replica reads the
//! acks at growing intervals (1 ms up to 10 ms), not at a fixed 10 ms.

use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::Client;
use serde::Serialize;
use tokio::task::JoinHandle;

use super::{Cluster, ClusterError, CHANNEL, CONFIRM_BOUND, DEAD_AFTER_SECS};
use crate::tag_locks::{TagGuard, TagLocks};

/// How long a delete waits for the other replicas' acks.
pub const TAG_ACK_BOUND: Duration = Duration::from_secs(5);
/// How long the rows of a replica gone silent are still held: room for a
/// live replica to claim its journal entries (a check every 5 s, a settle
/// time of 2 s) and take the tags over.
pub const HOLD_FOR_DEAD_SECS: i64 = 20;
/// The longest pause between two reads of the acks.
const ACK_POLL_MAX: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagLockRow {
    pub id: i64,
    pub repository: String,
    pub tag: String,
    pub replica: String,
}

/// The locks other replicas announced (those of a replica silent for
/// [`HOLD_FOR_DEAD_SECS`] left out).
pub fn read(client: &mut Client, replica: &str) -> Result<Vec<TagLockRow>, postgres::Error> {
    let sql = format!(
        "SELECT l.id, l.repository, l.tag, l.replica FROM regate_cluster_tag_locks l
         JOIN regate_cluster_replicas r ON r.replica = l.replica
         WHERE l.replica <> $1 AND r.heartbeat_at > now() - interval '{HOLD_FOR_DEAD_SECS} seconds'
         ORDER BY l.id"
    );
    Ok(client
        .query(&sql, &[&replica])?
        .into_iter()
        .map(|r| TagLockRow {
            id: r.get(0),
            repository: r.get(1),
            tag: r.get(2),
            replica: r.get(3),
        })
        .collect())
}

/// A tag locked on every live replica; dropping it releases them.
pub struct ClusterTagLock {
    cluster: Arc<Cluster>,
    id: i64,
}

impl Drop for ClusterTagLock {
    fn drop(&mut self) {
        let (cluster, id) = (Arc::clone(&self.cluster), self.id);
        // Retried until PostgreSQL answers: the other replicas hold the tag's
        // lock (its reads and pushes wait) until the row goes, or until this
        // replica's heartbeat is old. A release lost to a PostgreSQL restart
        // left the tag unreadable through them for as long as this replica
        // lived (found by the cluster soak). Given up when this replica
        // stops: its heartbeat ends then.
        tokio::task::spawn_blocking(move || {
            let mut wait = Duration::from_millis(100);
            while cluster.db.with(|c| release(c, id)).is_err() {
                if cluster.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        });
    }
}

fn release(c: &mut Client, id: i64) -> Result<(), postgres::Error> {
    c.execute("DELETE FROM regate_cluster_tag_locks WHERE id = $1", &[&id])?;
    c.batch_execute(&format!("NOTIFY {CHANNEL}"))
}

impl Cluster {
    /// This replica's tag locks, for the deletes of the others.
    pub fn share_tag_locks(&self, locks: Arc<TagLocks>) {
        let _ = self.local_tags.set(locks);
    }

    /// Locks `repo:tag` on every other live replica (the caller holds the
    /// local lock already).
    pub async fn lock_tag_everywhere(
        self: &Arc<Self>,
        repo: &str,
        tag: &str,
    ) -> Result<ClusterTagLock, ClusterError> {
        self.lock_tag_replacing(repo, tag, None).await
    }

    /// Like [`Cluster::lock_tag_everywhere`], and the lock rows of the dead
    /// replica `dead` on this tag go in the same transaction: the other
    /// replicas hand their lock on from those rows to this one.
    pub async fn lock_tag_replacing(
        self: &Arc<Self>,
        repo: &str,
        tag: &str,
        dead: Option<&str>,
    ) -> Result<ClusterTagLock, ClusterError> {
        let (me, r, t) = (Arc::clone(self), repo.to_owned(), tag.to_owned());
        let dead = dead.map(str::to_owned);
        let dead_id = dead.clone();
        let id = tokio::task::spawn_blocking(move || {
            // One statement, one round trip: the row and its notification
            // (sent at commit).
            me.db.with(|c| {
                // The dead replica's rows on this tag (if any) go in the
                // same statement, so the others hand their lock on.
                Ok(c.query_one(
                    &format!(
                        "WITH d AS (DELETE FROM regate_cluster_tag_locks
                                    WHERE repository = $1 AND tag = $2 AND replica = $4),
                              l AS (INSERT INTO regate_cluster_tag_locks (repository, tag, replica)
                                    VALUES ($1, $2, $3) RETURNING id)
                         SELECT id, pg_notify('{CHANNEL}', '') FROM l"
                    ),
                    &[&r, &t, &me.replica, &dead],
                )?
                .get(0))
            })
        })
        .await
        .expect("tag lock panicked")?;
        let lock = ClusterTagLock {
            cluster: Arc::clone(self),
            id,
        };
        let started = Instant::now();
        // The dead replica (known dead by its state lease) is not waited
        // for, even while its heartbeat is fresh.
        let dead = dead_id.unwrap_or_default();
        let mut pause = Duration::from_millis(1);
        loop {
            let (me, dead) = (Arc::clone(self), dead.clone());
            let missing: Vec<String> = tokio::task::spawn_blocking(move || {
                me.db.with(|c| {
                    let sql = format!(
                        "SELECT ARRAY(SELECT r.replica FROM regate_cluster_replicas r
                         WHERE r.replica <> $2 AND r.replica <> $3
                           AND r.heartbeat_at > now() - interval '{DEAD_AFTER_SECS} seconds'
                           AND NOT EXISTS (SELECT 1 FROM regate_cluster_tag_acks a
                                           WHERE a.lock_id = $1 AND a.replica = r.replica)
                         ORDER BY r.replica)"
                    );
                    Ok(c.query_one(&sql, &[&id, &me.replica, &dead])?.get(0))
                })
            })
            .await
            .expect("tag lock panicked")?;
            if missing.is_empty() {
                return Ok(lock);
            }
            if started.elapsed() >= TAG_ACK_BOUND {
                return Err(ClusterError::TagLockNotAcked(missing.join(", ")));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(ACK_POLL_MAX);
        }
    }
}

/// A tag lock of this replica held for another replica's lock row.
pub(super) struct Held {
    repository: String,
    tag: String,
    replica: String,
    /// The guard, once the lock is taken.
    slot: Arc<std::sync::Mutex<Option<TagGuard>>>,
    task: JoinHandle<()>,
}

impl Drop for Held {
    /// The guard goes with the last holder of the slot (this, or the task).
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn slot_guard(slot: &std::sync::Mutex<Option<TagGuard>>) -> Option<TagGuard> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).take()
}

fn has_guard(slot: &std::sync::Mutex<Option<TagGuard>>) -> bool {
    slot.lock().unwrap_or_else(|e| e.into_inner()).is_some()
}

/// Records this replica's ack of lock row `id`.
async fn ack(cluster: &Arc<Cluster>, id: i64) {
    let me = Arc::clone(cluster);
    let _ = tokio::task::spawn_blocking(move || {
        me.db.with(|db| {
            db.execute(
                "INSERT INTO regate_cluster_tag_acks (lock_id, replica) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING",
                &[&id, &me.replica],
            )
        })
    })
    .await;
}

impl Cluster {
    /// Takes over the lock this replica holds on `repo:tag` for the dead
    /// replica `owner` (whose delete the caller recovers), if it holds it;
    /// otherwise stops waiting for it, so the caller can take the lock.
    pub fn take_held(&self, repo: &str, tag: &str, owner: &str) -> Option<TagGuard> {
        let mut held = self
            .held_for_others
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let ids: Vec<i64> = held
            .iter()
            .filter(|(_, h)| h.repository == repo && h.tag == tag && h.replica == owner)
            .map(|(id, _)| *id)
            .collect();
        let mut guard = None;
        for id in ids {
            if let Some(h) = held.remove(&id) {
                guard = guard.or_else(|| slot_guard(&h.slot));
            }
        }
        guard
    }
}

/// Takes and holds this replica's tag locks for the other replicas' deletes,
/// as the follower reads them; releases them when their rows go (or their
/// replica is silent too long), or hands one on to a row that replaces its
/// row on the same tag. While PostgreSQL cannot be reached, holds what it
/// holds.
pub async fn hold_for_others(cluster: &Arc<Cluster>) {
    let Some(locks) = cluster.local_tags.get().cloned() else {
        return std::future::pending().await;
    };
    let mut rx = cluster.snapshot.subscribe();
    loop {
        if rx.changed().await.is_err() {
            return;
        }
        let Some(snap) = cluster.latest() else {
            continue;
        };
        if snap.read_at.elapsed() >= CONFIRM_BOUND {
            continue;
        }
        let handed = hold_rows(cluster, &locks, &snap.tag_locks);
        for id in handed {
            ack(cluster, id).await;
        }
    }
}

/// Brings the locks held for others in line with `rows`; the rows whose
/// lock was handed on from a replaced row (to ack).
fn hold_rows(cluster: &Arc<Cluster>, locks: &Arc<TagLocks>, rows: &[TagLockRow]) -> Vec<i64> {
    let mut handed = Vec::new();
    let mut held = cluster
        .held_for_others
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let gone: Vec<i64> = held
        .keys()
        .filter(|id| !rows.iter().any(|r| r.id == **id))
        .copied()
        .collect();
    let mut gone: Vec<Held> = gone.into_iter().filter_map(|id| held.remove(&id)).collect();
    for row in rows {
        if held.contains_key(&row.id) {
            continue;
        }
        // A row replacing a gone one on the same tag: keep the lock.
        let replaced = gone
            .iter()
            .position(|h| h.repository == row.repository && h.tag == row.tag && has_guard(&h.slot));
        if let Some(i) = replaced {
            let mut h = gone.swap_remove(i);
            h.replica = row.replica.clone();
            held.insert(row.id, h);
            handed.push(row.id);
            continue;
        }
        let slot = Arc::new(std::sync::Mutex::new(None));
        let (locks, c, r, s) = (
            Arc::clone(locks),
            Arc::clone(cluster),
            row.clone(),
            Arc::clone(&slot),
        );
        let task = tokio::spawn(async move {
            let guard = locks.write(&r.repository, &r.tag).await;
            *s.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
            ack(&c, r.id).await;
            // Held until aborted (the row went).
            std::future::pending::<()>().await;
        });
        held.insert(
            row.id,
            Held {
                repository: row.repository.clone(),
                tag: row.tag.clone(),
                replica: row.replica.clone(),
                slot,
                task,
            },
        );
    }
    drop(held);
    // Dropping releases the locks of the rows that went.
    drop(gone);
    handed
}
