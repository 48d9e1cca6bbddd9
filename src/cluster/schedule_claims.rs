//! Scheduled work in a cluster: every replica's `[gc] schedule` (and
//! `[retention_schedule] schedule`) fires at the same times; the first
//! replica to claim a time for a kind of work (a row per kind and time)
//! runs it, the others skip it and say so. The leases still guard the runs
//! themselves.

use std::sync::Arc;

use super::{Cluster, ClusterError};

/// The kinds of scheduled work, each claiming its own times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduled {
    Gc,
    Retention,
}

impl Scheduled {
    /// The `kind` column of `regate_cluster_ticks`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheduled::Gc => "gc",
            Scheduled::Retention => "retention",
        }
    }
}

impl Cluster {
    /// Claims the scheduled time `at_ms` (Unix ms) of `kind` for this
    /// replica; false when another replica claimed it.
    pub async fn claim_scheduled(
        self: &Arc<Self>,
        kind: Scheduled,
        at_ms: i64,
    ) -> Result<bool, ClusterError> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            me.db.with(|c| {
                c.execute(
                    "DELETE FROM regate_cluster_ticks WHERE claimed_at < now() - interval '7 days'",
                    &[],
                )?;
                let n = c.execute(
                    "INSERT INTO regate_cluster_ticks (kind, tick_ms, replica) VALUES ($1, $2, $3)
                     ON CONFLICT (kind, tick_ms) DO NOTHING",
                    &[&kind.as_str(), &at_ms, &me.replica],
                )?;
                Ok(n == 1)
            })
        })
        .await
        .expect("schedule claim panicked")
    }
}
