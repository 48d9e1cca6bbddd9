//! The reachability rules on a hand-built storage layout (the real registry
//! is exercised in `tests/it/gc_untagged.rs`).

use super::*;
use crate::storage_layout::v2;
use serde_json::json;

struct Layout {
    dir: tempfile::TempDir,
}

impl Layout {
    fn new() -> Self {
        Layout {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Stores a manifest as a revision of `repo`; returns its digest.
    fn manifest(&self, repo: &str, v: serde_json::Value) -> String {
        let bytes = serde_json::to_vec(&v).unwrap();
        let digest = crate::route::Digest::sha256_of(&bytes).to_string();
        let hex = &digest[7..];
        let blob = v2(self.root()).join(format!("blobs/sha256/{}/{hex}", &hex[..2]));
        std::fs::create_dir_all(&blob).unwrap();
        std::fs::write(blob.join("data"), &bytes).unwrap();
        let rev = v2(self.root()).join(format!(
            "repositories/{repo}/_manifests/revisions/sha256/{hex}"
        ));
        std::fs::create_dir_all(&rev).unwrap();
        std::fs::write(rev.join("link"), &digest).unwrap();
        digest
    }

    fn tag(&self, repo: &str, tag: &str, digest: &str) {
        let dir =
            v2(self.root()).join(format!("repositories/{repo}/_manifests/tags/{tag}/current"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("link"), digest).unwrap();
    }
}

fn image(seed: &str) -> serde_json::Value {
    json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"digest": format!("sha256:{:0>64}", seed)}, "layers": []})
}

fn delete_set(plan: &UntaggedPlan, repo: &str) -> BTreeSet<String> {
    plan.repositories
        .iter()
        .find(|r| r.repository == repo)
        .unwrap()
        .delete
        .iter()
        .cloned()
        .collect()
}

#[test]
fn keeps_tagged_index_children_and_referrers_deletes_the_rest() {
    let l = Layout::new();
    let repo = "team/app";
    let old = l.manifest(repo, image("1"));
    let child_a = l.manifest(repo, image("a"));
    let child_b = l.manifest(repo, image("b"));
    let index = l.manifest(
        repo,
        json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [{"digest": child_a}, {"digest": child_b}]}),
    );
    let sig = l.manifest(repo, {
        let mut m = image("s");
        m["subject"] = json!({"digest": index});
        m
    });
    // A signature of the signature: reachable through two subjects.
    let sig2 = l.manifest(repo, {
        let mut m = image("s2");
        m["subject"] = json!({"digest": sig});
        m
    });
    let orphan_sig = l.manifest(repo, {
        let mut m = image("s3");
        m["subject"] = json!({"digest": old});
        m
    });
    l.tag(repo, "latest", &index);

    let plan = plan(l.root()).unwrap();
    assert_eq!(plan.repositories.len(), 1);
    assert_eq!(plan.repositories[0].revisions, 7);
    let want: BTreeSet<String> = [old, orphan_sig].into_iter().collect();
    assert_eq!(delete_set(&plan, repo), want);
    for kept in [child_a, child_b, index, sig, sig2] {
        assert!(!delete_set(&plan, repo).contains(&kept));
    }
}

#[test]
fn a_deleted_revision_folder_without_link_is_not_counted() {
    let l = Layout::new();
    let d = l.manifest("a", image("1"));
    std::fs::remove_file(v2(l.root()).join(format!(
        "repositories/a/_manifests/revisions/sha256/{}/link",
        &d[7..]
    )))
    .unwrap();
    let plan = plan(l.root()).unwrap();
    assert_eq!(plan.repositories[0].revisions, 0);
    assert!(plan.repositories[0].delete.is_empty());
}

#[test]
fn an_unreadable_reachable_manifest_leaves_the_repository_alone() {
    let l = Layout::new();
    let child = l.manifest("a", image("c"));
    let index = l.manifest(
        "a",
        json!({"schemaVersion": 2, "manifests": [{"digest": child}]}),
    );
    l.tag("a", "v1", &index);
    let hex = &index[7..];
    std::fs::write(
        v2(l.root()).join(format!("blobs/sha256/{}/{hex}/data", &hex[..2])),
        b"not json",
    )
    .unwrap();
    let plan = plan(l.root()).unwrap();
    assert!(plan.repositories[0].skipped.is_some());
    assert!(plan.repositories[0].delete.is_empty());
}
