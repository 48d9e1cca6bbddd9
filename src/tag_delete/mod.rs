//! A true tag-only `DELETE /v2/<name>/manifests/<tag>`.
//!
//! Owns the delete sequence, its crash recovery, undo (restore), the
//! optional protection of digest deletes that would remove tags, and the
//! refusal to delete or move `[[protect]]` tags (the rules are
//! [`crate::protect`]'s). Calls the
//! registry through [`RegistryApi`], the journal and history through
//! [`State`], and holds a [`TagLocks`] write lock for the whole sequence (in
//! a cluster, the tag's lock on every replica too, as do restore and
//! recovery).
//!
//! The sequence: resolve the tag (all four manifest types) -> journal the
//! intent (fsync'd; recovery decides from what the registry holds, so the
//! intermediate steps need no journal writes) while asking the registry to
//! delete the tag itself (distribution 3.x does; 405 means deletes are
//! disabled, detected before anything is written upstream) -> otherwise make
//! sure a unique dummy config is in the repository (staged there in the
//! background after the previous delete, or uploaded now) -> PUT a dummy
//! manifest of the same family to the tag -> DELETE the dummy by its digest
//! -> check the tag is gone and the original still resolves -> close the
//! journal entry and record the removal for undo; the dummy's config is
//! unlinked after the answer. At start-up every open journal entry is
//! finished or rolled back before its tag is served again.

mod batch;
mod dummy;
pub mod fault;
mod staged;
mod timing;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::error::{ErrorCode, RegistryError};
use crate::metrics::Metrics;
use crate::registry_api::{ApiError, Manifest, NativeTagDelete, RegistryApi};
use crate::route::{RepoName, Tag};
use crate::state::{blocking, Deletion, JournalEntry, JournalStep, State, StateError};
use crate::tag_locks::{TagGuard, TagLocks};
use crate::write_gate::WriteGate;
pub use batch::{TagOutcome, MAX_BATCH};
pub use dummy::{evidence as dummy_evidence, is_dummy_config, Dummy, DummyEvidence, Family};
use staged::Staging;

#[derive(Debug, thiserror::Error)]
pub enum TagDeleteError {
    #[error("tag {0} is not known to the registry")]
    NotFound(String),
    #[error(
        "the registry has deletes disabled (storage.delete.enabled: false); nothing was changed"
    )]
    DeletesDisabled,
    #[error("digest {digest} is also tagged {tags:?}; deleting it would remove those tags too (delete.protect_shared_digests)")]
    SharedDigest { digest: String, tags: Vec<String> },
    #[error("tag {tag} is protected by {rule}; it cannot be deleted (change [[protect]] in the configuration first)")]
    Protected { tag: String, rule: String },
    #[error("tag {tag} points at {now} now, not at {expected} as planned; it was left alone")]
    Moved {
        tag: String,
        expected: String,
        now: String,
    },
    #[error("no removed tag {0} to restore")]
    NothingToRestore(String),
    #[error(
        "the manifest of {0} is gone from the registry (garbage collected?); it cannot be restored"
    )]
    ManifestGone(String),
    #[error("tag {0} exists again; restore would overwrite it")]
    TagExists(String),
    #[error("{0}")]
    Api(#[from] ApiError),
    /// An [`ApiError`] shared by several tags of a batch (it is not `Clone`).
    #[error("{0}")]
    Upstream(String),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("after the delete, {0}")]
    Verify(String),
    #[error("the delete stopped unexpectedly: {0}")]
    Task(String),
    /// The other replicas could not be made to hold the tag's lock.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

