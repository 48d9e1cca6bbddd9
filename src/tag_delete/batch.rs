//! Removing many tags of one repository at once (`regate tags rm` with many
//! tags, `POST /v2/<name>/_regate/delete`), with the guarantees of a single
//! delete and a fraction of its registry calls.
//!
//! A registry without a tag delete of its own deletes a manifest by digest
//! together with every tag that points at it. One delete uses that with a
//! dummy unique to it; a batch points all its tags at one dummy per manifest
//! family and deletes each dummy once, so N tags cost about 2N + 8 registry
//! calls instead of about 10N, one journal fsync and one scan of the
//! repository's tags by the registry per dummy. Every tag has its own journal
//! entry (naming the shared dummy), written while the registry's own tag
//! delete is tried on the first tag (as a single delete does), so a crash at
//! any step, that one included, is finished or rolled back per tag by the
//! ordinary recovery: deleting the shared dummy only removes tags that were
//! all meant to go.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use std::future::Future;

use futures_util::future::join_all;

use super::{removal, Dummy, Family, Removed, TagDeleteError, TagDeleter};
use crate::registry_api::{Manifest, NativeTagDelete};
use crate::route::{RepoName, Tag};
use crate::state::{blocking, JournalEntry, JournalStep};
use crate::tag_locks::TagGuard;

/// The most tags one batch takes (the CLI sends batches of 100).
pub const MAX_BATCH: usize = 1000;
/// Registry calls of one batch in flight at once.
const PARALLEL: usize = 8;

/// What became of one tag of a batch.
pub type TagOutcome = (String, Result<Removed, TagDeleteError>);

/// Runs `f` on every item, [`PARALLEL`] at a time; results in item order.
/// (Chunks of `join_all` rather than a buffered stream: a stream of
/// borrowing closures makes the request future lose `Send`.)
pub(super) async fn in_parallel<I: Copy, F: Future>(
    items: &[I],
    f: impl Fn(I) -> F,
) -> Vec<F::Output> {
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(PARALLEL) {
        out.extend(join_all(chunk.iter().map(|i| f(*i))).await);
    }
    out
}

impl TagDeleter {
    /// Removes `tags` (and nothing else) from `repo`; one outcome per distinct
    /// tag, in sorted order. Runs as its own task, to the end even when the
    /// client goes away (as [`TagDeleter::delete`] does).
    pub async fn delete_many(
        self: &Arc<Self>,
        repo: &RepoName,
        tags: &[Tag],
        account: &str,
    ) -> Vec<TagOutcome> {
        self.delete_many_expecting(repo, tags, account, None).await
    }

    /// [`TagDeleter::delete_many`], removing a tag only while it points at
    /// the digest `expect` names for it (checked under its lock): a tag
    /// pushed again since a retention plan is left alone (409).
    pub async fn delete_many_expecting(
        self: &Arc<Self>,
        repo: &RepoName,
        tags: &[Tag],
        account: &str,
        expect: Option<HashMap<String, String>>,
    ) -> Vec<TagOutcome> {
        let (me, repo, tags, account) = (
            Arc::clone(self),
            repo.clone(),
            tags.to_vec(),
            account.to_owned(),
        );
        let names: Vec<String> = tags.iter().map(|t| t.as_str().to_owned()).collect();
        match tokio::spawn(async move {
            me.delete_many_now(&repo, &tags, &account, expect.as_ref())
                .await
        })
        .await
        {
            Ok(out) => out,
            Err(e) => names
                .into_iter()
                .map(|t| (t, Err(TagDeleteError::Task(e.to_string()))))
                .collect(),
        }
    }

