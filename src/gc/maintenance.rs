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
        let before = {
            let _switching = self.switching.lock().await;
            self.refuse_while_gc_holds_the_gate()?;
            let state = self.state.clone();
            let m = Maintenance {
                reason: reason.to_owned(),
                since_ms: now_ms(),
            };
            blocking(move || {
                let before = state.maintenance()?;
                state.set_maintenance(Some(&m))?;
                Ok(before)
            })
            .await?
        };
        if let Some(cluster) = self.cluster.get() {
            let closed = cluster
                .close_gate(Holder::Maintenance, &format!("maintenance: {reason}"))
                .await;
            return match closed {
                Ok((_, report)) => {
                    tracing::info!(target: "regate::gc", reason, "maintenance switched on");
                    Ok(report)
                }
                // Refused (a GC of another replica holds the gate, or the
                // drain failed and the gate was opened again): the record
                // goes back to what it was, or it would stop every GC and
                // close the gate at the next start for a maintenance the
                // caller was told did not happen.
                Err(e) => {
                    let state = self.state.clone();
                    if let Err(undo) =
                        blocking(move || state.set_maintenance(before.as_ref())).await
                    {
                        tracing::error!(target: "regate::gc", error = %undo, "maintenance was refused but stays recorded as on; switch it off (DELETE /admin/maintenance)");
                    }
                    Err(e.into())
                }
            };
        }
        tracing::info!(target: "regate::gc", reason, "maintenance switched on");
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