impl From<TagDeleteError> for RegistryError {
    fn from(e: TagDeleteError) -> Self {
        let msg = e.to_string();
        match e {
            TagDeleteError::NotFound(_) => {
                RegistryError::new(StatusCode::NOT_FOUND, ErrorCode::ManifestUnknown, msg)
            }
            TagDeleteError::DeletesDisabled => {
                RegistryError::new(StatusCode::METHOD_NOT_ALLOWED, ErrorCode::Unsupported, msg)
            }
            TagDeleteError::SharedDigest { tags, .. } => {
                RegistryError::new(StatusCode::CONFLICT, ErrorCode::Denied, msg)
                    .with_detail(serde_json::json!({ "tags": tags }))
            }
            TagDeleteError::Protected { tag, rule } => {
                RegistryError::new(StatusCode::CONFLICT, ErrorCode::Denied, msg)
                    .with_detail(serde_json::json!({ "tag": tag, "rule": rule }))
            }
            TagDeleteError::Moved { now, .. } => {
                RegistryError::new(StatusCode::CONFLICT, ErrorCode::Denied, msg)
                    .with_detail(serde_json::json!({ "digest": now }))
            }
            TagDeleteError::NothingToRestore(_) | TagDeleteError::ManifestGone(_) => {
                RegistryError::new(StatusCode::NOT_FOUND, ErrorCode::ManifestUnknown, msg)
            }
            TagDeleteError::TagExists(_) => {
                RegistryError::new(StatusCode::CONFLICT, ErrorCode::Denied, msg)
            }
            TagDeleteError::Api(ApiError::Transport(_)) | TagDeleteError::Upstream(_) => {
                RegistryError::bad_gateway(msg)
            }
            TagDeleteError::Api(ApiError::Timeout { .. }) => RegistryError::gateway_timeout(msg),
            TagDeleteError::Api(ApiError::Status { .. })
            | TagDeleteError::Api(ApiError::DigestMismatch { .. }) => {
                RegistryError::bad_gateway(msg)
            }
            TagDeleteError::State(s) if s.is_unavailable() => RegistryError::unavailable(msg),
            TagDeleteError::State(_) | TagDeleteError::Verify(_) | TagDeleteError::Task(_) => {
                RegistryError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Unknown, msg)
            }
            TagDeleteError::Cluster(_) => RegistryError::unavailable(msg),
        }
    }
}

/// How long a request of a delete may still be landing in the registry after
/// its sender stopped waiting for it (a process killed after the registry had
/// the whole request, or a timeout): recovery waits this long between
/// unlinking the dummy's config and reading the tag. A PUT the registry has
/// validated is stored within milliseconds on an idle machine; under load,
/// hundreds of them.
const IN_FLIGHT_SETTLE: Duration = Duration::from_secs(2);

/// What a successful delete removed.
#[derive(Debug, Clone)]
pub struct Removed {
    pub digest: String,
    /// The registry deleted the tag itself (no dummy was needed).
    pub native: bool,
}

/// One delete under way: what its plan found and made, carried through its
/// steps (`TagDeleter::delete_locked`).
struct Pending<'a> {
    repo: &'a str,
    tag: &'a str,
    account: &'a str,
    original: Manifest,
    /// The staged config the dummy uses, until it is given back.
    staged: Option<bytes::Bytes>,
    dummy: Dummy,
    /// Its `id` is the journal's once the intent is written.
    entry: JournalEntry,
}

/// Where the intent step leaves a delete.
enum Intent {
    /// Journalled; the registry has no tag delete of its own: overwrite.
    Overwrite(TagGuard),
    /// The registry deleted the tag itself (or had, when it failed to say).
    Removed(Removed),
}

pub struct TagDeleter {
    api: RegistryApi,
    state: State,
    pub locks: Arc<TagLocks>,
    staging: Arc<Staging>,
    metrics: Arc<Metrics>,
    faults: fault::Faults,
    protect_shared_digests: bool,
    /// Set with `[state] url`: a delete also locks the tag on every replica.
    cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    protect: crate::protect::Protections,
}

impl TagDeleter {
    /// `gate`: the write gate regate's background writes respect.
    pub fn new(
        api: RegistryApi,
        state: State,
        gate: Arc<WriteGate>,
        metrics: Arc<Metrics>,
        protect_shared_digests: bool,
    ) -> Self {
        TagDeleter {
            staging: Staging::new(api.clone(), state.clone(), gate),
            api,
            state,
            locks: Arc::new(TagLocks::default()),
            metrics,
            faults: fault::Faults::from_env(),
            protect_shared_digests,
            cluster: std::sync::OnceLock::new(),
            protect: Default::default(),
        }
    }

    /// The `[[protect]]` rules: their tags are never deleted, and immutable
    /// ones never moved ([`TagDeleter::check_move`]).
    pub fn with_protection(mut self, protect: crate::protect::Protections) -> Self {
        self.protect = protect;
        self
    }

    pub fn protections(&self) -> &crate::protect::Protections {
        &self.protect
    }

    /// Refuses deleting a protected tag.
    fn check_protected(&self, repo: &str, tag: &str) -> Result<(), TagDeleteError> {
        match self.protect.protecting(repo, tag) {
            Some(rule) => Err(TagDeleteError::Protected {
                tag: format!("{repo}:{tag}"),
                rule: rule.name(),
            }),
            None => Ok(()),
        }
    }

