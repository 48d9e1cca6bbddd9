//! The walk of one repository: resolve every tag, then the manifests they
//! reach level by level through indexes and manifest lists (children by
//! digest), then HEAD every config and layer blob and every `subject`.
//! Each digest is checked once per repository; every request goes through
//! the [`Fetcher`]'s bound.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures_util::future::join_all;
use indicatif::ProgressBar;

use super::fetch::{Fetched, Fetcher, Presence};
use super::manifest::{references, References};
use super::report::{Finding, Problem, RepoReport};
use super::FsckError;
use crate::route::Digest;
use crate::tag_delete::{dummy_evidence, is_dummy_config, DummyEvidence};

/// A dummy's config is a few hundred bytes; a bigger config is not one.
const MAX_DUMMY_CONFIG: usize = 4096;

/// A manifest fetched and read (the tags reaching it are in [`Walk::reached`]).
struct Node {
    digest: String,
    refs: References,
}

#[derive(Default)]
struct Walk {
    findings: Vec<Finding>,
    /// Manifest digest -> tags reaching it (every manifest asked for).
    reached: HashMap<String, BTreeSet<String>>,
    /// Blob digest -> manifests referring to it.
    blobs: BTreeMap<String, BTreeSet<String>>,
    /// Subject digest -> manifests naming it.
    subjects: BTreeMap<String, BTreeSet<String>>,
    /// Manifests fetched and readable.
    readable: BTreeSet<String>,
    /// Children that did not resolve, with the registry's answer.
    missing_children: HashMap<String, String>,
}

