//! The end of the soak: every acknowledged tag at its digest and complete
//! (a sample copied with skopeo too), every acknowledged delete gone, every
//! uncertain tag absent or at its pushed digest, `fsck` clean, no dummy
//! manifest left in storage.

use std::path::Path;

use indicatif::ProgressBar;
use regate::client::{RegistryClient, Scheme};
use regate::tag_delete::{dummy_evidence, is_dummy_config, DummyEvidence};

use super::ledger::{Ledger, TagState};
use super::workers::{pull, Pull, Targets, REPOS};
use crate::common::images::{sha256, ACCEPT_ALL};
use crate::common::storage::{read_blob, revisions};

/// What the tag answers now: None for 404, else the digest of its bytes.
async fn resolve(
    c: &reqwest::Client,
    base: &str,
    repo: &str,
    tag: &str,
) -> Result<Option<String>, String> {
    let r = c
        .get(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match r.status().as_u16() {
        404 => Ok(None),
        200 => Ok(Some(sha256(&r.bytes().await.map_err(|e| e.to_string())?))),
        s => Err(format!("{s}")),
    }
}

/// Checks every tag of the ledger through the API (of each target in
/// turn); returns the problems.
pub async fn tags(c: &reqwest::Client, targets: &Targets, ledger: &Ledger) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, (repo, tag, state)) in ledger.all().into_iter().enumerate() {
        let base = targets.nth(i);
        let now = resolve(c, base, &repo, &tag).await;
        match (&state, now) {
            (_, Err(e)) => problems.push(format!("{repo}:{tag} ({state:?}): GET answered {e}")),
            (TagState::Acked(d), Ok(Some(now))) if *d == now => {
                match pull(c, base, &repo, &tag, d).await {
                    Pull::Ok => {}
                    Pull::Retry(e) | Pull::Gone(e) | Pull::Wrong(e) => problems.push(format!(
                        "{repo}:{tag} (acknowledged at {d}) does not pull fully: {e}"
                    )),
                }
            }
            (TagState::Acked(d), Ok(now)) => {
                problems.push(format!("{repo}:{tag} acknowledged at {d}, now {now:?}"))
            }
            (TagState::Deleted(_), Ok(None)) => {}
            (TagState::Deleted(d), Ok(Some(now))) => problems.push(format!(
                "{repo}:{tag} (was {d}) acknowledged deleted, still resolves to {now}"
            )),
            (TagState::Uncertain(d), Ok(now)) if now.is_none() || now.as_ref() == Some(d) => {}
            (TagState::Uncertain(d), Ok(now)) => problems.push(format!(
                "{repo}:{tag} uncertain (pushed as {d}), now {now:?}"
            )),
            (TagState::Deleting(d), _) => {
                problems.push(format!("{repo}:{tag} ({d}) left in Deleting"))
            }
        }
    }
    problems
}

/// Dummy manifests among the stored revisions of the soak repositories.
pub fn dummies_in_storage(storage: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for repo in REPOS {
        for digest in revisions(storage, repo) {
            let Some(bytes) = read_blob(storage, &digest) else {
                continue;
            };
            let dummy = match dummy_evidence(&bytes) {
                DummyEvidence::Dummy => true,
                // The soak pushes no zero-layer image: one whose config is
                // gone is a dummy too.
                DummyEvidence::IfConfigIs(config) => {
                    read_blob(storage, &config).is_none_or(|c| is_dummy_config(&c))
                }
                DummyEvidence::NotDummy => false,
            };
            if dummy {
                found.push(format!("{repo}@{digest}"));
            }
        }
    }
    found
}

/// Copies up to four acknowledged images with skopeo (every seventh tag)
/// through the regate at `host`; how many were tried, and the problems.
pub fn skopeo_sample(ledger: &Ledger, host: &str, trust_dir: &Path) -> (usize, Vec<String>) {
    let sample: Vec<_> = ledger
        .all()
        .into_iter()
        .filter_map(|(r, t, s)| matches!(s, TagState::Acked(_)).then_some((r, t)))
        .step_by(7)
        .take(4)
        .collect();
    let mut problems = Vec::new();
    let out = tempfile::tempdir().unwrap();
    for (i, (repo, tag)) in sample.iter().enumerate() {
        let dest = format!("oci:{}/img{i}:x", out.path().display());
        let src = format!("docker://{host}/{repo}:{tag}");
        let trust = trust_dir.display().to_string();
        if let Err(e) = crate::common::skopeo::try_skopeo(&[
            "copy",
            "--all",
            "--src-cert-dir",
            &trust,
            &src,
            &dest,
        ]) {
            problems.push(format!("skopeo copy {src}: {e}"));
        }
    }
    (sample.len(), problems)
}

/// `regate fsck` through the regate at `host`; its report, and a problem
/// when it is not clean.
pub async fn fsck(host: &str, ca_cert: &Path) -> (regate::fsck::Report, Vec<String>) {
    let client = RegistryClient::with_scheme(Scheme::Https, host, Some(ca_cert), None).unwrap();
    let report = regate::fsck::run(
        &client,
        &regate::fsck::Options::default(),
        &ProgressBar::hidden(),
    )
    .await
    .unwrap();
    let mut problems = Vec::new();
    if !report.clean {
        problems.push(format!(
            "fsck: {:#?}",
            report.findings().collect::<Vec<_>>()
        ));
    }
    (report, problems)
}
