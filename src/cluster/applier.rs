//! Drives this replica's [`WriteGate`] from the cluster's gate as the
//! follower last read it: closed at generation N -> drain and close locally
//! (one drain at a time, in turn), then ack "drained at N"; open -> open; not confirmed within
//! [`CONFIRM_BOUND`] -> close at once (writes held or refused, reads served)
//! until PostgreSQL answers again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Cluster, Snapshot, CONFIRM_BOUND};
use crate::write_gate::GateState;

/// The reason the local gate shows while the cluster's cannot be confirmed.
pub const UNCONFIRMED: &str =
    "the cluster's write gate cannot be confirmed: PostgreSQL (state.url) unreachable";

/// Before the first request: a closed cluster gate closes the local one.
pub fn apply_at_start(cluster: &Cluster, snap: &Snapshot) {
    if snap.gate.state == "closed" {
        cluster
            .gate
            .close_now(snap.gate.reason.as_deref().unwrap_or("cluster maintenance"));
        cluster.ack_drained(snap.gate.generation);
    }
}

pub async fn run(cluster: &Arc<Cluster>, mut stop: watch::Receiver<bool>) {
    let mut rx = cluster.snapshot.subscribe();
    // The closed generation this replica drains or drained.
    let mut applied: Option<i64> = cluster
        .latest()
        .filter(|s| s.gate.state == "closed")
        .map(|s| s.gate.generation);
    let mut unconfirmed = false;
    // One drain at a time: a generation closed while the previous one still
    // drains waits for it, then drains (and acks) in turn. Run at once, the
    // later drain found the gate closed by the earlier one, counted itself
    // cancelled and never acked: the closer failed "did not confirm".
    let one_drain = Arc::new(tokio::sync::Mutex::new(()));
    loop {
        tokio::select! {
            _ = rx.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = crate::stop_signal::stopped(&mut stop) => return,
        }
        let Some(snap) = cluster.latest() else {
            continue;
        };
        if snap.read_at.elapsed() >= CONFIRM_BOUND {
            if !unconfirmed {
                unconfirmed = true;
                applied = None;
                cluster.gate.close_now(UNCONFIRMED);
            }
            continue;
        }
        unconfirmed = false;
        if snap.gate.state == "open" {
            applied = None;
            if cluster.gate.state() != GateState::Open {
                cluster.gate.open();
            }
            continue;
        }
        let generation = snap.gate.generation;
        if applied == Some(generation) && cluster.gate.state() != GateState::Open {
            continue;
        }
        applied = Some(generation);
        let reason = snap
            .gate
            .reason
            .clone()
            .unwrap_or_else(|| "cluster maintenance".into());
        let (c, one_drain) = (Arc::clone(cluster), Arc::clone(&one_drain));
        tokio::spawn(async move {
            let _one = one_drain.lock().await;
            // Still the cluster's gate after the wait? (Opened or closed
            // again meanwhile: the newer state is applied by its own turn.)
            let current = c
                .latest()
                .is_some_and(|s| s.gate.state == "closed" && s.gate.generation == generation);
            if !current {
                return;
            }
            let report = c.gate.drain_and_close(&reason, c.drain_timeout).await;
            if !report.cancelled {
                c.ack_drained(generation);
            }
        });
    }
}
