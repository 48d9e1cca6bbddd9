//! The write gate (stage 2 of the pipeline): lets garbage collection and other
//! maintenance run with reads never interrupted and no push corrupted.
//!
//! States: `open` -> `draining` -> `closed` -> `open`. Writes are POST, PUT,
//! PATCH and DELETE under `/v2/`; reads always pass. Every admitted write holds
//! a [`WriteGuard`] until its response is complete, so [`WriteGate::drain_and_close`]
//! can wait for the writes in flight. While draining, new pushes are stopped at
//! their first request (a new upload session in a repository with no push
//! under way), while pushes already under way ([`push_tracker`]) may finish.
//! Closed (or stopped) writes are held until the gate opens (503 after
//! `hold_timeout`) or refused at once with 503 and `Retry-After`, per
//! `[gc] closed_writes`.
//!
//! Owns the gate state in memory; persisting it across restarts is the job
//! of `gc` (which decides when to close and open). Calls nothing but
//! `metrics`.

mod pass;
pub mod push_tracker;
mod refusal;
mod write_kind;

use pass::HeldWait;
pub use pass::{WriteGuard, WritePass};
pub use refusal::GateError;
use write_kind::WriteKind;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use http::Method;
use serde::Serialize;
use tokio::sync::{watch, Notify};

use crate::config::gc::{ClosedWrites, GcSettings};
use crate::metrics::Metrics;
use crate::route::Route;
use push_tracker::PushTracker;

/// The state of the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GateState {
    Open,
    Draining,
    Closed,
}

impl GateState {
    pub fn as_str(self) -> &'static str {
        match self {
            GateState::Open => "open",
            GateState::Draining => "draining",
            GateState::Closed => "closed",
        }
    }
}

/// How the gate treats writes while it is not open.
#[derive(Debug, Clone)]
pub struct GatePolicy {
    pub closed_writes: ClosedWrites,
    pub hold_timeout: Duration,
    pub retry_after: Duration,
    pub push_window: Duration,
}

impl GatePolicy {
    pub fn from_settings(gc: &GcSettings) -> Self {
        GatePolicy {
            closed_writes: gc.closed_writes,
            hold_timeout: gc.hold_timeout,
            retry_after: gc.retry_after,
            push_window: gc.push_window,
        }
    }
}

struct Inner {
    state: GateState,
    reason: Option<String>,
    since: SystemTime,
    in_flight: usize,
    /// Writes waiting at the gate.
    held: usize,
    /// Held writes the last opening released that have not run yet; a drain
    /// waits for them, so back-to-back GC runs cannot starve them.
    released: usize,
    pushes: PushTracker,
}

/// A point-in-time view of the gate, for the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct GateStatus {
    pub state: GateState,
    pub reason: Option<String>,
    /// Unix seconds of the last state change.
    pub since: u64,
    pub writes_in_flight: usize,
    pub writes_held: usize,
    pub pushes_under_way: Vec<String>,
    pub closed_writes: &'static str,
}

/// How a drain ended.
#[derive(Debug, Clone, Serialize)]
pub struct DrainReport {
    pub waited_ms: u64,
    /// True when `drain_timeout` ended it with writes or pushes left.
    pub timed_out: bool,
    /// True when the gate was opened during the drain: it is not closed.
    pub cancelled: bool,
    pub writes_left: usize,
    pub pushes_left: Vec<String>,
}

