//! The untagged walk of one run, repository by repository, with its progress
//! in the state: each repository is planned, its unreachable manifests
//! deleted (each accepted delete counted), then recorded as finished, so a
//! run cut short by a restart and resumed skips the repositories it finished
//! and replans only the one it was in (whose deletes done are gone from the
//! storage, so they are not redone). The run's record (repositories, tags and
//! revisions walked, time spent, manifests deleted) is updated after each
//! repository, for `GET /admin/gc/<id>`. Calls `untagged` (planning and
//! deleting) and `state` (off the async threads).

use std::collections::HashMap;
use std::time::Instant;

use super::untagged::{self, RepoPlan, UntaggedPlan};
use super::{Gc, GcError, GcRequest};
use crate::registry_api::RegistryApi;
use crate::state::gc_history::{GcRun, WalkedRepo};
use crate::state::{blocking, StateError};

fn panicked(e: tokio::task::JoinError) -> GcError {
    GcError::CommandFailed {
        status: "panicked".into(),
        last_line: e.to_string(),
    }
}

/// Adds one repository's plan to the run's counts.
fn count(run: &mut GcRun, plan: &RepoPlan, dry_run: bool) {
    *run.repositories.get_or_insert(0) += 1;
    *run.tags.get_or_insert(0) += plan.tags as i64;
    *run.revisions.get_or_insert(0) += plan.revisions as i64;
    let deleted = if dry_run {
        plan.delete.len()
    } else {
        plan.deleted()
    };
    *run.manifests_deleted.get_or_insert(0) += deleted as i64;
}

impl Gc {
    /// Walks every repository not finished by an earlier attempt of `run`;
    /// returns the whole run's plan (earlier attempts included).
    pub(super) async fn untagged_walk(
        &self,
        run: &mut GcRun,
        req: GcRequest,
    ) -> Result<UntaggedPlan, GcError> {
        let root = self
            .target
            .storage_root
            .clone()
            .ok_or(GcError::UntaggedNeedsStorage)?;
        let state = self.state.clone();
        let id = run.id;
        let earlier: HashMap<String, WalkedRepo> = blocking(move || state.gc_walk(id))
            .await?
            .into_iter()
            .map(|w| (w.repository.clone(), w))
            .collect();
        let names = {
            let root = root.clone();
            tokio::task::spawn_blocking(move || untagged::repositories(&root))
                .await
                .map_err(panicked)??
        };
        let finished = names
            .iter()
            .filter(|n| earlier.get(*n).is_some_and(|w| w.done))
            .count();
        if !earlier.is_empty() {
            tracing::info!(target: "regate::gc", id, attempt = run.attempts, finished, repositories = names.len(), "untagged walk resumed: repositories finished by an earlier attempt are skipped");
        }
        let api = (!req.dry_run).then_some(&self.target.api);
        let spent_before = run.untagged_ms.unwrap_or(0);
        let started = Instant::now();
        run.repositories = Some(0);
        run.tags = Some(0);
        run.revisions = Some(0);
        run.manifests_deleted = Some(0);
        let mut plan = UntaggedPlan::default();
        for name in names {
            let done_before = earlier.get(&name).filter(|w| w.done);
            let repo = match done_before.and_then(|w| serde_json::from_value(w.report.clone()).ok())
            {
                Some(repo) => repo,
                None => {
                    let deleted_earlier = earlier.get(&name).map_or(0, |w| w.deleted as usize);
                    self.walk_repo(run, &root, &name, deleted_earlier, api)
                        .await?
                }
            };
            count(run, &repo, req.dry_run);
            plan.repositories.push(repo);
            run.untagged_ms = Some(spent_before + started.elapsed().as_millis() as i64);
            self.save_async(run).await;
        }
        Ok(plan)
    }

    /// Plans one repository, deletes what it found (unless `api` is None: a
    /// dry run), records it finished.
    async fn walk_repo(
        &self,
        run: &GcRun,
        root: &std::path::Path,
        name: &str,
        deleted_earlier: usize,
        api: Option<&RegistryApi>,
    ) -> Result<RepoPlan, GcError> {
        let started = Instant::now();
        let mut repo = {
            let (root, name) = (root.to_owned(), name.to_owned());
            tokio::task::spawn_blocking(move || untagged::plan_repo(&root, &name))
                .await
                .map_err(panicked)??
        };
        repo.attempt = run.attempts;
        repo.deleted_earlier = deleted_earlier;
        let id = run.id;
        if let Some(api) = api {
            if !repo.delete.is_empty() {
                self.walk_record(id, &repo, false).await?;
            }
            for digest in repo.delete.clone() {
                match untagged::delete_one(api, name, &digest).await {
                    Ok(()) => {
                        let (state, name) = (self.state.clone(), name.to_owned());
                        if let Err(e) = blocking(move || state.gc_walk_deleted(id, &name)).await {
                            tracing::warn!(target: "regate::gc", id, error = %e, "cannot count an untagged delete in the state");
                        }
                    }
                    Err(e) => repo.failed.push(e),
                }
            }
        }
        repo.walk_ms = started.elapsed().as_millis() as i64;
        self.walk_record(id, &repo, true).await?;
        Ok(repo)
    }

    /// Records a repository's walk as begun (`done` false) or finished.
    async fn walk_record(&self, id: i64, repo: &RepoPlan, done: bool) -> Result<(), StateError> {
        let state = self.state.clone();
        let name = repo.repository.clone();
        let report = serde_json::to_value(repo).unwrap_or_default();
        blocking(move || {
            if done {
                state.gc_walk_finish(id, &name, &report)
            } else {
                state.gc_walk_begin(id, &name, &report)
            }
        })
        .await
    }
}
