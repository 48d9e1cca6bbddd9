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
//! entry (naming the shared dummy), so a crash at any step is finished or
//! rolled back per tag by the ordinary recovery: deleting the shared dummy
//! only removes tags that were all meant to go.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use std::future::Future;

use futures_util::future::join_all;

use super::{removal, Dummy, Family, Removed, TagDeleteError, TagDeleter, TagGuard};
use crate::registry_api::{Manifest, NativeTagDelete};
use crate::route::{RepoName, Tag};
use crate::state::{blocking, JournalEntry};

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
        let (me, repo, tags, account) = (
            Arc::clone(self),
            repo.clone(),
            tags.to_vec(),
            account.to_owned(),
        );
        let names: Vec<String> = tags.iter().map(|t| t.as_str().to_owned()).collect();
        match tokio::spawn(async move { me.delete_many_now(&repo, &tags, &account).await }).await {
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
    ) -> Vec<TagOutcome> {
        let repo = repo.as_str();
        let mut names: Vec<&str> = tags.iter().map(Tag::as_str).collect();
        names.sort_unstable();
        names.dedup();
        // Sorted order: two batches never wait on each other in a cycle.
        let mut locks = HashMap::with_capacity(names.len());
        for t in &names {
            locks.insert(*t, self.locks.write(repo, t).await);
        }
        let mut out: Vec<TagOutcome> = Vec::with_capacity(names.len());
        let found = in_parallel(
            &names,
            |t| async move { (t, self.api.manifest(repo, t).await) },
        )
        .await;
        let mut originals = Vec::new();
        for (t, r) in found {
            match r {
                Ok(Some(m)) => originals.push((t, m)),
                Ok(None) => out.push((
                    t.to_owned(),
                    Err(TagDeleteError::NotFound(format!("{repo}:{t}"))),
                )),
                Err(e) => out.push((t.to_owned(), Err(e.into()))),
            }
        }
        let Some((probe, _)) = originals.first() else {
            out.sort_by(|a, b| a.0.cmp(&b.0));
            return out;
        };
        // The registry's own tag delete, tried on one tag, decides for all.
        match self.api.delete_tag_native(repo, probe).await {
            Ok(NativeTagDelete::NotImplemented) => {
                out.extend(
                    self.overwrite_and_delete_many(repo, originals, account, &mut locks)
                        .await,
                );
            }
            Ok(NativeTagDelete::Deleted) => {
                let (first, rest) = originals.split_at(1);
                out.push(
                    self.record_native(repo, first[0].0, &first[0].1, account)
                        .await,
                );
                let rest: Vec<&(&str, Manifest)> = rest.iter().collect();
                let natives = in_parallel(&rest, |(t, m)| async move {
                    match self.api.delete_tag_native(repo, t).await {
                        Ok(NativeTagDelete::Deleted) => {
                            self.record_native(repo, t, m, account).await
                        }
                        Ok(NativeTagDelete::NotFound) => (
                            (*t).to_owned(),
                            Err(TagDeleteError::NotFound(format!("{repo}:{t}"))),
                        ),
                        Ok(_) => ((*t).to_owned(), Err(TagDeleteError::DeletesDisabled)),
                        Err(e) => ((*t).to_owned(), Err(e.into())),
                    }
                })
                .await;
                out.extend(natives);
            }
            Ok(NativeTagDelete::Disabled) => {
                out.extend(
                    originals
                        .iter()
                        .map(|(t, _)| ((*t).to_owned(), Err(TagDeleteError::DeletesDisabled))),
                );
            }
            Ok(NativeTagDelete::NotFound) => {
                let first = originals.remove(0).0;
                out.push((
                    first.to_owned(),
                    Err(TagDeleteError::NotFound(format!("{repo}:{first}"))),
                ));
                out.extend(
                    self.overwrite_and_delete_many(repo, originals, account, &mut locks)
                        .await,
                );
            }
            Err(e) => {
                let msg = e.to_string();
                out.extend(
                    originals.iter().map(|(t, _)| {
                        ((*t).to_owned(), Err(TagDeleteError::Upstream(msg.clone())))
                    }),
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
    ) -> TagOutcome {
        let r = self.record_removed(repo, tag, m, account, None, true).await;
        (tag.to_owned(), r)
    }

    /// The fallback for a whole batch: one dummy per manifest family.
    async fn overwrite_and_delete_many<'t>(
        self: &Arc<Self>,
        repo: &str,
        originals: Vec<(&'t str, Manifest)>,
        account: &str,
        locks: &mut HashMap<&'t str, TagGuard>,
    ) -> Vec<TagOutcome> {
        let mut families: BTreeMap<bool, Vec<(&'t str, Manifest)>> = BTreeMap::new();
        for (t, m) in originals {
            families
                .entry(Family::of(&m.media_type) == Family::Oci)
                .or_default()
                .push((t, m));
        }
        let mut out = Vec::new();
        for (_, group) in families {
            out.extend(self.one_dummy_for(repo, group, account, locks).await);
        }
        out
    }

    /// `locks`: the batch's tag locks; a tag whose recovery fails keeps its
    /// lock in the background retry.
    async fn one_dummy_for<'t>(
        self: &Arc<Self>,
        repo: &str,
        group: Vec<(&'t str, Manifest)>,
        account: &str,
        locks: &mut HashMap<&'t str, TagGuard>,
    ) -> Vec<TagOutcome> {
        let family = Family::of(&group[0].1.media_type);
        let dummy = Dummy::new(family, repo, &format!("({} tags)", group.len()));
        let mut entries: Vec<JournalEntry> = group
            .iter()
            .map(|(t, m)| JournalEntry {
                id: 0,
                repository: repo.to_owned(),
                tag: (*t).to_owned(),
                original_digest: m.digest.clone(),
                original_media_type: m.media_type.clone(),
                dummy_digest: dummy.digest.clone(),
                dummy_config_digest: dummy.config_digest.clone(),
                step: "intent".into(),
                account: account.to_owned(),
            })
            .collect();
        let state = self.state.clone();
        let to_write = entries.clone();
        match blocking(move || state.journal_begin_many(&to_write)).await {
            Ok(ids) => entries.iter_mut().zip(ids).for_each(|(e, id)| e.id = id),
            Err(e) => {
                let msg = e.to_string();
                return group
                    .iter()
                    .map(|(t, _)| {
                        (
                            (*t).to_owned(),
                            Err(TagDeleteError::Verify(format!(
                                "nothing was changed: {msg}"
                            ))),
                        )
                    })
                    .collect();
            }
        }
        self.faults.at("after_intent");
        let tags: Vec<&str> = group.iter().map(|(t, _)| *t).collect();
        let originals: Vec<&str> = group.iter().map(|(_, m)| m.digest.as_str()).collect();
        let done = match self.overwrite_and_delete(repo, &tags, &dummy, false).await {
            Ok(()) => self.verify(repo, &tags, &originals).await,
            Err(e) => Err(e),
        };
        match done {
            Ok(()) => {
                let records: Vec<_> = group
                    .iter()
                    .zip(&entries)
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
            Err(err) => {
                tracing::warn!(repository = repo, error = %err, "a batch of tag deletes failed midway; recovering each tag");
                let mut out = Vec::new();
                for (i, (entry, (t, m))) in entries.iter().zip(&group).enumerate() {
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
    }
}
