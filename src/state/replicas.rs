//! Replica identity and the claim of what dead replicas left: each process
//! gets an id (host, pid, a random suffix); the journal entries and dummy
//! configs it writes carry it as `owner`. [`State::claim_orphans`] moves the
//! open entries and configs of dead owners to this replica, exactly once,
//! and returns them for the tag-delete recovery to finish or roll back.
//!
//! Dead: on SQLite (one instance, held by the instance lock of `state.dir`),
//! any other owner; on PostgreSQL, an owner whose liveness lock (see `pg`)
//! is free, tested with a transaction-level try-lock so two claimers take
//! turns, and the rows moved by `UPDATE ... WHERE owner = <dead>` so the
//! second finds none. Not within 30 s of a PostgreSQL restart, which frees
//! every lock: live replicas take theirs again first (they check every few
//! seconds).

use super::sql::{vals, Db, Value};
use super::tag_journal::{entry, ENTRY_COLUMNS};
use super::{Engine, JournalEntry, State, StateError};

/// The `owner` column of the tables whose rows a replica answers for.
pub(super) const OWNER_COLUMN: &[(&str, &str)] = &[("owner", "TEXT NOT NULL DEFAULT ''")];

/// A fresh replica id: `host-pid-random`.
pub(super) fn new_id() -> String {
    use rand::Rng;
    let host = super::hostname();
    let suffix: u32 = rand::thread_rng().gen();
    format!("{host}-{}-{suffix:08x}", std::process::id())
}

/// What dead replicas left, now this replica's to resolve.
#[derive(Debug, Default)]
pub struct Orphans {
    pub entries: Vec<JournalEntry>,
    /// `(repository, digest)`
    pub configs: Vec<(String, String)>,
    /// The dead replica each entry was claimed from, by entry id
    /// (PostgreSQL only).
    pub claimed_from: std::collections::HashMap<i64, String>,
}

/// Moves the rows of `dead` (all other owners when `None`) to `me`.
fn take(
    db: &mut dyn Db,
    me: &str,
    dead: Option<&str>,
    into: &mut Orphans,
) -> Result<(), StateError> {
    let (cond, params) = match dead {
        Some(d) => ("owner = ?2", vec![Value::from(me), Value::from(d)]),
        None => ("owner <> ?1", vec![Value::from(me)]),
    };
    for r in db.query(
        &format!("UPDATE tag_delete_journal SET owner = ?1 WHERE open = 1 AND {cond} RETURNING {ENTRY_COLUMNS}"),
        &params,
    )? {
        let e = entry(&r)?;
        if let Some(d) = dead {
            into.claimed_from.insert(e.id, d.to_owned());
        }
        into.entries.push(e);
    }
    for r in db.query(
        &format!("UPDATE dummy_configs SET owner = ?1 WHERE {cond} RETURNING repository, digest"),
        &params,
    )? {
        into.configs.push((r.get(0)?, r.get(1)?));
    }
    Ok(())
}

/// Whether replica `owner` is dead, on PostgreSQL, inside `db`'s
/// transaction (which then holds its lock, so a second claimer waits for
/// this one's commit). No row: an owner from before replicas were recorded,
/// or one already found dead: dead. A lock taken since PostgreSQL last
/// started and now free: dead. Locks older than that were all freed by the
/// restart: their owners get 30 s to take them again.
fn owner_is_dead(db: &mut dyn Db, owner: &str) -> Result<bool, StateError> {
    let dead: Option<bool> = db
        .query_opt(
            "SELECT pg_try_advisory_xact_lock(?1, CAST(lock_key AS INTEGER))
               AND (registered > pg_postmaster_start_time()
                    OR now() - pg_postmaster_start_time() > interval '30 seconds')
             FROM replicas WHERE id = ?2",
            vals![i64::from(super::pg::LOCK_CLASS), owner],
        )?
        .map(|r| r.get(0))
        .transpose()?;
    Ok(dead != Some(false))
}

