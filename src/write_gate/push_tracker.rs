//! Which pushes are under way, so a draining gate lets them finish.
//!
//! Owns the per-repository record of upload sessions regate saw start and
//! blobs (or child manifests) written since the repository's last tagged
//! manifest PUT. A push ends with a manifest PUT by tag; until then, and while
//! its last activity is younger than the push window, the repository counts
//! as being pushed to. Pure bookkeeping: no I/O, no locks (the gate holds it
//! under its own mutex).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct RepoPush {
    /// Upload sessions started and not yet completed or cancelled.
    sessions: HashSet<String>,
    /// Blobs or manifests by digest written since the last tagged manifest.
    pending: bool,
    /// The digests of those blobs (what a GC must not take from the push).
    blobs: BTreeSet<String>,
    last_activity: Option<Instant>,
}

impl RepoPush {
    fn under_way(&self, now: Instant, window: Duration) -> bool {
        (self.pending || !self.sessions.is_empty())
            && self
                .last_activity
                .is_some_and(|t| now.saturating_duration_since(t) < window)
    }
}

/// Blob digests remembered per push, at most.
const MAX_BLOBS_PER_PUSH: usize = 10_000;

/// Pushes per repository.
#[derive(Debug)]
pub struct PushTracker {
    repos: HashMap<String, RepoPush>,
    window: Duration,
}

impl PushTracker {
    pub fn new(window: Duration) -> Self {
        PushTracker {
            repos: HashMap::new(),
            window,
        }
    }

    fn repo(&mut self, repo: &str, now: Instant) -> &mut RepoPush {
        let r = self.repos.entry(repo.to_owned()).or_default();
        r.last_activity = Some(now);
        r
    }

    /// A request of `repo` was admitted: the push is alive.
    pub fn touch(&mut self, repo: &str, now: Instant) {
        if let Some(r) = self.repos.get_mut(repo) {
            r.last_activity = Some(now);
        }
    }

    pub fn session_started(&mut self, repo: &str, session: &str, now: Instant) {
        self.repo(repo, now).sessions.insert(session.to_owned());
    }

    /// The session ended: `completed` when its blob was written.
    pub fn session_ended(&mut self, repo: &str, session: &str, completed: bool, now: Instant) {
        let r = self.repo(repo, now);
        r.sessions.remove(session);
        if completed {
            r.pending = true;
        }
    }

    /// The digest of a blob the push stored (from `Docker-Content-Digest`).
    pub fn note_blob(&mut self, repo: &str, digest: &str) {
        if let Some(r) = self.repos.get_mut(repo) {
            if r.blobs.len() < MAX_BLOBS_PER_PUSH {
                r.blobs.insert(digest.to_owned());
            }
        }
    }

    /// The blobs stored by the push under way in `repo` (none when no push is).
    pub fn pending_blobs(&self, repo: &str, now: Instant) -> Vec<String> {
        match self.repos.get(repo) {
            Some(r) if r.under_way(now, self.window) => r.blobs.iter().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// A blob arrived without a session (a cross-repository mount).
    pub fn blob_written(&mut self, repo: &str, now: Instant) {
        self.repo(repo, now).pending = true;
    }

    /// A manifest was stored; by tag it completes the push, by digest (an
    /// index child, an artifact) the push goes on.
    pub fn manifest_written(&mut self, repo: &str, by_tag: bool, now: Instant) {
        let r = self.repo(repo, now);
        r.pending = !by_tag;
        if by_tag {
            r.blobs.clear();
        }
    }

    pub fn knows_session(&self, repo: &str, session: &str) -> bool {
        self.repos
            .get(repo)
            .is_some_and(|r| r.sessions.contains(session))
    }

    pub fn under_way(&self, repo: &str, now: Instant) -> bool {
        self.repos
            .get(repo)
            .is_some_and(|r| r.under_way(now, self.window))
    }

    /// Repositories with a push under way now.
    pub fn repos_under_way(&self, now: Instant) -> Vec<String> {
        let mut v: Vec<String> = self
            .repos
            .iter()
            .filter(|(_, r)| r.under_way(now, self.window))
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    /// Forgets repositories idle for longer than the window.
    pub fn prune(&mut self, now: Instant) {
        let window = self.window;
        self.repos.retain(|_, r| r.under_way(now, window));
    }

    pub fn len(&self) -> usize {
        self.repos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.repos.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_lasts_from_its_first_session_to_its_tagged_manifest() {
        let w = Duration::from_secs(60);
        let mut t = PushTracker::new(w);
        let now = Instant::now();
        assert!(!t.under_way("a", now));
        t.session_started("a", "s1", now);
        assert!(t.under_way("a", now) && t.knows_session("a", "s1"));
        t.session_ended("a", "s1", true, now);
        assert!(t.under_way("a", now), "blobs written, manifest not yet");
        t.manifest_written("a", false, now);
        assert!(
            t.under_way("a", now),
            "an index child does not end the push"
        );
        t.note_blob("a", "sha256:1");
        assert_eq!(t.pending_blobs("a", now), ["sha256:1"]);
        t.manifest_written("a", true, now);
        assert!(!t.under_way("a", now));
        assert!(t.pending_blobs("a", now).is_empty());
        assert!(t.repos_under_way(now).is_empty());
    }

    #[test]
    fn an_abandoned_push_expires_after_the_window() {
        let w = Duration::from_millis(100);
        let mut t = PushTracker::new(w);
        let now = Instant::now();
        t.session_started("a", "s1", now);
        assert!(!t.under_way("a", now + Duration::from_millis(150)));
        t.prune(now + Duration::from_millis(150));
        assert!(t.is_empty());
    }

    #[test]
    fn a_cancelled_session_leaves_nothing_pending() {
        let mut t = PushTracker::new(Duration::from_secs(60));
        let now = Instant::now();
        t.session_started("a", "s1", now);
        t.session_ended("a", "s1", false, now);
        assert!(!t.under_way("a", now));
    }
}
