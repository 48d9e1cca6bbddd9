//! Dummy configs staged ahead of the deletes that will use them.
//!
//! Uploading a dummy's config (a POST and a PUT, each making the registry
//! write and sync files) is the slowest step of a delete by overwrite. After
//! such a delete succeeds, one fresh config is uploaded into the same
//! repository in the background, so the next delete there finds its config
//! in place and goes straight to the dummy PUT. A staged config is taken by
//! exactly one delete, so every dummy stays unique to its delete.
//!
//! A staged config is an unreferenced blob, which a garbage collection run
//! deletes: the delete that takes it then sees the registry refuse the dummy
//! (blob unknown), uploads the config again and retries once. Staging starts
//! only while the write gate is open and holds a write guard until its
//! upload ends, so a GC drain waits for it. Each config is recorded in the
//! state database before its upload, and the ones a previous process left
//! behind are unlinked at start-up.
//!
//! Also unlinks the config of a finished delete after its answer
//! ([`Staging::unlink_later`]), recorded the same way until it is done.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::dummy;
use crate::registry_api::{ApiError, RegistryApi};
use crate::route::Digest;
use crate::state::{blocking, State, StateError};
use crate::write_gate::WriteGate;

/// At most this many repositories have a config staged or on its way.
const MAX_REPOSITORIES: usize = 1024;

pub struct Staging {
    api: RegistryApi,
    state: State,
    gate: Arc<WriteGate>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    ready: HashMap<String, Bytes>,
    /// Uploads on their way; each turns `true` (or its sender drops) at the end.
    uploading: HashMap<String, watch::Receiver<bool>>,
}

/// How long a delete waits for a config on its way before it uploads its own.
const WAIT_FOR_UPLOAD: Duration = Duration::from_secs(2);

