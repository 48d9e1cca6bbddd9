//! The gate closed by hand for other maintenance (backups, storage moves):
//! switched on (persisted first, then drained and closed) and off, never
//! while a GC run holds the gate.

use super::{now_ms, Gc, GcError};
use crate::state::gc_history::Maintenance;

impl Gc {
    /// Switches maintenance on: persists it, then drains and closes the gate.
    pub async fn maintenance_on(
        &self,
        reason: &str,
    ) -> Result<crate::write_gate::DrainReport, GcError> {
        {
            let running = self.running();
            if let Some(r) = running.as_ref().filter(|r| !r.dry_run) {
                return Err(GcError::GcHoldsGate { id: r.id });
            }
            self.state.set_maintenance(Some(&Maintenance {
                reason: reason.to_owned(),
                since_ms: now_ms(),
            }))?;
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
    pub fn maintenance_off(&self) -> Result<(), GcError> {
        let running = self.running();
        if let Some(r) = running.as_ref().filter(|r| !r.dry_run) {
            return Err(GcError::GcHoldsGate { id: r.id });
        }
        self.state.set_maintenance(None)?;
        self.gate.open();
        tracing::info!(target: "regate::gc", "maintenance switched off");
        Ok(())
    }
}
