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
//! A delete's wait is round trips on loaded machines, so each step is one
//! statement: the row and its `NOTIFY` in one; the others' followers read
//! it without waiting for a WAL flush of their heartbeat (their connection
//! runs with `synchronous_commit = off`); the deleting replica reads the
//! acks at growing intervals (1 ms up to 10 ms), not at a fixed 10 ms.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::Client;
use serde::Serialize;
use tokio::task::JoinHandle;

use super::{Cluster, ClusterError, CHANNEL, CONFIRM_BOUND, DEAD_AFTER_SECS};
use crate::tag_locks::{TagGuard, TagLocks};

/// How long a delete waits for the other replicas' acks.
pub const TAG_ACK_BOUND: Duration = Duration::from_secs(5);
/// The longest pause between two reads of the acks.
const ACK_POLL_MAX: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagLockRow {
    pub id: i64,
    pub repository: String,
    pub tag: String,
    pub replica: String,
}

/// The locks other live replicas announced.
pub fn read(client: &mut Client, replica: &str) -> Result<Vec<TagLockRow>, postgres::Error> {
    let sql = format!(
        "SELECT l.id, l.repository, l.tag, l.replica FROM regate_cluster_tag_locks l
         JOIN regate_cluster_replicas r ON r.replica = l.replica
         WHERE l.replica <> $1 AND r.heartbeat_at > now() - interval '{DEAD_AFTER_SECS} seconds'
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
        // If this fails, the row goes with this replica's heartbeat.
        tokio::task::spawn_blocking(move || {
            let _ = cluster.db.with(|c| release(c, id));
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
        let (me, r, t) = (Arc::clone(self), repo.to_owned(), tag.to_owned());
        let id = tokio::task::spawn_blocking(move || {
            // One statement, one round trip: the row and its notification
            // (sent at commit).
            me.db.with(|c| {
                Ok(c.query_one(
                    &format!(
                        "WITH l AS (INSERT INTO regate_cluster_tag_locks (repository, tag, replica)
                                    VALUES ($1, $2, $3) RETURNING id)
                         SELECT id, pg_notify('{CHANNEL}', '') FROM l"
                    ),
                    &[&r, &t, &me.replica],
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
        let mut pause = Duration::from_millis(1);
        loop {
            let me = Arc::clone(self);
            let missing: Vec<String> = tokio::task::spawn_blocking(move || {
                me.db.with(|c| {
                    let sql = format!(
                        "SELECT ARRAY(SELECT r.replica FROM regate_cluster_replicas r
                         WHERE r.replica <> $2 AND r.heartbeat_at > now() - interval '{DEAD_AFTER_SECS} seconds'
                           AND NOT EXISTS (SELECT 1 FROM regate_cluster_tag_acks a
                                           WHERE a.lock_id = $1 AND a.replica = r.replica)
                         ORDER BY r.replica)"
                    );
                    Ok(c.query_one(&sql, &[&id, &me.replica])?.get(0))
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

/// Takes and holds this replica's tag locks for the other replicas' deletes,
/// as the follower reads them; releases them when their rows go (or their
/// replica is dead). While PostgreSQL cannot be reached, holds what it holds.
pub async fn hold_for_others(cluster: &Arc<Cluster>) {
    let Some(locks) = cluster.local_tags.get().cloned() else {
        return std::future::pending().await;
    };
    let mut rx = cluster.snapshot.subscribe();
    let mut held: HashMap<i64, JoinHandle<TagGuard>> = HashMap::new();
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
        held.retain(|id, task| {
            let keep = snap.tag_locks.iter().any(|r| r.id == *id);
            if !keep {
                // Aborting drops the guard (or the wait for it).
                task.abort();
            }
            keep
        });
        for row in &snap.tag_locks {
            if held.contains_key(&row.id) {
                continue;
            }
            let (locks, c, row) = (Arc::clone(&locks), Arc::clone(cluster), row.clone());
            let id = row.id;
            held.insert(
                id,
                tokio::spawn(async move {
                    let guard = locks.write(&row.repository, &row.tag).await;
                    let me = Arc::clone(&c);
                    let _ = tokio::task::spawn_blocking(move || {
                        me.db.with(|db| {
                            db.execute(
                                "INSERT INTO regate_cluster_tag_acks (lock_id, replica) VALUES ($1, $2)
                                 ON CONFLICT DO NOTHING",
                                &[&row.id, &me.replica],
                            )
                        })
                    })
                    .await;
                    // Held until aborted (the row went).
                    std::future::pending::<()>().await;
                    guard
                }),
            );
        }
    }
}