impl Staging {
    /// `gate`: background uploads run only while it is open.
    pub fn new(api: RegistryApi, state: State, gate: Arc<WriteGate>) -> Arc<Self> {
        Arc::new(Staging {
            api,
            state,
            gate,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The config staged in `repo`, if one is ready or on its way (then it
    /// waits for it: the upload under way is ahead of a fresh one, and two
    /// would only compete for the registry); nobody else gets it.
    pub async fn take(&self, repo: &str) -> Option<Bytes> {
        let mut on_its_way = {
            let mut inner = self.lock();
            if let Some(config) = inner.ready.remove(repo) {
                return Some(config);
            }
            inner.uploading.get(repo)?.clone()
        };
        let _ = tokio::time::timeout(WAIT_FOR_UPLOAD, on_its_way.wait_for(|done| *done)).await;
        self.lock().ready.remove(repo)
    }

    /// Returns a taken config no delete used (the delete ended before its
    /// dummy was written); its row is written again, as the journal entry
    /// that took it over is closed.
    pub async fn give_back(self: &Arc<Self>, repo: &str, config: Bytes) {
        let digest = Digest::sha256_of(&config).to_string();
        if self.note(repo, &digest).await.is_err() {
            return;
        }
        let taken = {
            let mut inner = self.lock();
            if inner.ready.contains_key(repo) {
                true
            } else {
                inner.ready.insert(repo.to_owned(), config);
                false
            }
        };
        if taken {
            // A refill got there first: this one is not needed.
            self.unlink_soon(repo, &digest).await;
        }
    }

    /// Starts uploading a fresh config into `repo` unless one is ready or on
    /// its way there, or the gate is not open. With [`MAX_REPOSITORIES`]
    /// holding one, the config of some other repository is unlinked for it.
    pub fn refill(self: &Arc<Self>, repo: &str) {
        let Some(guard) = self.gate.enter_if_open() else {
            return;
        };
        let (done, evicted) = {
            let mut inner = self.lock();
            if inner.ready.contains_key(repo) || inner.uploading.contains_key(repo) {
                return;
            }
            let mut evicted = None;
            if inner.ready.len() + inner.uploading.len() >= MAX_REPOSITORIES {
                let Some(other) = inner.ready.keys().next().cloned() else {
                    return; // all on their way
                };
                evicted = inner.ready.remove(&other).map(|c| (other, c));
            }
            let (done, on_its_way) = watch::channel(false);
            inner.uploading.insert(repo.to_owned(), on_its_way);
            (done, evicted)
        };
        let me = Arc::clone(self);
        let repo = repo.to_owned();
        tokio::spawn(async move {
            let _guard = guard;
            if let Some((other, config)) = evicted {
                me.unlink(&other, &Digest::sha256_of(&config).to_string())
                    .await;
            }
            let config = dummy::new_config(&repo);
            let digest = Digest::sha256_of(&config).to_string();
            // Recorded before the upload: a crash in between leaves a row
            // the next start unlinks, never a blob nobody knows of.
            let staged = match me.note(&repo, &digest).await {
                Ok(()) => match me.api.upload_blob(&repo, config.clone()).await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::debug!(repository = %repo, error = %e, "cannot stage a dummy config");
                        false
                    }
                },
                Err(e) => {
                    tracing::warn!(repository = %repo, error = %e, "cannot record a staged dummy config");
                    false
                }
            };
            let mut inner = me.lock();
            inner.uploading.remove(&repo);
            if staged {
                inner.ready.insert(repo, config);
            }
            drop(inner);
            done.send_replace(true);
        });
    }

    /// Unlinks the config of a finished delete (its dummy is gone, so nothing
    /// references it) without holding up the answer: noted first, so the
    /// next start unlinks it if this process dies before. In the background
    /// while the gate is open; otherwise now (the caller's request holds its
    /// own pass).
    /// Failures are logged: the row stays, and the next start tries again.
    pub async fn unlink_later(self: &Arc<Self>, repo: &str, digest: &str) {
        if self.note(repo, digest).await.is_err() {
            self.unlink(repo, digest).await;
            return;
        }
        self.unlink_soon(repo, digest).await;
    }

    /// Unlinks a noted config: in the background while the gate is open,
    /// otherwise now.
    async fn unlink_soon(self: &Arc<Self>, repo: &str, digest: &str) {
        let Some(guard) = self.gate.enter_if_open() else {
            return self.unlink(repo, digest).await;
        };
        let (me, repo, digest) = (Arc::clone(self), repo.to_owned(), digest.to_owned());
        tokio::spawn(async move {
            let _guard = guard;
            me.unlink(&repo, &digest).await;
        });
    }

    /// Notes a config regate must unlink unless a delete takes it.
    async fn note(&self, repo: &str, digest: &str) -> Result<(), StateError> {
        let (state, r, d) = (self.state.clone(), repo.to_owned(), digest.to_owned());
        blocking(move || state.note_dummy_config(&r, &d)).await
    }

    /// Unlinks a noted config and forgets it. A registry that refuses for
    /// good (405: deletes disabled since) leaves an unreferenced blob for
    /// the next GC: forgotten too. Other failures keep the row (the next
    /// start tries again) and are logged.
    async fn unlink(&self, repo: &str, digest: &str) {
        match self.api.delete_blob(repo, digest).await {
            Ok(_)
            | Err(ApiError::Status {
                status: http::StatusCode::METHOD_NOT_ALLOWED,
                ..
            }) => {
                let (state, d) = (self.state.clone(), digest.to_owned());
                if let Err(e) = blocking(move || state.forget_dummy_config(&d)).await {
                    tracing::warn!(error = %e, "cannot forget an unlinked dummy config");
                }
            }
            Err(e) => {
                tracing::warn!(repository = %repo, %digest, error = %e, "cannot unlink a dummy config; the next start tries again")
            }
        }
    }

    /// Unlinks the configs `left` (`(repository, digest)`) that a process
    /// which died noted and did not unlink (claimed by this one). The
    /// unlinks run in the background.
    pub async fn unlink_leftovers(self: &Arc<Self>, left: Vec<(String, String)>) {
        if left.is_empty() {
            return;
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            for (repo, digest) in left {
                me.unlink(&repo, &digest).await;
            }
        });
    }
}
