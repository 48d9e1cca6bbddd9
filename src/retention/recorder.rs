//! When tags are pushed and pulled, as regate sees it: a manifest PUT by tag
//! is written to the state at once (off the async threads); a manifest
//! GET/HEAD by tag only notes the time in memory, and the notes are written
//! in one transaction every [`FLUSH_EVERY`] (and before a retention plan, and
//! at shutdown), so a pull never waits on the state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::state::{blocking, State, StateError};

/// How often noted pulls are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);
/// Tags noted before a write is started early.
const MAX_PENDING: usize = 50_000;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// repository -> tag -> last pull (seconds since the epoch).
type Pending = HashMap<String, HashMap<String, i64>>;

pub struct Recorder {
    state: State,
    pending: Mutex<(Pending, usize)>,
    full: tokio::sync::Notify,
}

impl Recorder {
    pub fn new(state: State) -> Arc<Self> {
        Arc::new(Recorder {
            state,
            pending: Mutex::new((HashMap::new(), 0)),
            full: tokio::sync::Notify::new(),
        })
    }

    /// Notes a pull of `repo:tag` (the hot path: a map update, no I/O; no
    /// allocation for a tag already noted since the last write).
    pub fn pulled(&self, repo: &str, tag: &str) {
        let at = now();
        let mut guard = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let (pending, count) = &mut *guard;
        if let Some(tags) = pending.get_mut(repo) {
            if let Some(t) = tags.get_mut(tag) {
                *t = at;
                return;
            }
            tags.insert(tag.to_owned(), at);
        } else {
            pending.insert(repo.to_owned(), HashMap::from([(tag.to_owned(), at)]));
        }
        *count += 1;
        if *count == MAX_PENDING {
            self.full.notify_one();
        }
    }

    /// Records a manifest PUT of `digest` to `repo:tag`; a failure is logged
    /// (the plan then falls back to the storage's date).
    pub async fn pushed(&self, repo: &str, tag: &str, digest: &str) {
        let (state, r, t, d) = (
            self.state.clone(),
            repo.to_owned(),
            tag.to_owned(),
            digest.to_owned(),
        );
        if let Err(e) = blocking(move || state.record_push(&r, &t, &d, now())).await {
            tracing::warn!(repository = repo, tag, error = %e, "cannot record the push time of a tag");
        }
    }

    /// Writes every noted pull; how many.
    pub async fn flush(&self) -> Result<usize, StateError> {
        let taken = {
            let mut guard = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *guard).0
        };
        let rows: Vec<(String, String, i64)> = taken
            .into_iter()
            .flat_map(|(r, tags)| tags.into_iter().map(move |(t, at)| (r.clone(), t, at)))
            .collect();
        let n = rows.len();
        if n > 0 {
            let state = self.state.clone();
            if let Err((e, rows)) = blocking(move || match state.record_pulls(&rows) {
                Ok(()) => Ok(Ok(())),
                Err(e) => Ok(Err((e, rows))),
            })
            .await?
            {
                // Kept for the next write (a later pull of a tag wins).
                let mut guard = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                for (r, t, at) in rows {
                    let slot = guard.0.entry(r).or_default().entry(t).or_insert(at);
                    *slot = (*slot).max(at);
                }
                return Err(e);
            }
        }
        Ok(n)
    }

    /// Writes noted pulls every `every` (or sooner when many are noted)
    /// until `stop`, then once more.
    pub async fn run(
        self: Arc<Self>,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.full.notified() => {}
                _ = stop.changed() => break,
            }
            if let Err(e) = self.flush().await {
                tracing::warn!(error = %e, "cannot write tag pull times yet; keeping them for the next try");
            }
        }
        if let Err(e) = self.flush().await {
            tracing::warn!(error = %e, "cannot write tag pull times at shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pulls_are_noted_in_memory_and_written_by_flush() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        let r = Recorder::new(state.clone());
        r.pulled("a", "t1");
        r.pulled("a", "t1");
        r.pulled("a", "t2");
        assert!(
            state.tag_times("a").unwrap().is_empty(),
            "nothing written yet"
        );
        assert_eq!(r.flush().await.unwrap(), 2);
        let t = state.tag_times("a").unwrap();
        assert!(t["t1"].pulled_at.is_some() && t["t2"].pulled_at.is_some());
        assert_eq!(r.flush().await.unwrap(), 0);
        r.pushed("a", "t1", "sha256:x").await;
        assert_eq!(
            state.tag_times("a").unwrap()["t1"]
                .pushed
                .as_ref()
                .unwrap()
                .0,
            "sha256:x"
        );
    }

    /// The cost a pull adds to a manifest GET: a few hundred nanoseconds at
    /// most even in a debug build, against the ~160 µs regate adds to a
    /// manifest HEAD (docs/benchmarks.md): well within 2 %.
    #[test]
    fn noting_a_pull_costs_well_under_two_percent_of_a_request() {
        let dir = tempfile::tempdir().unwrap();
        let r = Recorder::new(State::open(dir.path()).unwrap());
        let names: Vec<(String, String)> = (0..1000)
            .map(|i| (format!("team{}/app", i % 50), format!("build-{i}")))
            .collect();
        let n = 200_000;
        let start = std::time::Instant::now();
        for i in 0..n {
            let (repo, tag) = &names[i % names.len()];
            r.pulled(repo, tag);
        }
        let per_call = start.elapsed() / n as u32;
        eprintln!("Recorder::pulled: {per_call:?} per call");
        assert!(
            per_call < Duration::from_micros(3),
            "{per_call:?}: 2 % of 160 µs is 3.2 µs"
        );
    }
}
