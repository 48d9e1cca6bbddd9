//! The requests in progress on one connection, so the connection can be
//! closed once it has had none for a while: a request counts from the
//! moment it reaches the service until its response body is done (sent,
//! refused or dropped with a reset stream), however long it waits for a
//! tag lock or the write gate meanwhile.
//!
//! hyper closes an HTTP/1.1 connection that sends no next request within
//! its header read timeout, but has no such bound for HTTP/2: a client
//! could hold connections (and `server.max_connections`' permits) open for
//! good by sending nothing, while pings keep them alive. The listener uses
//! [`Activity::idle_for`] to close those with GOAWAY.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// The requests in progress on one connection.
#[derive(Debug, Default)]
pub struct Activity {
    in_progress: AtomicUsize,
    changed: Notify,
}

impl Activity {
    /// A request has started; it is in progress until the returned value
    /// is dropped.
    pub fn start(self: &Arc<Self>) -> InProgress {
        self.in_progress.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        InProgress(Arc::clone(self))
    }

    /// Resolves once no request has been in progress for `limit`.
    pub async fn idle_for(&self, limit: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the count is read: no change is missed.
            changed.as_mut().enable();
            if self.in_progress.load(Ordering::SeqCst) == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(limit) => return,
                    _ = changed => {}
                }
            } else {
                changed.await;
            }
        }
    }
}

/// One request in progress (see [`Activity::start`]); the listener keeps
/// it in the response body ([`crate::guarded_body::GuardedBody`]).
#[derive(Debug)]
pub struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_end_of_the_last_request() {
        let activity = Arc::new(Activity::default());
        let limit = Duration::from_secs(30);
        let started = tokio::time::Instant::now();
        let request = activity.start();
        let watch = {
            let activity = Arc::clone(&activity);
            tokio::spawn(async move { activity.idle_for(limit).await })
        };
        // A request in progress for longer than the limit: not idle.
        tokio::time::sleep(Duration::from_secs(45)).await;
        assert!(!watch.is_finished(), "idle while a request was in progress");
        drop(request);
        watch.await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(75));

        // A request that starts within the limit restarts the count.
        let started = tokio::time::Instant::now();
        let watch = {
            let activity = Arc::clone(&activity);
            tokio::spawn(async move { activity.idle_for(limit).await })
        };
        tokio::time::sleep(Duration::from_secs(20)).await;
        drop(activity.start());
        watch.await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(50));
    }
}
