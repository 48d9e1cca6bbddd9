//! Retention: deleting old tags by the `[[retention]]` rules, with a plan to
//! read first and an undo after.
//!
//! Owns [`Retention`], which gathers the facts (`dates`: every tag of every
//! repository with its push date and its source, and its last pull), makes
//! the plan (`plan`, pure) and carries it out (`apply`, through the tag
//! delete's batch path, audited, restorable), keeping a summary of every run
//! in the state; the push and pull times regate sees (`recorder`); the
//! admin API (`admin_api`); and scheduled runs (`schedule`). In a cluster
//! an applied run holds the cluster's retention lease (one at a time across
//! replicas; another replica's run is refused naming it) and each scheduled
//! time is run by one replica. Calls the registry through [`RegistryApi`], the
//! state through [`State`], deletes through [`TagDeleter`].

pub mod plan;
pub mod recorder;

pub use plan::{DateSource, Plan, RepoFacts, TagFacts};
pub use recorder::Recorder;
pub mod admin_api;
pub mod apply;
pub mod dates;
pub mod schedule;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cluster::RunKind;
use crate::config::retention::RetentionRule;
use crate::protect::Protections;
use crate::registry_api::ApiError;
use crate::state::{blocking, RetentionRun, StateError};
use crate::tag_delete::TagDeleter;
pub use apply::Outcome;

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("{0}")]
    Gather(#[from] dates::GatherError),
    #[error("{0}")]
    Api(#[from] ApiError),
    #[error("{0}")]
    State(#[from] StateError),
    /// In a cluster: another replica's run holds the retention lease, or
    /// PostgreSQL cannot say.
    #[error("{0}")]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// What a run is asked to do (`POST /admin/retention`).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Only plan.
    #[serde(default)]
    pub dry_run: bool,
    /// Past the max_delete_fraction guard.
    #[serde(default)]
    pub force: bool,
    /// Only these repositories (default: every one).
    #[serde(default)]
    pub repositories: Option<Vec<String>>,
    /// Delete only these, and only while the plan still has them at this digest.
    #[serde(default)]
    pub expect: Option<Vec<Expected>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    pub repository: String,
    pub tag: String,
    pub digest: String,
}

/// A run's answer: the plan, and for an applied run what became of each deletion.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The history id (applied runs only).
    pub id: Option<i64>,
    pub dry_run: bool,
    pub forced: bool,
    #[serde(flatten)]
    pub plan: Plan,
    /// Expected deletions the plan no longer has (kept as they are).
    pub not_planned: Vec<Expected>,
    pub results: Vec<Outcome>,
    pub deleted: usize,
    pub failed: usize,
}

/// The retention service of a running regate.
pub struct Retention {
    pub rules: Vec<RetentionRule>,
    pub protect: Protections,
    pub sources: dates::Sources,
    pub tags: Arc<TagDeleter>,
    pub times: Arc<Recorder>,
    pub auth: Arc<crate::auth::Auth>,
    /// One run at a time on this replica (the cluster's lease is taken after it).
    running: tokio::sync::Mutex<()>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Retention {
    pub fn new(
        rules: Vec<RetentionRule>,
        sources: dates::Sources,
        tags: Arc<TagDeleter>,
        times: Arc<Recorder>,
        auth: Arc<crate::auth::Auth>,
    ) -> Self {
        Retention {
            rules,
            protect: tags.protections().clone(),
            sources,
            tags,
            times,
            auth,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The plan for the repositories of `only` (default: the catalog).
    pub async fn plan(&self, only: Option<&[String]>, force: bool) -> Result<Plan, RetentionError> {
        // Pulls noted in memory count too.
        if let Err(e) = self.times.flush().await {
            tracing::warn!(error = %e, "cannot write noted pulls before planning; the plan may miss the latest pulls");
        }
        let mut repos = self.sources.api.catalog().await?;
        if let Some(only) = only {
            let only: HashSet<&str> = only.iter().map(String::as_str).collect();
            repos.retain(|r| only.contains(r.as_str()));
        }
        repos.sort();
        let facts = self.sources.gather(&repos).await?;
        let mut plan = plan::plan(&self.rules, &self.protect, &facts, now(), force);
        if only.is_some() {
            // A rule matching none of a few named repositories is no news.
            plan.warnings.clear();
        }
        Ok(plan)
    }

    /// Plans and, unless a dry run, deletes; an applied run is kept in the
    /// history and every deletion audited (`client`, `account`).
    pub async fn run(
        &self,
        req: RunRequest,
        account: &str,
        client: IpAddr,
    ) -> Result<RunReport, RetentionError> {
        let _one = self.running.lock().await;
        // In a cluster, one applied run at a time across the replicas.
        let lease = match self.tags.cluster() {
            Some(c) if !req.dry_run => Some(c.run_lease(RunKind::Retention, account).await?),
            _ => None,
        };
        let started = now();
        let mut plan = self.plan(req.repositories.as_deref(), req.force).await?;
        let mut not_planned = Vec::new();
        if let Some(expect) = &req.expect {
            let want: HashSet<&Expected> = expect.iter().collect();
            let planned: HashSet<Expected> = plan
                .delete
                .iter()
                .map(|d| Expected {
                    repository: d.repository.clone(),
                    tag: d.tag.clone(),
                    digest: d.digest.clone(),
                })
                .collect();
            plan.delete.retain(|d| {
                want.contains(&Expected {
                    repository: d.repository.clone(),
                    tag: d.tag.clone(),
                    digest: d.digest.clone(),
                })
            });
            not_planned = expect
                .iter()
                .filter(|e| !planned.contains(e))
                .cloned()
                .collect();
        }
        let mut report = RunReport {
            id: None,
            dry_run: req.dry_run,
            forced: req.force,
            plan,
            not_planned,
            results: Vec::new(),
            deleted: 0,
            failed: 0,
        };
        if req.dry_run {
            return Ok(report);
        }
        let audit = self.auth.audit();
        let results = apply::apply(&self.tags, &report.plan.delete, account, |done| {
            for o in done {
                let mut event = crate::audit::Event::new("delete", client);
                event.account = (!account.is_empty()).then_some(account);
                event.method = Some("DELETE");
                event.repository = Some(&o.repository);
                event.reference = Some(&o.tag);
                event.digest = Some(&o.digest);
                event.status = Some(o.http_status);
                event.reason = Some("retention");
                audit.record(&event);
            }
        })
        .await;
        report.deleted = results.iter().filter(|o| o.status == "deleted").count();
        report.failed = results.len() - report.deleted;
        report.results = results;
        let mut repositories: Vec<&str> = report
            .results
            .iter()
            .map(|o| o.repository.as_str())
            .collect();
        repositories.dedup();
        let run = RetentionRun {
            id: 0,
            started_at: started,
            finished_at: now(),
            dry_run: false,
            forced: req.force,
            account: account.to_owned(),
            planned: report.plan.delete.len() as i64,
            deleted: report.deleted as i64,
            failed: report.failed as i64,
            skipped: report.plan.skipped.len() as i64,
            summary: serde_json::json!({
                "repositories": repositories,
                "skipped": report.plan.skipped,
                "warnings": report.plan.warnings,
                "failed": report.results.iter().filter(|o| o.status != "deleted").collect::<Vec<_>>(),
            }),
        };
        let state = self.sources.state.clone();
        report.id = Some(blocking(move || state.retention_run_insert(&run)).await?);
        tracing::info!(
            target: "regate::audit",
            event = "retention_run",
            account,
            deleted = report.deleted,
            failed = report.failed,
            skipped = report.plan.skipped.len(),
            "retention run applied"
        );
        // Free before the answer: a run asked for right after it starts.
        if let Some(lease) = lease {
            lease.release().await;
        }
        Ok(report)
    }

    /// The last `limit` applied runs, newest first.
    pub async fn history(&self, limit: usize) -> Result<Vec<RetentionRun>, RetentionError> {
        let state = self.sources.state.clone();
        Ok(blocking(move || state.retention_runs(limit)).await?)
    }
}