impl Walk {
    fn tags_of(&self, manifest: &str) -> Vec<String> {
        self.reached
            .get(manifest)
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn missing_child(&mut self, parent: &str, child: &str, text: &str) {
        self.findings.push(
            Finding::new(
                Problem::MissingChild,
                self.tags_of(parent),
                format!("child manifest of {parent} does not resolve: {text}"),
            )
            .manifest(parent)
            .missing(child),
        );
    }
}

/// Checks `repo` and reports what is broken in it.
pub(crate) async fn check(
    f: &Fetcher<'_>,
    repo: &str,
    bar: &ProgressBar,
) -> Result<RepoReport, FsckError> {
    let mut report = RepoReport {
        repository: repo.to_owned(),
        ..RepoReport::default()
    };
    let tags = match super::listing::tags(f, repo).await? {
        Ok(t) => t,
        Err(detail) => {
            report
                .findings
                .push(Finding::new(Problem::Unreadable, vec![], detail));
            return Ok(report);
        }
    };
    report.tags = tags.len();
    let mut walk = Walk::default();

    // Tags.
    bar.inc_length(tags.len() as u64);
    let resolved = join_all(tags.iter().map(|tag| async move {
        let r = f.manifest(repo, tag).await;
        bar.inc(1);
        (tag, r)
    }))
    .await;
    let mut level = Vec::new();
    for (tag, fetched) in resolved {
        if let Some(node) = read_tag(f, repo, tag, fetched?, &mut walk).await? {
            level.push(node);
        }
    }

    // Manifests, level by level.
    while !level.is_empty() {
        // Child -> the parents asking for it, for children not asked for before.
        let mut children: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for node in &level {
            for b in &node.refs.blobs {
                walk.blobs
                    .entry(b.clone())
                    .or_default()
                    .insert(node.digest.clone());
            }
            if let Some(s) = &node.refs.subject {
                walk.subjects
                    .entry(s.clone())
                    .or_default()
                    .insert(node.digest.clone());
            }
            // Every tag reaching the parent (several tags may share it).
            let tags = walk.reached.get(&node.digest).cloned().unwrap_or_default();
            for c in &node.refs.children {
                let known = walk.reached.contains_key(c);
                walk.reached
                    .entry(c.clone())
                    .or_default()
                    .extend(tags.iter().cloned());
                if !known || children.contains_key(c) {
                    children
                        .entry(c.clone())
                        .or_default()
                        .insert(node.digest.clone());
                } else if let Some(text) = walk.missing_children.get(c).cloned() {
                    walk.missing_child(&node.digest, c, &text);
                }
            }
        }
        bar.inc_length(children.len() as u64);
        let fetched = join_all(children.keys().map(|c| async move {
            let r = f.manifest(repo, c).await;
            bar.inc(1);
            r
        }))
        .await;
        let mut next = Vec::new();
        for ((child, parents), r) in children.iter().zip(fetched) {
            match r? {
                Fetched::Found { bytes, digest, .. } => {
                    let tags = walk.tags_of(child);
                    if let Some(node) =
                        read_manifest(child, &bytes, digest.as_deref(), tags, &mut walk)
                    {
                        next.push(node);
                    }
                }
                Fetched::NotFound(text) | Fetched::Other(text) => {
                    walk.missing_children.insert(child.clone(), text.clone());
                    for p in parents {
                        walk.missing_child(p, child, &text);
                    }
                }
            }
        }
        level = next;
    }
    report.manifests = walk.readable.len();

    // Blobs.
    let blobs: Vec<(String, BTreeSet<String>)> =
        std::mem::take(&mut walk.blobs).into_iter().collect();
    report.blobs = blobs.len();
    bar.inc_length(blobs.len() as u64);
    let heads = join_all(blobs.iter().map(|(b, _)| async move {
        let r = f.blob_exists(repo, b).await;
        bar.inc(1);
        r
    }))
    .await;
    walk.record_absent(
        &blobs,
        heads,
        Problem::MissingBlob,
        "blob",
        "blob unknown to the registry (404)",
    )?;

    // Subjects (a missing one is allowed: OCI 1.1 lets referrers come first).
    let subjects: Vec<(String, BTreeSet<String>)> = std::mem::take(&mut walk.subjects)
        .into_iter()
        .filter(|(s, _)| !walk.readable.contains(s))
        .collect();
    bar.inc_length(subjects.len() as u64);
    let heads = join_all(subjects.iter().map(|(s, _)| async move {
        let r = f.manifest_exists(repo, s).await;
        bar.inc(1);
        r
    }))
    .await;
    walk.record_absent(
        &subjects,
        heads,
        Problem::MissingSubject,
        "subject",
        "subject does not resolve (404)",
    )?;
    report.findings = walk.findings;
    Ok(report)
}

impl Walk {
    /// Turns the HEAD answers about `items` (a digest and the manifests that
    /// refer to it) into findings: `missing` for a 404, unreadable otherwise.
    fn record_absent(
        &mut self,
        items: &[(String, BTreeSet<String>)],
        answers: Vec<Result<Presence, FsckError>>,
        missing: Problem,
        what: &str,
        not_found: &str,
    ) -> Result<(), FsckError> {
        for ((digest, users), presence) in items.iter().zip(answers) {
            let (problem, text) = match presence? {
                Presence::Present => continue,
                Presence::NotFound => (missing, not_found.to_owned()),
                Presence::Other(t) => (Problem::Unreadable, t),
            };
            for m in users {
                let finding = Finding::new(
                    problem,
                    self.tags_of(m),
                    format!("{what} {digest} of {m}: {text}"),
                )
                .manifest(m)
                .missing(digest);
                self.findings.push(finding);
            }
        }
        Ok(())
    }
}

/// A tag's manifest: dangling, a dummy, or a node to walk.
async fn read_tag(
    f: &Fetcher<'_>,
    repo: &str,
    tag: &str,
    fetched: Fetched,
    walk: &mut Walk,
) -> Result<Option<Node>, FsckError> {
    let (bytes, announced) = match fetched {
        Fetched::Found { bytes, digest, .. } => (bytes, digest),
        Fetched::NotFound(text) | Fetched::Other(text) => {
            walk.findings.push(Finding::new(
                Problem::DanglingTag,
                vec![tag.to_owned()],
                format!("tag is listed but its manifest does not resolve: {text}"),
            ));
            return Ok(None);
        }
    };
    let digest = Digest::sha256_of(&bytes).as_str().to_owned();
    walk.reached
        .entry(digest.clone())
        .or_default()
        .insert(tag.to_owned());
    if let Some(a) = announced.as_deref().filter(|a| *a != digest) {
        walk.findings.push(
            Finding::new(
                Problem::DigestMismatch,
                vec![tag.to_owned()],
                format!("Docker-Content-Digest is {a}, the bytes hash to {digest}"),
            )
            .manifest(&digest),
        );
    }
    let dummy = match dummy_evidence(&bytes) {
        DummyEvidence::Dummy => true,
        DummyEvidence::IfConfigIs(config) => match f.blob(repo, &config).await? {
            Fetched::Found { bytes, .. } => {
                bytes.len() <= MAX_DUMMY_CONFIG && is_dummy_config(&bytes)
            }
            // A missing config is reported with the blobs.
            Fetched::NotFound(_) | Fetched::Other(_) => false,
        },
        DummyEvidence::NotDummy => false,
    };
    if dummy {
        walk.findings.push(
            Finding::new(
                Problem::DummyTag,
                vec![tag.to_owned()],
                "tag points at a regate tag-delete dummy manifest (an interrupted delete): delete the tag again through regate",
            )
            .manifest(&digest),
        );
    }
    if walk.readable.contains(&digest) {
        return Ok(None);
    }
    Ok(read_manifest(
        &digest,
        &bytes,
        None,
        vec![tag.to_owned()],
        walk,
    ))
}

/// Reads a fetched manifest (its digest known) into a node; records why not.
fn read_manifest(
    digest: &str,
    bytes: &[u8],
    announced: Option<&str>,
    tags: Vec<String>,
    walk: &mut Walk,
) -> Option<Node> {
    let actual = Digest::sha256_of(bytes);
    let problem_digest = if digest.starts_with("sha256:") && actual.as_str() != digest {
        Some(format!("the bytes hash to {}", actual.as_str()))
    } else {
        announced
            .filter(|a| *a != digest)
            .map(|a| format!("Docker-Content-Digest is {a}"))
    };
    if let Some(why) = problem_digest {
        walk.findings.push(
            Finding::new(
                Problem::DigestMismatch,
                tags.clone(),
                format!("asked for {digest}, {why}"),
            )
            .manifest(digest),
        );
    }
    match references(bytes) {
        Ok(refs) => {
            walk.readable.insert(digest.to_owned());
            Some(Node {
                digest: digest.to_owned(),
                refs,
            })
        }
        Err(why) => {
            walk.findings
                .push(Finding::new(Problem::UnparsableManifest, tags, why).manifest(digest));
            None
        }
    }
}