impl State {
    /// Takes over the GC runs recorded as running by dead replicas (on
    /// SQLite: by earlier processes), once, for the start-up recovery of
    /// GC; runs of live replicas stay theirs.
    pub(super) fn claim_gc_runs(&self) -> Result<(), StateError> {
        let me = self.replica.to_string();
        match &*self.engine {
            Engine::Sqlite { .. } => self.tx(|db| {
                db.exec(
                    "UPDATE gc_runs SET replica = ?1 WHERE status = 'running'",
                    vals![&me],
                )
                .map(|_| ())
            }),
            Engine::Postgres(_) => {
                let owners: Vec<Option<String>> = self.tx(|db| {
                    db.query(
                        "SELECT DISTINCT replica FROM gc_runs WHERE status = 'running' AND (replica IS NULL OR replica <> ?1)",
                        vals![&me],
                    )?
                    .iter()
                    .map(|r| r.get(0))
                    .collect()
                })?;
                for owner in owners {
                    self.tx(|db| {
                        match &owner {
                            Some(o) if !owner_is_dead(db, o)? => Ok(()),
                            Some(o) => db
                                .exec(
                                    "UPDATE gc_runs SET replica = ?1 WHERE status = 'running' AND replica = ?2",
                                    vals![&me, o],
                                )
                                .map(|_| ()),
                            None => db
                                .exec(
                                    "UPDATE gc_runs SET replica = ?1 WHERE status = 'running' AND replica IS NULL",
                                    vals![&me],
                                )
                                .map(|_| ()),
                        }
                    })?;
                }
                Ok(())
            }
        }
    }

    /// Claims the open journal entries and the dummy configs of dead
    /// replicas (see the module doc); each is returned to one caller only.
    pub fn claim_orphans(&self) -> Result<Orphans, StateError> {
        let me = self.replica.to_string();
        let mut got = Orphans::default();
        match &*self.engine {
            Engine::Sqlite { .. } => self.tx(|db| take(db, &me, None, &mut got))?,
            Engine::Postgres(_) => {
                let owners: Vec<String> = self.tx(|db| {
                    db.query(
                        "SELECT owner FROM tag_delete_journal WHERE open = 1 AND owner <> ?1
                         UNION SELECT owner FROM dummy_configs WHERE owner <> ?1",
                        vals![&me],
                    )?
                    .iter()
                    .map(|r| r.get(0))
                    .collect()
                })?;
                for owner in owners {
                    self.tx(|db| {
                        if !owner_is_dead(db, &owner)? {
                            return Ok(());
                        }
                        take(db, &me, Some(&owner), &mut got)?;
                        db.exec("DELETE FROM replicas WHERE id = ?1", vals![&owner])?;
                        Ok(())
                    })?;
                }
                // The rows of dead replicas that left nothing (every start
                // of every replica, and `regate reindex`, adds one).
                self.tx(|db| {
                    db.exec(
                        "DELETE FROM replicas r WHERE id <> ?2
                           AND registered > pg_postmaster_start_time()
                           AND NOT EXISTS (SELECT 1 FROM tag_delete_journal j WHERE j.open = 1 AND j.owner = r.id)
                           AND NOT EXISTS (SELECT 1 FROM dummy_configs d WHERE d.owner = r.id)
                           AND NOT EXISTS (SELECT 1 FROM gc_runs g WHERE g.status = 'running' AND g.replica = r.id)
                           AND pg_try_advisory_xact_lock(?1, CAST(lock_key AS INTEGER))",
                        vals![i64::from(super::pg::LOCK_CLASS), &me],
                    )
                    .map(|_| ())
                })?;
            }
        }
        got.entries.sort_by_key(|e| e.id);
        Ok(got)
    }

    /// On PostgreSQL: checks this replica's liveness lease and takes it again
    /// if it was lost; whether it is held. Always true on SQLite.
    pub fn keep_lease(&self) -> Result<bool, StateError> {
        match &*self.engine {
            Engine::Sqlite { .. } => Ok(true),
            Engine::Postgres(pg) => pg.keep_lease(&self.replica),
        }
    }

    /// Replicas registered in the shared state (PostgreSQL), with whether
    /// each holds its liveness lock: `(id, alive)`. Empty on SQLite.
    pub fn replicas(&self) -> Result<Vec<(String, bool)>, StateError> {
        let Engine::Postgres(pg) = &*self.engine else {
            return Ok(Vec::new());
        };
        let mine = pg.lease_key();
        self.tx(|db| {
            db.query(
                "SELECT id, lock_key = ?2 OR EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND CAST(l.classid AS BIGINT) = ?1 AND CAST(l.objid AS BIGINT) = r.lock_key AND l.objsubid = 2 AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())) FROM replicas r ORDER BY lock_key",
                vals![i64::from(super::pg::LOCK_CLASS), mine],
            )?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .collect()
        })
    }
}
