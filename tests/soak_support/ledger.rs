//! What the clients of the soak were told: per tag, acknowledged (with its
//! digest), being deleted, deleted, or uncertain (a request cut by a kill);
//! counters for the summary; failures, printed the moment they happen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagState {
    /// The manifest PUT answered 201.
    Acked(String),
    /// A deleter is deleting it (pullers may see it vanish).
    Deleting(String),
    /// The DELETE answered 202.
    Deleted(String),
    /// The PUT or DELETE was cut: absent or at this digest at the end.
    Uncertain(String),
}

#[derive(Default)]
pub struct Counters {
    pub pushes_acked: AtomicU64,
    pub pushes_failed: AtomicU64,
    pub pulls: AtomicU64,
    pub pull_retries: AtomicU64,
    pub deletes_acked: AtomicU64,
    pub deletes_failed: AtomicU64,
    pub kills: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub struct Ledger {
    tags: Mutex<HashMap<(String, String), TagState>>,
    failures: Mutex<Vec<String>>,
    pub counters: Counters,
}

impl Ledger {
    pub fn set(&self, repo: &str, tag: &str, state: TagState) {
        self.tags
            .lock()
            .unwrap()
            .insert((repo.to_owned(), tag.to_owned()), state);
    }

    pub fn get(&self, repo: &str, tag: &str) -> Option<TagState> {
        self.tags
            .lock()
            .unwrap()
            .get(&(repo.to_owned(), tag.to_owned()))
            .cloned()
    }

    /// Every (repo, tag, state).
    pub fn all(&self) -> Vec<(String, String, TagState)> {
        let mut v: Vec<_> = self
            .tags
            .lock()
            .unwrap()
            .iter()
            .map(|((r, t), s)| (r.clone(), t.clone(), s.clone()))
            .collect();
        v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        v
    }

    /// An acknowledged tag picked by `pick` (an index below the count).
    pub fn pick_acked(
        &self,
        pick: impl FnOnce(usize) -> usize,
    ) -> Option<(String, String, String)> {
        let tags = self.tags.lock().unwrap();
        let acked: Vec<_> = tags
            .iter()
            .filter_map(|((r, t), s)| match s {
                TagState::Acked(d) => Some((r, t, d)),
                _ => None,
            })
            .collect();
        if acked.is_empty() {
            return None;
        }
        let (r, t, d) = acked[pick(acked.len())];
        Some((r.clone(), t.clone(), d.clone()))
    }

    /// Moves an acknowledged tag to `Deleting`; false if it was not acknowledged.
    pub fn start_delete(&self, repo: &str, tag: &str) -> bool {
        let mut tags = self.tags.lock().unwrap();
        match tags.get_mut(&(repo.to_owned(), tag.to_owned())) {
            Some(s @ TagState::Acked(_)) => {
                let TagState::Acked(d) = s.clone() else {
                    unreachable!()
                };
                *s = TagState::Deleting(d);
                true
            }
            _ => false,
        }
    }

    pub fn fail(&self, msg: String) {
        eprintln!("SOAK FAILURE: {msg}");
        self.failures.lock().unwrap().push(msg);
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }

    pub fn count(&self, f: impl Fn(&TagState) -> bool) -> usize {
        self.tags.lock().unwrap().values().filter(|s| f(s)).count()
    }
}