    /// Refuses a manifest PUT that would move an immutable tag to another
    /// manifest (`pushed`, its digest); the same manifest again passes.
    /// Called under the tag's write lock.
    pub async fn check_move(
        &self,
        repo: &RepoName,
        tag: &Tag,
        pushed: &str,
    ) -> Result<(), RegistryError> {
        let (repo, tag) = (repo.as_str(), tag.as_str());
        let Some(rule) = self.protect.immutable(repo, tag) else {
            return Ok(());
        };
        match self.api.resolve(repo, tag).await {
            Ok(Some(current)) if current != pushed => Err(crate::protect::move_refused(
                repo, tag, &current, pushed, rule,
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(e.bad_gateway_for("manifest", repo)),
        }
    }

    /// Deletes lock their tag on every replica of `cluster` too, and the
    /// other replicas' deletes take this replica's locks.
    pub fn join_cluster(&self, cluster: Arc<crate::cluster::Cluster>) {
        cluster.share_tag_locks(Arc::clone(&self.locks));
        let _ = self.cluster.set(cluster);
    }

    /// The cluster this replica belongs to (`[state] url`), if any.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.get()
    }

    /// The write lock of `repo:tag`, here and (in a cluster) on every live
    /// replica: the guard holds both, also while a recovery retried in the
    /// background keeps it. `dead`: the replica whose delete is recovered
    /// (its lock on the tag is taken over, not waited for or let go).
    async fn lock_everywhere(
        &self,
        repo: &str,
        tag: &str,
        dead: Option<&str>,
    ) -> Result<TagGuard, TagDeleteError> {
        let mut guard = self.lock_here(repo, tag, dead).await;
        self.lock_others(&mut guard, repo, tag, dead).await?;
        Ok(guard)
    }

    /// The first half of [`TagDeleter::lock_everywhere`]: this replica's lock.
    async fn lock_here(&self, repo: &str, tag: &str, dead: Option<&str>) -> TagGuard {
        let taken = match (self.cluster.get(), dead) {
            (Some(c), Some(d)) => c.take_held(repo, tag, d),
            _ => None,
        };
        match taken {
            Some(g) => g,
            None => self.locks.write(repo, tag).await,
        }
    }

    /// The second half: in a cluster, the other replicas' locks, kept by `guard`.
    async fn lock_others(
        &self,
        guard: &mut TagGuard,
        repo: &str,
        tag: &str,
        dead: Option<&str>,
    ) -> Result<(), TagDeleteError> {
        if let Some(c) = self.cluster.get() {
            guard.hold_also(c.lock_tag_replacing(repo, tag, dead).await?);
        }
        Ok(())
    }

    /// Removes `repo:tag` and nothing else. Runs as its own task, to the end
    /// even when the client goes away: a delete cut off between its dummy PUT
    /// and DELETE would leave the tag on the dummy until the next start.
    pub async fn delete(
        self: &Arc<Self>,
        repo: &RepoName,
        tag: &Tag,
        account: &str,
    ) -> Result<Removed, TagDeleteError> {
        let (me, repo, tag, account) = (
            Arc::clone(self),
            repo.as_str().to_owned(),
            tag.as_str().to_owned(),
            account.to_owned(),
        );
        self.check_protected(&repo, &tag)?;
        tokio::spawn(async move {
            let started = Instant::now();
            let lock = me.lock_everywhere(&repo, &tag, None).await?;
            let removed = me.delete_locked(lock, &repo, &tag, &account).await?;
            me.metrics.tag_delete(removed.native, started.elapsed());
            Ok(removed)
        })
        .await
        .unwrap_or_else(|e| Err(TagDeleteError::Task(e.to_string())))
    }

    /// The delete, under `lock` (the tag's write lock), which it keeps for a
    /// recovery retried in the background when the registry cannot be reached.
    /// Only orders the steps: plan, intent, overwrite, verify, record.
    async fn delete_locked(
        self: &Arc<Self>,
        lock: TagGuard,
        repo: &str,
        tag: &str,
        account: &str,
    ) -> Result<Removed, TagDeleteError> {
        let mut steps = timing::Steps::start();
        let mut d = self.plan(repo, tag, account, &mut steps).await?;
        let lock = match self.intent(&mut d, lock).await? {
            Intent::Overwrite(lock) => lock,
            Intent::Removed(removed) => return Ok(removed),
        };
        steps.mark("intent");

        let overwritten = self
            .overwrite_and_delete(repo, &[tag], &d.dummy, d.staged.is_some())
            .await;
        steps.mark("overwrite");
        let done = match overwritten {
            Ok(()) => self.verify(repo, &[tag], &[&d.original.digest]).await,
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            return self.finish_or_roll_back(d, lock, e).await;
        }
        steps.mark("verify");
        self.record_overwritten(&d, steps).await
    }

    /// Plan: resolves the tag (all four manifest types) and takes a staged
    /// config for the dummy, or makes one; writes nothing.
    async fn plan<'a>(
        &self,
        repo: &'a str,
        tag: &'a str,
        account: &'a str,
        steps: &mut timing::Steps,
    ) -> Result<Pending<'a>, TagDeleteError> {
        let original = self
            .api
            .manifest(repo, tag)
            .await?
            .ok_or_else(|| TagDeleteError::NotFound(format!("{repo}:{tag}")))?;
        steps.mark("resolve");
        let family = Family::of(&original.media_type);
        let staged = self.staging.take(repo).await;
        steps.mark("take_config");
        let dummy = match &staged {
            Some(config) => Dummy::with_config(family, config.clone()),
            None => Dummy::new(family, repo, tag),
        };
        let entry = JournalEntry {
            id: 0,
            repository: repo.to_owned(),
            tag: tag.to_owned(),
            original_digest: original.digest.clone(),
            original_media_type: original.media_type.clone(),
            dummy_digest: dummy.digest.clone(),
            dummy_config_digest: dummy.config_digest.clone(),
            step: JournalStep::Intent,
            account: account.to_owned(),
        };
        Ok(Pending {
            repo,
            tag,
            account,
            original,
            staged,
            dummy,
            entry,
        })
    }

    /// Intent: journals the delete while asking the registry to delete the
    /// tag itself; the delete ends here unless the tag is left to overwrite.
    async fn intent(
        self: &Arc<Self>,
        d: &mut Pending<'_>,
        lock: TagGuard,
    ) -> Result<Intent, TagDeleteError> {
        let (repo, tag) = (d.repo, d.tag);
        // The intent is journalled while the registry is asked to delete the
        // tag itself: recovery ends an entry right whatever that request did
        // (tag gone: removed; tag at its original: rolled back), and the
        // request writes nothing on a registry without its own tag delete.
        let (state, e) = (self.state.clone(), d.entry.clone());
        let (id, native) = tokio::join!(
            blocking(move || state.journal_begin(&e)),
            self.api.delete_tag_native(repo, tag),
        );
        match id {
            Ok(id) => d.entry.id = id,
            Err(err) => {
                self.give_back(repo, d.staged.take()).await;
                if let Ok(NativeTagDelete::Deleted) = native {
                    // Gone all the same: keep it for undo if the state can.
                    return self
                        .record_removed(repo, tag, &d.original, d.account, None, true)
                        .await
                        .map(Intent::Removed);
                }
                return Err(err.into());
            }
        }
        let refused = match native {
            Ok(NativeTagDelete::NotImplemented) => None,
            Ok(NativeTagDelete::Deleted) => {
                self.give_back(repo, d.staged.take()).await;
                return self
                    .record_removed(repo, tag, &d.original, d.account, Some(d.entry.id), true)
                    .await
                    .map(Intent::Removed);
            }
            Ok(NativeTagDelete::Disabled) => {
                Some((JournalStep::Refused, TagDeleteError::DeletesDisabled))
            }
            Ok(NativeTagDelete::NotFound) => Some((
                JournalStep::NotFound,
                TagDeleteError::NotFound(format!("{repo}:{tag}")),
            )),
            Err(err) => {
                // What did the registry do? Ask it (no dummy was sent).
                return match self.recover_entry(&d.entry, false).await {
                    Ok(Recovered::Removed) => Ok(Intent::Removed(Removed {
                        digest: d.original.digest.clone(),
                        native: true,
                    })),
                    Ok(_) => Err(err.into()),
                    Err(_) => {
                        self.recover_later(d.entry.clone(), lock);
                        Err(err.into())
                    }
                };
            }
        };
        if let Some((step, err)) = refused {
            let (state, id) = (self.state.clone(), d.entry.id);
            blocking(move || state.journal_close(id, step)).await?;
            self.give_back(repo, d.staged.take()).await;
            return Err(err);
        }
        self.faults.at("after_intent");
        Ok(Intent::Overwrite(lock))
    }

    /// A delete that failed while overwriting or verifying: leaves nothing
    /// half done, finishing or rolling back now (or later, keeping `lock`,
    /// when the registry cannot be reached); `e` is the answer unless removed.
    async fn finish_or_roll_back(
        self: &Arc<Self>,
        d: Pending<'_>,
        lock: TagGuard,
        e: TagDeleteError,
    ) -> Result<Removed, TagDeleteError> {
        tracing::warn!(repository = d.repo, tag = d.tag, error = %e, "tag delete failed midway; recovering");
        match self.recover_entry(&d.entry, true).await {
            Ok(Recovered::Removed) => Ok(Removed {
                digest: d.original.digest,
                native: false,
            }),
            Ok(Recovered::RolledBack | Recovered::Superseded) => Err(e),
            Err(_) => {
                self.recover_later(d.entry, lock);
                Err(e)
            }
        }
    }

    /// Record: keeps the verified removal for undo (closing the journal
    /// entry) as the answer; the dummy's config is unlinked after it.
    async fn record_overwritten(
        &self,
        d: &Pending<'_>,
        mut steps: timing::Steps,
    ) -> Result<Removed, TagDeleteError> {
        let (repo, tag) = (d.repo, d.tag);
        let removed = self
            .record_removed(repo, tag, &d.original, d.account, Some(d.entry.id), false)
            .await?;
        steps.mark("record");
        // The dummy's config is referenced by nothing now: unlinked after the
        // answer (noted first, so a crash before leaves it to the next start).
        self.staging
            .unlink_later(repo, &d.dummy.config_digest)
            .await;
        tracing::debug!(repository = repo, tag, %steps, "tag removed by overwrite");
        // The next delete in this repository finds its config in place.
        self.staging.refill(repo);
        Ok(removed)
    }

    /// A staged config a delete took but did not use goes back.
    async fn give_back(&self, repo: &str, staged: Option<bytes::Bytes>) {
        if let Some(config) = staged {
            self.staging.give_back(repo, config).await;
        }
    }

    /// Makes sure the dummy's config is in the repository (uploading it,
    /// unless it was staged), points every tag at the dummy (a tag write:
    /// the repository lock is shared), deletes the dummy once.
    async fn overwrite_and_delete(
        &self,
        repo: &str,
        tags: &[&str],
        dummy: &Dummy,
        config_staged: bool,
    ) -> Result<(), TagDeleteError> {
        if !config_staged {
            self.api.upload_blob(repo, dummy.config.clone()).await?;
        }
        self.faults.at("after_config");
        let source = {
            let _repo = self.locks.repo_shared(repo).await;
            let put_all = || async {
                batch::in_parallel(tags, |t| {
                    self.api
                        .put_manifest(repo, t, dummy.media_type, dummy.manifest.clone())
                })
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
            };
            match put_all().await {
                Ok(_) if config_staged => "staged",
                Ok(_) => "uploaded",
                // A garbage collection took the staged config: upload it
                // again (the refused PUT wrote nothing) and retry once.
                Err(e) if config_staged && e.is_blob_unknown() => {
                    self.api.upload_blob(repo, dummy.config.clone()).await?;
                    put_all().await?;
                    "restaged"
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.metrics.dummy_config(source);
        self.faults.at("after_dummy_put");
        if !self.delete_dummy(repo, &dummy.digest).await? {
            return Err(TagDeleteError::Verify(format!(
                "the dummy manifest {} of {repo} ({}) vanished",
                dummy.digest,
                tags.join(", ")
            )));
        }
        self.faults.at("after_dummy_delete");
        Ok(())
    }

    /// Points one tag at a dummy (the recovery of a dangling tag).
    async fn put_dummy(&self, repo: &str, tag: &str, dummy: &Dummy) -> Result<(), TagDeleteError> {
        let _repo = self.locks.repo_shared(repo).await;
        self.api
            .put_manifest(repo, tag, dummy.media_type, dummy.manifest.clone())
            .await?;
        Ok(())
    }

    /// Deletes a dummy by digest (2.8 then scans every tag link of the
    /// repository), exclusive; `false` when it was already gone.
    async fn delete_dummy(&self, repo: &str, digest: &str) -> Result<bool, TagDeleteError> {
        let _repo = self.locks.repo_exclusive(repo).await;
        Ok(self.api.delete_manifest(repo, digest).await?)
    }

    /// The repository's tags; none for a repository the registry does not
    /// know (404). Any other failure is an error, never an empty list.
    async fn tag_list(&self, repo: &str) -> Result<Vec<String>, TagDeleteError> {
        match self.api.tags(repo).await? {
            Ok(tags) => Ok(tags),
            Err((StatusCode::NOT_FOUND, _)) => Ok(Vec::new()),
            Err((status, body)) => Err(ApiError::Status {
                what: format!("GET tags/list of {repo}"),
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            }
            .into()),
        }
    }

    /// Whether `tag` is in the repository's tag list.
    async fn listed(&self, repo: &str, tag: &str) -> Result<bool, TagDeleteError> {
        Ok(self.tag_list(repo).await?.iter().any(|x| x == tag))
    }

    /// Checks the end state, reading at once: none of `tags` is in the
    /// repository's tag list (so none resolves or dangles: a registry
    /// resolves only tags it lists) and every original manifest still
    /// resolves.
    async fn verify(
        &self,
        repo: &str,
        tags: &[&str],
        originals: &[&str],
    ) -> Result<(), TagDeleteError> {
        let mut originals = originals.to_vec();
        originals.sort_unstable();
        originals.dedup();
        let (listed, found) = tokio::join!(
            self.tag_list(repo),
            batch::in_parallel(&originals, |d| async move {
                (d, self.api.resolve(repo, d).await)
            }),
        );
        let listed = listed?;
        if let Some(t) = tags.iter().find(|t| listed.iter().any(|l| l == *t)) {
            return Err(TagDeleteError::Verify(format!(
                "{repo}:{t} is still in the tag list"
            )));
        }
        for (d, r) in found {
            if r?.is_none() {
                return Err(TagDeleteError::Verify(format!(
                    "the original manifest {repo}@{d} is gone"
                )));
            }
        }
        Ok(())
    }

    /// Keeps the removal of `repo:tag` from `original` for undo (closing
    /// `close_journal` in the same transaction); what a delete answers.
    async fn record_removed(
        &self,
        repo: &str,
        tag: &str,
        original: &Manifest,
        account: &str,
        close_journal: Option<i64>,
        native: bool,
    ) -> Result<Removed, TagDeleteError> {
        let d = removal(
            repo,
            tag,
            &original.digest,
            &original.media_type,
            Some(original.bytes.to_vec()),
            account,
        );
        self.record(d, close_journal).await?;
        Ok(Removed {
            digest: original.digest.clone(),
            native,
        })
    }

    /// Keeps a removal for undo (closing its journal entry in the same
    /// transaction) and writes the audit line.
    async fn record(&self, d: Deletion, close_journal: Option<i64>) -> Result<(), TagDeleteError> {
        let (repo, tag, digest, account) = (
            d.repository.clone(),
            d.tag.clone(),
            d.digest.clone(),
            d.account.clone(),
        );
        let state = self.state.clone();
        blocking(move || state.record_deletion(&d, close_journal)).await?;
        tracing::info!(target: "regate::audit", event = "tag_deleted", repository = %repo, tag = %tag, digest = %digest, account = %account);
        Ok(())
    }

    /// Brings one journal entry to an end state: the tag removed (and no
    /// dummy left), or the tag at its original digest.
    async fn recover_entry(
        &self,
        e: &JournalEntry,
        settle: bool,
    ) -> Result<Recovered, TagDeleteError> {
        let (repo, tag) = (e.repository.as_str(), e.tag.as_str());
        // First unlink the dummy's config: a dummy PUT still on its way (sent
        // by a process that died, or cut by a timeout) is then refused by the
        // registry, and one it already validated lands within the settle time.
        self.api.delete_blob(repo, &e.dummy_config_digest).await?;
        if settle {
            tokio::time::sleep(IN_FLIGHT_SETTLE).await;
        }
        // The dummy can only be reached through the tags of this delete (its
        // config is unique to it; a batch journals each of its tags), so
        // deleting it by digest removes only tags that were meant to go.
        if self.api.resolve(repo, &e.dummy_digest).await?.is_some() {
            self.delete_dummy(repo, &e.dummy_digest).await?;
        }
        let mut now = self.api.resolve(repo, tag).await?;
        // The tag at this delete's own dummy is never an end state (a late
        // PUT landed after the check above): delete the dummy again.
        let mut attempts = 0;
        while now.as_deref() == Some(e.dummy_digest.as_str()) && attempts < 3 {
            attempts += 1;
            tracing::warn!(
                repository = repo,
                tag,
                "the dummy landed late; deleting it again"
            );
            self.delete_dummy(repo, &e.dummy_digest).await?;
            now = self.api.resolve(repo, tag).await?;
        }
        // A tag that no longer resolves but is still listed dangles: its
        // manifest went while the registry failed to untag it. Overwrite it
        // with a fresh dummy and delete that, so the tag is really gone.
        let mut attempts = 0;
        while now.is_none() && attempts < 3 && self.listed(repo, tag).await? {
            attempts += 1;
            tracing::warn!(
                repository = repo,
                tag,
                "tag dangles after a delete; removing it with a fresh dummy"
            );
            let dummy = Dummy::new(Family::of(&e.original_media_type), repo, tag);
            self.api.upload_blob(repo, dummy.config.clone()).await?;
            self.put_dummy(repo, tag, &dummy).await?;
            self.delete_dummy(repo, &dummy.digest).await?;
            self.api.delete_blob(repo, &dummy.config_digest).await?;
            now = self.api.resolve(repo, tag).await?;
        }
        let (outcome, step) = match now {
            None => (Recovered::Removed, JournalStep::Removed),
            Some(d) if d == e.original_digest => (Recovered::RolledBack, JournalStep::RolledBack),
            Some(_) => (Recovered::Superseded, JournalStep::Superseded),
        };
        if outcome == Recovered::Removed {
            let original = self.api.manifest(repo, &e.original_digest).await?;
            let bytes = original.map(|m| m.bytes.to_vec());
            self.record(
                removal(
                    repo,
                    tag,
                    &e.original_digest,
                    &e.original_media_type,
                    bytes,
                    &e.account,
                ),
                Some(e.id),
            )
            .await?;
        } else {
            let (state, id) = (self.state.clone(), e.id);
            blocking(move || state.journal_close(id, step)).await?;
        }
        tracing::info!(
            repository = repo,
            tag,
            outcome = step.as_str(),
            "tag delete journal entry recovered"
        );
        Ok(outcome)
    }

    /// Finishes or rolls back every delete a crash left open: at start, and
    /// periodically when replicas share the state (the entries of a replica
    /// that died). Only entries this replica claimed from dead owners are
    /// touched, never its own deletes in flight. Each affected tag stays
    /// locked (in a cluster, on every replica) until its entry is resolved;
    /// when the registry cannot be reached the entry is retried in the
    /// background, still locked.
    pub async fn recover(self: &Arc<Self>) -> Result<usize, TagDeleteError> {
        let state = self.state.clone();
        let mut orphans = blocking(move || state.claim_orphans()).await?;
        self.staging
            .unlink_leftovers(std::mem::take(&mut orphans.configs))
            .await;
        let open = std::mem::take(&mut orphans.entries);
        let n = open.len();
        // Unlink every dummy config, then give requests of the process that
        // died one settle time to land, once for all entries (nothing is
        // served yet).
        if n > 0 {
            for e in &open {
                if let Err(err) = self
                    .api
                    .delete_blob(&e.repository, &e.dummy_config_digest)
                    .await
                {
                    tracing::warn!(repository = %e.repository, tag = %e.tag, error = %err, "cannot unlink a dummy config yet");
                }
            }
            tokio::time::sleep(IN_FLIGHT_SETTLE).await;
        }
        for e in open {
            let dead = orphans.claimed_from.get(&e.id).cloned();
            let mut guard = self.lock_here(&e.repository, &e.tag, dead.as_deref()).await;
            if let Err(err) = self
                .lock_others(&mut guard, &e.repository, &e.tag, dead.as_deref())
                .await
            {
                tracing::error!(repository = %e.repository, tag = %e.tag, error = %err, "cannot lock a tag on every replica to recover its delete yet");
                self.recover_locking_later(e, dead, guard);
                continue;
            }
            if let Err(err) = self.recover_entry(&e, false).await {
                tracing::error!(repository = %e.repository, tag = %e.tag, error = %err, "cannot recover a tag delete yet");
                self.recover_later(e, guard);
            }
        }
        Ok(n)
    }

    /// Takes the other replicas' locks of `e`'s tag in the background,
    /// retrying, holding `guard` (this replica's) all the while; then
    /// recovers `e` as [`TagDeleter::recover`] does.
    fn recover_locking_later(
        self: &Arc<Self>,
        e: JournalEntry,
        dead: Option<String>,
        mut guard: TagGuard,
    ) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut wait = Duration::from_secs(1);
            loop {
                tokio::time::sleep(wait).await;
                match me
                    .lock_others(&mut guard, &e.repository, &e.tag, dead.as_deref())
                    .await
                {
                    Ok(()) => {
                        if let Err(err) = me.recover_entry(&e, false).await {
                            tracing::error!(repository = %e.repository, tag = %e.tag, error = %err, "cannot recover a tag delete yet");
                            me.recover_later(e, guard);
                        }
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(repository = %e.repository, tag = %e.tag, error = %err, "cannot lock a tag on every replica to recover its delete yet")
                    }
                }
                wait = (wait * 2).min(Duration::from_secs(60));
            }
        });
    }

    /// Retries the recovery of `e` in the background until it succeeds,
    /// holding `guard` (the tag's write lock) all the while, so the tag is
    /// not served while its delete is unresolved.
    fn recover_later(self: &Arc<Self>, e: JournalEntry, guard: TagGuard) {
        tracing::warn!(repository = %e.repository, tag = %e.tag, "retrying the recovery of a tag delete in the background; the tag stays locked");
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let _guard = guard;
            let mut wait = Duration::from_secs(1);
            loop {
                tokio::time::sleep(wait).await;
                match me.recover_entry(&e, true).await {
                    Ok(_) => return,
                    Err(err) => {
                        tracing::warn!(repository = %e.repository, tag = %e.tag, error = %err, "tag delete recovery retry failed")
                    }
                }
                wait = (wait * 2).min(Duration::from_secs(60));
            }
        });
    }

    /// Points `repo:tag` at the digest it had before its last removal, by a
    /// manifest PUT of the original bytes.
    pub async fn restore(
        &self,
        repo: &RepoName,
        tag: &Tag,
        account: &str,
    ) -> Result<Deletion, TagDeleteError> {
        let (repo, tag) = (repo.as_str(), tag.as_str());
        let _lock = self.lock_everywhere(repo, tag, None).await?;
        let (state, r, t) = (self.state.clone(), repo.to_owned(), tag.to_owned());
        let last = blocking(move || state.last_deletion(&r, &t))
            .await?
            .ok_or_else(|| TagDeleteError::NothingToRestore(format!("{repo}:{tag}")))?;
        if self.api.resolve(repo, tag).await?.is_some() {
            return Err(TagDeleteError::TagExists(format!("{repo}:{tag}")));
        }
        // Prefer the registry's copy (it proves the manifest still exists);
        // the recorded bytes are the same by digest.
        let bytes = match self.api.manifest(repo, &last.digest).await? {
            Some(m) => m.bytes,
            None => {
                return Err(TagDeleteError::ManifestGone(format!(
                    "{repo}@{}",
                    last.digest
                )))
            }
        };
        self.api
            .put_manifest(repo, tag, &last.media_type, bytes)
            .await?;
        let (state, id) = (self.state.clone(), last.id);
        blocking(move || state.mark_restored(id)).await?;
        tracing::info!(target: "regate::audit", event = "tag_restored", repository = repo, tag, digest = %last.digest, account);
        Ok(last)
    }

    /// Refuses a digest delete that would remove a protected tag, and with
    /// `delete.protect_shared_digests` one that would remove any tag.
    pub async fn check_digest_delete(
        &self,
        repo: &RepoName,
        digest: &str,
    ) -> Result<(), TagDeleteError> {
        let repo = repo.as_str();
        if !self.protect_shared_digests && !self.protect.any_for(repo) {
            return Ok(());
        }
        let tags = match self.api.tags(repo).await? {
            Ok(t) => t,
            Err(_) => return Ok(()), // unknown repository: the registry will answer
        };
        let mut tagged = Vec::new();
        for chunk in tags.chunks(16) {
            let found = futures_util::future::join_all(
                chunk
                    .iter()
                    .map(|t| async move { (t, self.api.resolve(repo, t).await) }),
            )
            .await;
            for (t, r) in found {
                if r?.as_deref() == Some(digest) {
                    tagged.push(t.clone());
                }
            }
        }
        if let Some((t, rule)) = tagged
            .iter()
            .find_map(|t| Some((t, self.protect.protecting(repo, t)?)))
        {
            return Err(TagDeleteError::Protected {
                tag: format!("{repo}:{t}"),
                rule: format!("{} (deleting {digest} would untag it)", rule.name()),
            });
        }
        if tagged.is_empty() || !self.protect_shared_digests {
            Ok(())
        } else {
            tagged.sort();
            Err(TagDeleteError::SharedDigest {
                digest: digest.to_owned(),
                tags: tagged,
            })
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovered {
    Removed,
    RolledBack,
    Superseded,
}

/// A history record of one removal.
fn removal(
    repo: &str,
    tag: &str,
    digest: &str,
    media_type: &str,
    manifest: Option<Vec<u8>>,
    account: &str,
) -> Deletion {
    Deletion {
        id: 0,
        repository: repo.to_owned(),
        tag: tag.to_owned(),
        digest: digest.to_owned(),
        media_type: media_type.to_owned(),
        manifest,
        account: account.to_owned(),
        deleted_at: 0,
        restored_at: None,
    }
}
