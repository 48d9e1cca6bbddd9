//! `fsck`: walks a registry (a regate, or a registry directly) through the
//! distribution API and reports what is broken, per repository.
//!
//! Owns the walk and its report; calls the registry only through a
//! [`RegistryClient`] (the same client, credentials and trust as `regate
//! tags`). The command line around it is `cli::fsck`; tests and the soak test
//! call [`run`] in-process.
//!
//! The walk: the catalog (paginated) or the repositories asked for -> every
//! tag (paginated tag lists), resolved by GET with all four manifest types in
//! `Accept`, the bytes hashed and compared with `Docker-Content-Digest` ->
//! every manifest reached through indexes and manifest lists (children by
//! digest) -> HEAD of every config and layer blob (except foreign,
//! non-distributable and `urls` ones) and of every `subject`. Each digest is
//! checked once per repository, with at most `concurrency` requests at a time.

mod fetch;
mod listing;
mod manifest;
mod repo;
pub mod report;

use futures_util::{StreamExt, TryStreamExt};
use indicatif::ProgressBar;

use crate::client::RegistryClient;
use crate::route::RepoName;
pub use report::{Finding, Problem, RepoReport, Report, Severity};

/// The default number of requests in flight.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// What to walk, and how hard.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only these repositories; empty: every repository of the catalog.
    pub repositories: Vec<String>,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// `n` of catalog and tag-list pages; None: 100 and 1000.
    pub page_size: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            repositories: Vec::new(),
            concurrency: DEFAULT_CONCURRENCY,
            page_size: None,
        }
    }
}

/// Why a walk could not be done (as opposed to what it found broken).
#[derive(Debug, thiserror::Error)]
pub enum FsckError {
    #[error("cannot reach {url}: {detail}. Check the address (http://HOST:PORT for a plain-HTTP registry, HOST:PORT for https) and that the registry runs")]
    Unreachable { url: String, detail: String },
    #[error("{url} answered 401: the registry wants credentials. Pass --user NAME with --password-stdin, set REGATE_USERNAME and REGATE_PASSWORD, or log in with docker/podman")]
    NeedsCredentials { url: String },
    #[error("{url}: access refused ({detail}). Check the user name and password, and that the account may pull every repository (and read the catalog, or name repositories with --repo)")]
    Auth { url: String, detail: String },
    #[error(
        "{url}: cannot list repositories ({detail}). Name the repositories to check with --repo"
    )]
    Catalog { url: String, detail: String },
    #[error("{0:?} is not a repository name (lowercase path components, e.g. team/app)")]
    BadRepository(String),
    #[error("{url} is not a registry: GET /v2/ answered {status}")]
    NotARegistry { url: String, status: u16 },
}

/// Walks the registry behind `client` and reports what is broken. The
/// progress bar's length grows as work is found; pass
/// [`ProgressBar::hidden`] for none.
pub async fn run(
    client: &RegistryClient,
    options: &Options,
    bar: &ProgressBar,
) -> Result<Report, FsckError> {
    for r in &options.repositories {
        RepoName::parse(r).map_err(|_| FsckError::BadRepository(r.clone()))?;
    }
    let f = fetch::Fetcher::new(client, options.concurrency, options.page_size);
    let resp = f
        .send(reqwest::Method::GET, "/v2/", "registry:catalog:*", None)
        .await?;
    if !resp.status().is_success() {
        return Err(FsckError::NotARegistry {
            url: format!("{}/v2/", client.base),
            status: resp.status().as_u16(),
        });
    }
    let repositories = if options.repositories.is_empty() {
        listing::catalog(&f).await?
    } else {
        options.repositories.clone()
    };
    let f = &f;
    let reports: Vec<RepoReport> = futures_util::stream::iter(repositories)
        .map(|r| async move {
            bar.set_message(r.clone());
            repo::check(f, &r, bar).await
        })
        .buffer_unordered(options.concurrency.max(1))
        .try_collect()
        .await?;
    Ok(Report::new(client.base.clone(), reports))
}
