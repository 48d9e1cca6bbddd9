//! When tags are pushed and pulled, as regate sees it: a manifest PUT by tag
//! and a manifest GET/HEAD by tag only note the time in memory, and the
//! notes are written every [`FLUSH_EVERY`] (and before a retention plan, and
//! at shutdown), so neither a push nor a pull waits on the state. A crash
//! loses at most that much; a plan then falls back to the storage's date of
//! the tag, which the registry wrote at the same push.

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
/// repository -> tag -> the last push (digest, seconds since the epoch).
type Pushes = HashMap<String, HashMap<String, (String, i64)>>;

pub struct Recorder {
    state: State,
    pending: Mutex<(Pending, usize)>,
    pushes: Mutex<Pushes>,
    full: tokio::sync::Notify,
}

impl Recorder {
    pub fn new(state: State) -> Arc<Self> {
        Arc::new(Recorder {
            state,
            pending: Mutex::new((HashMap::new(), 0)),
            pushes: Mutex::new(HashMap::new()),
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

    /// Notes a manifest PUT of `digest` to `repo:tag` (a later push of the
    /// tag replaces it before it is written).
    pub fn pushed(&self, repo: &str, tag: &str, digest: &str) {
        let at = now();
        let mut pushes = self.pushes.lock().unwrap_or_else(|e| e.into_inner());
        pushes
            .entry(repo.to_owned())
            .or_default()
            .insert(tag.to_owned(), (digest.to_owned(), at));
    }

    /// Writes every noted push; how many. Pushes a write could not take are
    /// kept for the next one, unless the tag was pushed again meanwhile.
    async fn flush_pushes(&self) -> Result<usize, StateError> {
        let taken = std::mem::take(&mut *self.pushes.lock().unwrap_or_else(|e| e.into_inner()));
        let rows: Vec<(String, String, String, i64)> = taken
            .into_iter()
            .flat_map(|(r, tags)| {
                tags.into_iter()
                    .map(move |(t, (d, at))| (r.clone(), t, d, at))
            })
            .collect();
        let n = rows.len();
        if let Err((e, rows)) = self.write(rows, State::record_pushes).await? {
            let mut pushes = self.pushes.lock().unwrap_or_else(|e| e.into_inner());
            for (r, t, d, at) in rows {
                pushes.entry(r).or_default().entry(t).or_insert((d, at));
            }
            return Err(e);
        }
        Ok(n)
    }

    /// Writes every noted pull; how many. Pulls a write could not take are
    /// kept for the next one (a later pull of a tag wins).
    async fn flush_pulls(&self) -> Result<usize, StateError> {
        let taken = {
            let mut guard = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *guard).0
        };
        let rows: Vec<(String, String, i64)> = taken
            .into_iter()
            .flat_map(|(r, tags)| tags.into_iter().map(move |(t, at)| (r.clone(), t, at)))
            .collect();
        let n = rows.len();
        if let Err((e, rows)) = self.write(rows, State::record_pulls).await? {
            let mut guard = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for (r, t, at) in rows {
                let slot = guard.0.entry(r).or_default().entry(t).or_insert(at);
                *slot = (*slot).max(at);
            }
            return Err(e);
        }
        Ok(n)
    }

    /// Writes `rows` with `record` off the async threads (nothing to do for
    /// none); a refused write hands the rows back with its error.
    async fn write<R: Send + 'static>(
        &self,
        rows: Vec<R>,
        record: fn(&State, &[R]) -> Result<(), StateError>,
    ) -> Result<Result<(), (StateError, Vec<R>)>, StateError> {
        if rows.is_empty() {
            return Ok(Ok(()));
        }
        let state = self.state.clone();
        blocking(move || match record(&state, &rows) {
            Ok(()) => Ok(Ok(())),
            Err(e) => Ok(Err((e, rows))),
        })
        .await
    }

    /// Writes every noted push and pull; how many.
    pub async fn flush(&self) -> Result<usize, StateError> {
        Ok(self.flush_pushes().await? + self.flush_pulls().await?)
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
                tracing::warn!(error = %e, "cannot write tag push and pull times yet; keeping them for the next try");
            }
        }
        if let Err(e) = self.flush().await {
            tracing::warn!(error = %e, "cannot write tag push and pull times at shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pushes_and_pulls_are_noted_in_memory_and_written_by_flush() {
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
        r.pushed("a", "t1", "sha256:w");
        r.pushed("a", "t1", "sha256:x");
        assert!(
            state.tag_times("a").unwrap()["t1"].pushed.is_none(),
            "a push is only noted"
        );
        assert_eq!(r.flush().await.unwrap(), 1, "the later push of t1 only");
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