pub struct WriteGate {
    inner: Mutex<Inner>,
    state_tx: watch::Sender<GateState>,
    activity: Notify,
    /// How many times the gate has opened (held writes wait for a change).
    opens: AtomicU64,
    policy: GatePolicy,
    metrics: Arc<Metrics>,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl WriteGate {
    pub fn new(policy: GatePolicy, metrics: Arc<Metrics>) -> Arc<Self> {
        let (state_tx, _) = watch::channel(GateState::Open);
        metrics.gate_state(GateState::Open.as_str());
        Arc::new(WriteGate {
            inner: Mutex::new(Inner {
                state: GateState::Open,
                reason: None,
                since: SystemTime::now(),
                in_flight: 0,
                held: 0,
                released: 0,
                pushes: PushTracker::new(policy.push_window),
            }),
            state_tx,
            activity: Notify::new(),
            opens: AtomicU64::new(0),
            policy,
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn policy(&self) -> &GatePolicy {
        &self.policy
    }

    pub fn state(&self) -> GateState {
        self.lock().state
    }

    /// A write regate makes on its own, in the background: a guard while the
    /// gate is open (a drain waits for it), `None` otherwise (the caller
    /// skips the work rather than wait).
    pub fn enter_if_open(self: &Arc<Self>) -> Option<WriteGuard> {
        let mut inner = self.lock();
        if inner.state != GateState::Open {
            return None;
        }
        inner.in_flight += 1;
        Some(WriteGuard {
            gate: Arc::clone(self),
        })
    }

    /// Admits a request: reads at once (`None`), writes with a pass, or an
    /// error when the gate refuses the write.
    pub async fn admit(
        self: &Arc<Self>,
        method: &Method,
        route: &Route,
    ) -> Result<Option<WritePass>, GateError> {
        let Some(kind) = WriteKind::of(method, route) else {
            return Ok(None);
        };
        let mut hold_started: Option<Instant> = None;
        // Set once a held write has seen the gate open: from then on it also
        // passes a draining gate (the drain waits for it).
        let mut released = false;
        loop {
            let (reason, opens_seen) = {
                let mut inner = self.lock();
                let now = Instant::now();
                let pass = match inner.state {
                    GateState::Open => true,
                    GateState::Draining if released => true,
                    GateState::Draining => match &kind {
                        WriteKind::UploadSession { repo, session } => {
                            inner.pushes.knows_session(repo, session)
                        }
                        WriteKind::UploadStart { repo } | WriteKind::ManifestPut { repo, .. } => {
                            inner.pushes.under_way(repo, now)
                        }
                        WriteKind::Other => false,
                    },
                    GateState::Closed => false,
                };
                if pass {
                    inner.in_flight += 1;
                    if let Some(repo) = kind.repo() {
                        inner.pushes.touch(repo, now);
                    }
                    drop(inner);
                    return Ok(Some(WritePass {
                        guard: WriteGuard {
                            gate: Arc::clone(self),
                        },
                        kind,
                    }));
                }
                if self.policy.closed_writes == ClosedWrites::Hold {
                    inner.held += 1;
                }
                (
                    inner.reason.clone().unwrap_or_else(|| "maintenance".into()),
                    self.opens.load(Ordering::SeqCst),
                )
            };
            let retry_after = self.policy.retry_after.as_secs().max(1);
            if self.policy.closed_writes == ClosedWrites::Reject {
                self.metrics.write_rejected();
                return Err(GateError::Refused {
                    reason,
                    retry_after,
                });
            }
            let waiting = HeldWait {
                gate: self,
                opens_seen,
            };
            let started = *hold_started.get_or_insert_with(|| {
                self.metrics.write_held();
                Instant::now()
            });
            let left = self.policy.hold_timeout.saturating_sub(started.elapsed());
            let mut rx = self.state_tx.subscribe();
            let opened = tokio::time::timeout(
                left,
                rx.wait_for(|_| self.opens.load(Ordering::SeqCst) != opens_seen),
            )
            .await;
            drop(waiting);
            if opened.is_err() {
                self.metrics.write_rejected();
                return Err(GateError::HoldTimeout {
                    reason,
                    waited_secs: started.elapsed().as_secs(),
                    retry_after,
                });
            }
            released = true;
        }
    }

    fn set_state(&self, inner: &mut Inner, state: GateState, reason: Option<String>) {
        if inner.state != state {
            inner.since = SystemTime::now();
        }
        inner.state = state;
        inner.reason = reason;
        if state == GateState::Open {
            self.opens.fetch_add(1, Ordering::SeqCst);
            inner.released = inner.held;
        }
        self.metrics.gate_state(state.as_str());
        self.state_tx.send_replace(state);
        tracing::info!(
            target: "regate::gate",
            state = state.as_str(),
            reason = inner.reason.as_deref().unwrap_or("-"),
            "write gate"
        );
    }

    /// Stops new pushes, waits for writes in flight and pushes under way (at
    /// most `timeout`), then closes. Returns how the drain ended.
    pub async fn drain_and_close(&self, reason: &str, timeout: Duration) -> DrainReport {
        let started = Instant::now();
        {
            let mut inner = self.lock();
            self.set_state(&mut inner, GateState::Draining, Some(reason.to_owned()));
        }
        let deadline = started + timeout;
        let report = loop {
            let notified = self.activity.notified();
            {
                let inner = self.lock();
                let pushes = inner.pushes.repos_under_way(Instant::now());
                let done = inner.in_flight == 0 && inner.released == 0 && pushes.is_empty();
                if inner.state != GateState::Draining {
                    break DrainReport {
                        waited_ms: started.elapsed().as_millis() as u64,
                        timed_out: false,
                        cancelled: true,
                        writes_left: inner.in_flight,
                        pushes_left: pushes,
                    };
                }
                if done || Instant::now() >= deadline {
                    if !done {
                        tracing::warn!(
                            target: "regate::gate",
                            writes = inner.in_flight,
                            pushes = ?pushes,
                            "drain_timeout reached with writes still under way; closing anyway"
                        );
                    }
                    break DrainReport {
                        waited_ms: started.elapsed().as_millis() as u64,
                        timed_out: !done,
                        cancelled: false,
                        writes_left: inner.in_flight,
                        pushes_left: pushes,
                    };
                }
            }
            let tick = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50));
            let _ = tokio::time::timeout(tick, notified).await;
        };
        let mut inner = self.lock();
        if inner.state == GateState::Draining {
            self.set_state(&mut inner, GateState::Closed, Some(reason.to_owned()));
        }
        report
    }

    /// Closes at once, without draining (recovery after a restart).
    pub fn close_now(&self, reason: &str) {
        let mut inner = self.lock();
        self.set_state(&mut inner, GateState::Closed, Some(reason.to_owned()));
    }

    /// Opens the gate; held writes go on.
    pub fn open(&self) {
        let mut inner = self.lock();
        if inner.state != GateState::Open {
            self.set_state(&mut inner, GateState::Open, None);
        }
    }

    /// The blobs each push under way has stored so far, by repository.
    pub fn pending_blobs(&self) -> Vec<(String, Vec<String>)> {
        let inner = self.lock();
        let now = Instant::now();
        inner
            .pushes
            .repos_under_way(now)
            .into_iter()
            .map(|repo| {
                let blobs = inner.pushes.pending_blobs(&repo, now);
                (repo, blobs)
            })
            .filter(|(_, b)| !b.is_empty())
            .collect()
    }

    pub fn status(&self) -> GateStatus {
        let inner = self.lock();
        GateStatus {
            state: inner.state,
            reason: inner.reason.clone(),
            since: unix_secs(inner.since),
            writes_in_flight: inner.in_flight,
            writes_held: inner.held,
            pushes_under_way: inner.pushes.repos_under_way(Instant::now()),
            closed_writes: match self.policy.closed_writes {
                ClosedWrites::Hold => "hold",
                ClosedWrites::Reject => "reject",
            },
        }
    }
}

#[cfg(test)]
mod tests;
