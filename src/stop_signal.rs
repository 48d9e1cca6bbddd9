//! The stop signal long-running tasks watch: a `watch` channel of `bool`
//! that turns true once, when regate shuts down.

use tokio::sync::watch;

/// Completes when the signal is true (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
