//! The gate closed by hand for other maintenance (backups, storage moves):
//! switched on (persisted first, then drained and closed) and off, never
//! while a GC run holds the gate. State writes run off the async threads.
//! In a cluster, the gate closed and opened is the cluster's (any replica
//! can switch maintenance off).

use super::{now_ms, Gc, GcError};
use crate::cluster::gate::Holder;
use crate::state::blocking;
use crate::state::gc_history::Maintenance;

impl Gc {
    /// Switches maintenance on: persists it, then drains and closes the gate.
    pub async fn maintenance_on(
        &self,
        reason: &str,
    ) -> Result<crate::write_gate::DrainReport, GcError> {
        {
            let _switching = self.switching.lock().await;
            self.refuse_while_gc_holds_the_gate()?;
            let state = self.state.clone();
            let m = Maintenance {
                reason: reason.to_owned(),
                since_ms: now_ms(),
            };
            blocking(move || state.set_maintenance(Some(&m))).await?;
        }
        tracing::info!(target: "regate::gc", reason, "maintenance switched on");
        if let Some(cluster) = self.cluster.get() {
            let reason = format!("maintenance: {reason}");
            let (_, report) = cluster.close_gate(Holder::Maintenance, &reason).await?;
            return Ok(report);
        }
        Ok(self
            .gate
            .drain_and_close(
                &format!("maintenance: {reason}"),
                self.settings.drain_timeout,
            )
            .await)
    }

    /// Switches maintenance off and opens the gate.
    pub async fn maintenance_off(&self) -> Result<(), GcError> {
        let _switching = self.switching.lock().await;
        self.refuse_while_gc_holds_the_gate()?;
        let state = self.state.clone();
        blocking(move || state.set_maintenance(None)).await?;
        match self.cluster.get() {
            Some(cluster) => {
                if let Some(g) = cluster.latest().map(|s| s.gate) {
                    if g.state == "closed" && g.holder_kind.as_deref() == Some("gc") {
                        return Err(crate::cluster::ClusterError::GcHoldsGate {
                            run_id: g.run_id.unwrap_or(0),
                            replica: g.holder_replica.unwrap_or_default(),
                        }
                        .into());
                    }
                }
                cluster.open_gate(None, Holder::Maintenance).await?;
            }
            None => self.gate.open(),
        }
        tracing::info!(target: "regate::gc", "maintenance switched off");
        Ok(())
    }
}

impl Gc {
    fn refuse_while_gc_holds_the_gate(&self) -> Result<(), GcError> {
        match self.running().as_ref().filter(|r| !r.dry_run) {
            Some(r) => Err(GcError::GcHoldsGate { id: r.id }),
            None => Ok(()),
        }
    }
}
