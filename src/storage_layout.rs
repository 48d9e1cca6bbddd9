//! Where the registry's filesystem storage driver (distribution 2.8) keeps
//! what regate reads behind its back: the paths under the storage root
//! (`rootdirectory`), and nothing else. Who reads them decides what a
//! missing or odd file means: fast reads, retention's dates, the untagged
//! cleanup and the referrers reindex.
//!
//! ```text
//! <root>/docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
//! <root>/docker/registry/v2/repositories/<name>/_manifests/revisions/sha256/<hex>/link
//! <root>/docker/registry/v2/repositories/<name>/_layers/sha256/<hex>/link
//! <root>/docker/registry/v2/blobs/sha256/<first two hex>/<hex>/data
//! ```

use std::path::{Path, PathBuf};

/// `<root>/docker/registry/v2`.
pub fn v2(root: &Path) -> PathBuf {
    root.join("docker/registry/v2")
}

/// The folder under which repository names are folder paths.
pub fn repositories(root: &Path) -> PathBuf {
    v2(root).join("repositories")
}

/// Repository `name`'s folder.
pub fn repository(root: &Path, name: &str) -> PathBuf {
    repositories(root).join(name)
}

/// The folder of a repository's tags (one folder each), from its folder.
pub fn tags_dir(repo_dir: &Path) -> PathBuf {
    repo_dir.join("_manifests/tags")
}

/// The folder of a repository's sha256 manifest revisions, from its folder.
pub fn revisions_dir(repo_dir: &Path) -> PathBuf {
    repo_dir.join("_manifests/revisions/sha256")
}

/// The link naming the manifest `tag` points at, from the tags folder.
pub fn tag_link(tags_dir: &Path, tag: &str) -> PathBuf {
    current_link(&tags_dir.join(tag))
}

/// The same link, from the tag's own folder.
pub fn current_link(tag_dir: &Path) -> PathBuf {
    tag_dir.join("current/link")
}

/// The link that makes manifest `hex` (sha256) part of the repository.
pub fn revision_link(repo_dir: &Path, hex: &str) -> PathBuf {
    revisions_dir(repo_dir).join(hex).join("link")
}

/// The link that makes blob `hex` (sha256) part of the repository.
pub fn layer_link(repo_dir: &Path, hex: &str) -> PathBuf {
    repo_dir.join("_layers/sha256").join(hex).join("link")
}

/// The content of blob (or manifest) `hex` (sha256; at least two characters).
pub fn blob_data(root: &Path, hex: &str) -> PathBuf {
    v2(root)
        .join("blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}