    async fn delete_many_now(
        self: &Arc<Self>,
        repo: &RepoName,
        tags: &[Tag],
        account: &str,
        expect: Option<&HashMap<String, String>>,
    ) -> Vec<TagOutcome> {
        let repo = repo.as_str();
        let mut names: Vec<&str> = tags.iter().map(Tag::as_str).collect();
        names.sort_unstable();
        names.dedup();
        let mut out: Vec<TagOutcome> = Vec::with_capacity(names.len());
        names.retain(|t| match self.check_protected(repo, t) {
            Ok(()) => true,
            Err(e) => {
                out.push(((*t).to_owned(), Err(e)));
                false
            }
        });
        // Sorted order: two batches never wait on each other in a cycle.
        let mut locks = HashMap::with_capacity(names.len());
        for t in &names {
            locks.insert(*t, self.locks.write(repo, t).await);
        }
        // In a cluster, every live replica holds the tags' locks too, as
        // long as the local guards (a recovery retried later keeps one).
        if let Some(cluster) = self.cluster.get() {
            for t in &names {
                match cluster.lock_tag_everywhere(repo, t).await {
                    Ok(l) => {
                        if let Some(guard) = locks.get_mut(t) {
                            guard.hold_also(l);
                        }
                    }
                    Err(e) => {
                        out.extend(
                            names.iter().map(|t| {
                                ((*t).to_owned(), Err(TagDeleteError::Cluster(e.shared())))
                            }),
                        );
                        out.sort_by(|a, b| a.0.cmp(&b.0));
                        return out;
                    }
                }
            }
        }
        let found = in_parallel(
            &names,
            |t| async move { (t, self.api.manifest(repo, t).await) },
        )
        .await;
        let mut originals = Vec::new();
        for (t, r) in found {
            let moved = |m: &Manifest| {
                expect
                    .and_then(|e| e.get(t))
                    .filter(|want| **want != m.digest)
            };
            match r {
                Ok(Some(m)) if moved(&m).is_some() => out.push((
                    t.to_owned(),
                    Err(TagDeleteError::Moved {
                        tag: format!("{repo}:{t}"),
                        expected: moved(&m).cloned().unwrap_or_default(),
                        now: m.digest.clone(),
                    }),
                )),
                Ok(Some(m)) => originals.push((t, m)),
                Ok(None) => out.push((
                    t.to_owned(),
                    Err(TagDeleteError::NotFound(format!("{repo}:{t}"))),
                )),
                Err(e) => out.push((t.to_owned(), Err(e.into()))),
            }
        }
        if originals.is_empty() {
            out.sort_by(|a, b| a.0.cmp(&b.0));
            return out;
        }
        // One dummy per manifest family, and every tag's intent journalled
        // (one fsync) while the registry's own tag delete is tried on one
        // tag, as a single delete does: a crash at any point after is
        // finished or rolled back per tag by the recovery.
        let made_for = format!("({} tags)", originals.len());
        let mut dummies: BTreeMap<bool, Dummy> = BTreeMap::new();
        for (_, m) in &originals {
            let family = Family::of(&m.media_type);
            dummies
                .entry(family == Family::Oci)
                .or_insert_with(|| Dummy::new(family, repo, &made_for));
        }
        let mut entries: Vec<JournalEntry> = originals
            .iter()
            .map(|(t, m)| {
                let dummy = &dummies[&(Family::of(&m.media_type) == Family::Oci)];
                JournalEntry {
                    id: 0,
                    repository: repo.to_owned(),
                    tag: (*t).to_owned(),
                    original_digest: m.digest.clone(),
                    original_media_type: m.media_type.clone(),
                    dummy_digest: dummy.digest.clone(),
                    dummy_config_digest: dummy.config_digest.clone(),
                    step: JournalStep::Intent,
                    account: account.to_owned(),
                }
            })
            .collect();
        let probe = originals[0].0;
        let (state, to_write) = (self.state.clone(), entries.clone());
        let (ids, native) = tokio::join!(
            blocking(move || state.journal_begin_many(&to_write)),
            self.api.delete_tag_native(repo, probe),
        );
        match ids {
            Ok(ids) => entries.iter_mut().zip(ids).for_each(|(e, id)| e.id = id),
            Err(e) => {
                let msg = e.to_string();
                let mut rest = originals.iter();
                if let Ok(NativeTagDelete::Deleted) = native {
                    // Gone all the same: keep it for undo if the state can.
                    let (t, m) = rest.next().expect("not empty");
                    out.push(self.record_native(repo, t, m, account, None).await);
                }
                out.extend(rest.map(|(t, _)| {
                    let err = TagDeleteError::Verify(format!("nothing was changed: {msg}"));
                    ((*t).to_owned(), Err(err))
                }));
                out.sort_by(|a, b| a.0.cmp(&b.0));
                return out;
            }
        }
        self.faults.at("after_native");
        let mut work: Vec<(&str, Manifest, JournalEntry)> = originals
            .into_iter()
            .zip(entries)
            .map(|((t, m), e)| (t, m, e))
            .collect();
        match native {
            Ok(NativeTagDelete::NotImplemented) => {
                out.extend(
                    self.overwrite_and_delete_many(repo, work, dummies, account, &mut locks)
                        .await,
                );
            }
            Ok(NativeTagDelete::Deleted) => {
                let (t, m, e) = work.remove(0);
                out.push(self.record_native(repo, t, &m, account, Some(e.id)).await);
                let rest: Vec<&(&str, Manifest, JournalEntry)> = work.iter().collect();
                let natives = in_parallel(&rest, |(t, m, e)| async move {
                    self.native_one(repo, t, m, e, account).await
                })
                .await;
                for (outcome, later) in natives {
                    if let Some(e) = later {
                        if let Some(guard) = locks.remove(e.tag.as_str()) {
                            self.recover_later(e, guard);
                        }
                    }
                    out.push(outcome);
                }
            }
            Ok(NativeTagDelete::Disabled) => {
                let ids: Vec<i64> = work.iter().map(|(_, _, e)| e.id).collect();
                out.extend(
                    self.close_all(
                        &ids,
                        JournalStep::Refused,
                        work.iter().map(|(t, _, _)| *t),
                        || TagDeleteError::DeletesDisabled,
                    )
                    .await,
                );
            }
            Ok(NativeTagDelete::NotFound) => {
                let (first, _, e) = work.remove(0);
                out.extend(
                    self.close_all(&[e.id], JournalStep::NotFound, [first], || {
                        TagDeleteError::NotFound(format!("{repo}:{first}"))
                    })
                    .await,
                );
                out.extend(
                    self.overwrite_and_delete_many(repo, work, dummies, account, &mut locks)
                        .await,
                );
            }
            Err(err) => {
                // What did the registry do with the probe? Ask it (no dummy
                // was sent); the other tags were not touched.
                let (t, m, e) = work.remove(0);
                let msg = err.to_string();
                let r = match self.recover_entry(&e, false).await {
                    Ok(super::Recovered::Removed) => Ok(Removed {
                        digest: m.digest.clone(),
                        native: true,
                    }),
                    Ok(_) => Err(TagDeleteError::Upstream(msg.clone())),
                    Err(_) => {
                        if let Some(guard) = locks.remove(t) {
                            self.recover_later(e.clone(), guard);
                        }
                        Err(TagDeleteError::Upstream(msg.clone()))
                    }
                };
                out.push((t.to_owned(), r));
                let ids: Vec<i64> = work.iter().map(|(_, _, e)| e.id).collect();
                out.extend(
                    self.close_all(
                        &ids,
                        JournalStep::RolledBack,
                        work.iter().map(|(t, _, _)| *t),
                        || TagDeleteError::Upstream(msg.clone()),
                    )
                    .await,
                );
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    async fn record_native(
        &self,
        repo: &str,
        tag: &str,
        m: &Manifest,
        account: &str,
        close_journal: Option<i64>,
    ) -> TagOutcome {
        let r = self
            .record_removed(repo, tag, m, account, close_journal, true)
            .await;
        (tag.to_owned(), r)
    }

    /// One more tag of a batch whose probe the registry deleted itself; with
    /// the entry to recover in the background when the registry cannot say
    /// what became of the tag.
    async fn native_one(
        &self,
        repo: &str,
        tag: &str,
        m: &Manifest,
        e: &JournalEntry,
        account: &str,
    ) -> (TagOutcome, Option<JournalEntry>) {
        let closed = |step: JournalStep, err: TagDeleteError| async move {
            self.close_entries(&[e.id], step).await;
            ((tag.to_owned(), Err(err)), None)
        };
        match self.api.delete_tag_native(repo, tag).await {
            Ok(NativeTagDelete::Deleted) => (
                self.record_native(repo, tag, m, account, Some(e.id)).await,
                None,
            ),
            Ok(NativeTagDelete::NotFound) => {
                closed(
                    JournalStep::NotFound,
                    TagDeleteError::NotFound(format!("{repo}:{tag}")),
                )
                .await
            }
            Ok(_) => closed(JournalStep::Refused, TagDeleteError::DeletesDisabled).await,
            Err(err) => match self.recover_entry(e, false).await {
                Ok(super::Recovered::Removed) => {
                    let removed = Removed {
                        digest: m.digest.clone(),
                        native: true,
                    };
                    ((tag.to_owned(), Ok(removed)), None)
                }
                Ok(_) => ((tag.to_owned(), Err(err.into())), None),
                Err(_) => ((tag.to_owned(), Err(err.into())), Some(e.clone())),
            },
        }
    }

    /// Closes journal entries of tags left as they were (one transaction).
    /// A close that fails leaves the entry to the next start's recovery,
    /// which finds the tag at its original.
    async fn close_entries(&self, ids: &[i64], step: JournalStep) {
        let (state, ids) = (self.state.clone(), ids.to_vec());
        if let Err(e) = blocking(move || state.journal_close_many(&ids, step)).await {
            tracing::warn!(error = %e, step = step.as_str(), "cannot close tag delete journal entries yet; the next start will");
        }
    }

    /// Closes the entries `ids` with `step`; every tag of `tags` fails with `err`.
    async fn close_all<'t>(
        &self,
        ids: &[i64],
        step: JournalStep,
        tags: impl IntoIterator<Item = &'t str>,
        err: impl Fn() -> TagDeleteError,
    ) -> Vec<TagOutcome> {
        self.close_entries(ids, step).await;
        tags.into_iter()
            .map(|t| (t.to_owned(), Err(err())))
            .collect()
    }

    /// The fallback for a whole batch: one dummy per manifest family (the
    /// one its tags' journal entries name).
    async fn overwrite_and_delete_many<'t>(
        self: &Arc<Self>,
        repo: &str,
        work: Vec<(&'t str, Manifest, JournalEntry)>,
        mut dummies: BTreeMap<bool, Dummy>,
        account: &str,
        locks: &mut HashMap<&'t str, TagGuard>,
    ) -> Vec<TagOutcome> {
        let mut families: BTreeMap<bool, Vec<(&'t str, Manifest, JournalEntry)>> = BTreeMap::new();
        for w in work {
            families
                .entry(Family::of(&w.1.media_type) == Family::Oci)
                .or_default()
                .push(w);
        }
        let mut out = Vec::new();
        for (oci, group) in families {
            let dummy = dummies.remove(&oci).expect("a dummy for every family");
            out.extend(self.one_dummy_for(repo, group, dummy, account, locks).await);
        }
        out
    }

    /// One family's tags, after their intent: overwritten with one dummy,
    /// verified, then recorded, or each finished or rolled back.
    /// `locks`: the batch's tag locks; a tag whose recovery fails keeps its
    /// lock in the background retry.
    async fn one_dummy_for<'t>(
        self: &Arc<Self>,
        repo: &str,
        work: Vec<(&'t str, Manifest, JournalEntry)>,
        dummy: Dummy,
        account: &str,
        locks: &mut HashMap<&'t str, TagGuard>,
    ) -> Vec<TagOutcome> {
        let (group, entries): (Vec<(&'t str, Manifest)>, Vec<JournalEntry>) =
            work.into_iter().map(|(t, m, e)| ((t, m), e)).unzip();
        self.faults.at("after_intent");
        let tags: Vec<&str> = group.iter().map(|(t, _)| *t).collect();
        let originals: Vec<&str> = group.iter().map(|(_, m)| m.digest.as_str()).collect();
        let done = match self.overwrite_and_delete(repo, &tags, &dummy, false).await {
            Ok(()) => self.verify(repo, &tags, &originals).await,
            Err(e) => Err(e),
        };
        match done {
            Ok(()) => {
                self.record_batch(repo, &group, &entries, &dummy, account)
                    .await
            }
            Err(err) => {
                self.finish_or_roll_back_each(repo, &group, &entries, err, locks)
                    .await
            }
        }
    }

    /// Record: keeps a verified batch's removals for undo (closing their
    /// journal entries in one transaction) as the answer; the dummy's config
    /// is unlinked after it.
    async fn record_batch(
        &self,
        repo: &str,
        group: &[(&str, Manifest)],
        entries: &[JournalEntry],
        dummy: &Dummy,
        account: &str,
    ) -> Vec<TagOutcome> {
        let records: Vec<_> = group
            .iter()
            .zip(entries)
            .map(|((t, m), e)| {
                (
                    removal(
                        repo,
                        t,
                        &m.digest,
                        &m.media_type,
                        Some(m.bytes.to_vec()),
                        account,
                    ),
                    e.id,
                )
            })
            .collect();
        let state = self.state.clone();
        let saved = blocking(move || state.record_deletions(&records)).await;
        if let Err(e) = saved {
            // The journal entries stay open: the next start records them.
            tracing::warn!(repository = repo, error = %e, "cannot record a batch of tag removals yet");
        }
        tracing::info!(target: "regate::audit", event = "tags_deleted", repository = %repo, tags = group.len(), account = %account);
        self.staging.unlink_later(repo, &dummy.config_digest).await;
        group
            .iter()
            .map(|(t, m)| {
                let removed = Removed {
                    digest: m.digest.clone(),
                    native: false,
                };
                ((*t).to_owned(), Ok(removed))
            })
            .collect()
    }

    /// A batch that failed while overwriting or verifying (`err`): each tag
    /// finished or rolled back now, or later when the registry cannot be
    /// reached (its lock, taken from `locks`, kept by the retry).
    async fn finish_or_roll_back_each<'t>(
        self: &Arc<Self>,
        repo: &str,
        group: &[(&'t str, Manifest)],
        entries: &[JournalEntry],
        err: TagDeleteError,
        locks: &mut HashMap<&'t str, TagGuard>,
    ) -> Vec<TagOutcome> {
        tracing::warn!(repository = repo, error = %err, "a batch of tag deletes failed midway; recovering each tag");
        let mut out = Vec::new();
        for (i, (entry, (t, m))) in entries.iter().zip(group).enumerate() {
            // Let a dummy PUT still in flight land once, before the first.
            let r = match self.recover_entry(entry, i == 0).await {
                Ok(super::Recovered::Removed) => Ok(Removed {
                    digest: m.digest.clone(),
                    native: false,
                }),
                Ok(_) => Err(TagDeleteError::Verify(format!(
                    "{repo}:{t} was left as it was: {err}"
                ))),
                Err(e) => {
                    if let Some(guard) = locks.remove(t) {
                        self.recover_later(entry.clone(), guard);
                    }
                    Err(e)
                }
            };
            out.push(((*t).to_owned(), r));
        }
        out
    }
}
