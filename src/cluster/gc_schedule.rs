//! Scheduled GC in a cluster: every replica's `[gc] schedule` fires at the
//! same times; the first replica to claim a time (a row per time) runs it,
//! the others skip it and say so. The GC lease still guards the run itself.

use std::sync::Arc;

use super::{Cluster, ClusterError};

impl Cluster {
    /// Claims the scheduled time `at_ms` (Unix ms) for this replica; false
    /// when another replica claimed it.
    pub async fn claim_scheduled_gc(self: &Arc<Self>, at_ms: i64) -> Result<bool, ClusterError> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            me.db.with(|c| {
                c.execute(
                    "DELETE FROM regate_cluster_gc_ticks WHERE claimed_at < now() - interval '7 days'",
                    &[],
                )?;
                let n = c.execute(
                    "INSERT INTO regate_cluster_gc_ticks (tick_ms, replica) VALUES ($1, $2)
                     ON CONFLICT (tick_ms) DO NOTHING",
                    &[&at_ms, &me.replica],
                )?;
                Ok(n == 1)
            })
        })
        .await
        .expect("gc schedule claim panicked")
    }
}
