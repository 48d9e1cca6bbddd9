//! The cluster's write gate, seen from the replica that closes or opens it:
//! one row (`regate_cluster_gate`) with a generation that every change bumps,
//! and a `NOTIFY` so the other replicas see the change at once (their
//! followers also poll). Closing waits until every live replica has acked
//! "drained at generation N" ([`super::applier`] drains the local gate).

use std::time::{Duration, Instant};

use postgres::Client;

use super::{Cluster, ClusterError, CHANNEL};
use crate::write_gate::DrainReport;

/// Time a live replica has, past `drain_timeout`, to ack its drain.
const ACK_SLACK: Duration = Duration::from_secs(5);

/// Who closes the gate.
#[derive(Debug, Clone)]
pub enum Holder {
    Gc { run_id: i64 },
    Maintenance,
}

impl Holder {
    fn kind(&self) -> &'static str {
        match self {
            Holder::Gc { .. } => "gc",
            Holder::Maintenance => "maintenance",
        }
    }
}

/// Opens the gate if it is still closed at `generation` by a holder of
/// `kind`; true when it did.
pub fn open_where(c: &mut Client, generation: i64, kind: &str) -> Result<bool, postgres::Error> {
    let mut tx = c.transaction()?;
    let n = tx.execute(
        "UPDATE regate_cluster_gate SET generation = generation + 1, state = 'open', reason = NULL,
             holder_kind = NULL, holder_replica = NULL, run_id = NULL, changed_at = now()
         WHERE id = 1 AND state = 'closed' AND generation = $1 AND holder_kind = $2",
        &[&generation, &kind],
    )?;
    if n > 0 {
        tx.batch_execute(&format!("NOTIFY {CHANNEL}"))?;
    }
    tx.commit()?;
    Ok(n > 0)
}

impl Cluster {
    async fn blocking<T: Send + 'static>(
        self: &std::sync::Arc<Self>,
        f: impl FnOnce(&mut Client, &str) -> Result<T, ClusterError> + Send + 'static,
    ) -> Result<T, ClusterError> {
        let me = std::sync::Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let replica = me.replica.clone();
            let mut out = None;
            me.db.with(|c| {
                out = Some(f(c, &replica));
                Ok(())
            })?;
            out.expect("set above")
        })
        .await
        .expect("cluster call panicked")
    }

    /// Closes the gate on every replica and waits until every live one has
    /// drained (at most `drain_timeout` + [`ACK_SLACK`]). Returns the
    /// generation it closed and how the drain ended; on a replica that did
    /// not ack, reopens and fails.
    pub async fn close_gate(
        self: &std::sync::Arc<Self>,
        holder: Holder,
        reason: &str,
    ) -> Result<(i64, DrainReport), ClusterError> {
        let started = Instant::now();
        let reason = reason.to_owned();
        let h = holder.clone();
        let generation = self
            .blocking(move |c, replica| {
                let mut tx = c.transaction()?;
                let row = tx.query_one(
                    "SELECT generation, state, holder_kind, holder_replica, reason, run_id
                     FROM regate_cluster_gate WHERE id = 1 FOR UPDATE",
                    &[],
                )?;
                let (state, kind): (String, Option<String>) = (row.get(1), row.get(2));
                let other = row.get::<_, Option<String>>(3).unwrap_or_default();
                let closed_by_run = row.get::<_, Option<i64>>(5);
                if state == "closed" {
                    match (kind.as_deref(), &h) {
                        // Closed by an earlier attempt of this same run,
                        // whose replica died: the run was taken over and
                        // resumed here, under the GC lease (so that attempt's
                        // command is gone), and closes the gate again.
                        (Some("gc"), Holder::Gc { run_id }) if closed_by_run == Some(*run_id) => {}
                        (Some("maintenance"), Holder::Gc { .. }) => {
                            return Err(ClusterError::InMaintenance {
                                reason: row.get::<_, Option<String>>(4).unwrap_or_default(),
                                replica: other,
                            })
                        }
                        (Some("gc"), _) => {
                            return Err(ClusterError::GcHoldsGate {
                                run_id: row.get::<_, Option<i64>>(5).unwrap_or(0),
                                replica: other,
                            })
                        }
                        _ => {}
                    }
                }
                let run_id = match h {
                    Holder::Gc { run_id } => Some(run_id),
                    Holder::Maintenance => None,
                };
                let g: i64 = tx
                    .query_one(
                        "UPDATE regate_cluster_gate SET generation = generation + 1, state = 'closed',
                             reason = $1, holder_kind = $2, holder_replica = $3, run_id = $4, changed_at = now()
                         WHERE id = 1 RETURNING generation",
                        &[&reason, &h.kind(), &replica, &run_id],
                    )?
                    .get(0);
                tx.batch_execute(&format!("NOTIFY {CHANNEL}"))?;
                tx.commit()?;
                Ok(g)
            })
            .await?;
        let deadline = started + self.drain_timeout + ACK_SLACK;
        loop {
            let (current, pending) = self
                .blocking(move |c, _| {
                    let row = c.query_one(
                        &format!(
                            "SELECT (SELECT generation FROM regate_cluster_gate WHERE id = 1),
                                    ARRAY(SELECT replica FROM regate_cluster_replicas
                                          WHERE heartbeat_at > now() - interval '{} seconds'
                                            AND drained_generation < $1 ORDER BY replica)",
                            super::DEAD_AFTER_SECS
                        ),
                        &[&generation],
                    )?;
                    Ok((row.get::<_, i64>(0), row.get::<_, Vec<String>>(1)))
                })
                .await?;
            let report = |cancelled| DrainReport {
                waited_ms: started.elapsed().as_millis() as u64,
                timed_out: false,
                cancelled,
                writes_left: 0,
                pushes_left: Vec::new(),
            };
            if current != generation {
                return Ok((generation, report(true)));
            }
            if pending.is_empty() {
                return Ok((generation, report(false)));
            }
            if Instant::now() >= deadline {
                let kind = holder.kind();
                let _ = self
                    .blocking(move |c, _| Ok(open_where(c, generation, kind)?))
                    .await;
                return Err(ClusterError::NotDrained(pending.join(", ")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Opens the gate if `generation` (when given) is still the one closed by
    /// a holder of `holder`'s kind; true when it did.
    pub async fn open_gate(
        self: &std::sync::Arc<Self>,
        generation: Option<i64>,
        holder: Holder,
    ) -> Result<bool, ClusterError> {
        let kind = holder.kind();
        self.blocking(move |c, _| {
            let g = match generation {
                Some(g) => g,
                None => c
                    .query_one(
                        "SELECT generation FROM regate_cluster_gate WHERE id = 1",
                        &[],
                    )?
                    .get(0),
            };
            Ok(open_where(c, g, kind)?)
        })
        .await
    }
}
