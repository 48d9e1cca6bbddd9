//! What `fsck` found: findings per repository, their severity, and the
//! counts of what was checked. Serialisable as the `--json` report.

use serde::Serialize;

/// Errors make the registry broken; warnings are allowed by the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
}

/// One kind of breakage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// Listed in tags/list, but its manifest does not resolve.
    DanglingTag,
    /// The bytes served do not hash to the digest announced or asked for.
    DigestMismatch,
    /// The manifest is not JSON of a manifest type fsck knows.
    UnparsableManifest,
    /// A config or layer blob the manifest refers to is not in the repository.
    MissingBlob,
    /// A manifest an index or manifest list refers to is not in the repository.
    MissingChild,
    /// The tag points at a regate tag-delete dummy manifest.
    DummyTag,
    /// The manifest's `subject` does not resolve (allowed by OCI 1.1: a warning).
    MissingSubject,
    /// The registry answered something unexpected for a blob or manifest.
    Unreadable,
}

impl Problem {
    pub fn severity(self) -> Severity {
        match self {
            Problem::MissingSubject => Severity::Warning,
            Problem::DanglingTag
            | Problem::DigestMismatch
            | Problem::UnparsableManifest
            | Problem::MissingBlob
            | Problem::MissingChild
            | Problem::DummyTag
            | Problem::Unreadable => Severity::Error,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Problem::DanglingTag => "dangling_tag",
            Problem::DigestMismatch => "digest_mismatch",
            Problem::UnparsableManifest => "unparsable_manifest",
            Problem::MissingBlob => "missing_blob",
            Problem::MissingChild => "missing_child",
            Problem::DummyTag => "dummy_tag",
            Problem::MissingSubject => "missing_subject",
            Problem::Unreadable => "unreadable",
        }
    }
}

/// One thing found broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub problem: Problem,
    pub severity: Severity,
    /// The tags through which the broken thing is reached (sorted).
    pub tags: Vec<String>,
    /// The manifest concerned (absent for a dangling tag whose digest is unknown).
    pub manifest: Option<String>,
    /// The blob, child or subject that is missing or unreadable.
    pub missing: Option<String>,
    pub detail: String,
}

impl Finding {
    pub fn new(problem: Problem, tags: Vec<String>, detail: impl Into<String>) -> Self {
        Finding {
            problem,
            severity: problem.severity(),
            tags,
            manifest: None,
            missing: None,
            detail: detail.into(),
        }
    }

    pub fn manifest(mut self, digest: &str) -> Self {
        self.manifest = Some(digest.to_owned());
        self
    }

    pub fn missing(mut self, digest: &str) -> Self {
        self.missing = Some(digest.to_owned());
        self
    }
}

/// One repository: what was checked and what was found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepoReport {
    pub repository: String,
    pub tags: usize,
    pub manifests: usize,
    pub blobs: usize,
    pub findings: Vec<Finding>,
}

impl RepoReport {
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }
}

/// The whole walk.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub registry: String,
    pub clean: bool,
    pub errors: usize,
    pub warnings: usize,
    pub repositories: Vec<RepoReport>,
}

impl Report {
    pub fn new(registry: String, mut repositories: Vec<RepoReport>) -> Self {
        repositories.sort_by(|a, b| a.repository.cmp(&b.repository));
        let errors = repositories.iter().map(|r| r.count(Severity::Error)).sum();
        let warnings = repositories
            .iter()
            .map(|r| r.count(Severity::Warning))
            .sum();
        Report {
            registry,
            clean: errors == 0,
            errors,
            warnings,
            repositories,
        }
    }

    /// Every finding with its repository.
    pub fn findings(&self) -> impl Iterator<Item = (&str, &Finding)> {
        self.repositories
            .iter()
            .flat_map(|r| r.findings.iter().map(move |f| (r.repository.as_str(), f)))
    }
}
