//! The filesystem driver's layout of distribution 2.8, read only:
//!
//! ```text
//! <root>/docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
//! <root>/docker/registry/v2/repositories/<name>/_manifests/revisions/<alg>/<hex>/link
//! <root>/docker/registry/v2/repositories/<name>/_layers/<alg>/<hex>/link
//! <root>/docker/registry/v2/blobs/<alg>/<first two hex>/<hex>/data
//! ```
//!
//! Owns the paths and the checks 2.8 makes before it serves content: a tag
//! resolves through its `current/link`, and a manifest (a blob) must be linked
//! in the repository (`_manifests/revisions`, `_layers`) before its `data` is
//! read. Every function here blocks (file reads): call them from
//! `spawn_blocking`. Anything this reader is not sure of (a missing file, a
//! link that does not hold the digest asked for, an algorithm other than
//! sha256, an I/O error) is a [`Miss`], and the caller forwards the request.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::route::{Digest, RepoName, Tag};
use crate::storage_layout;

/// The largest manifest read from the storage (distribution's own limit);
/// a larger one is left to the registry.
pub const MAX_MANIFEST: u64 = 4 * 1024 * 1024;

/// Why the storage could not answer; the request goes to the registry.
#[derive(Debug, thiserror::Error)]
pub enum Miss {
    #[error("{0} is not in the storage")]
    NotFound(PathBuf),
    /// A digest of another algorithm than sha256: not read here.
    #[error("{0}: only sha256 digests are read from the storage")]
    OtherAlgorithm(String),
    #[error("{path}: {why}")]
    Unexpected { path: PathBuf, why: &'static str },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Miss {
    /// A miss worth an operator's attention (not a plain "not there").
    pub fn is_fault(&self) -> bool {
        !matches!(self, Miss::NotFound(_) | Miss::OtherAlgorithm(_))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Miss + '_ {
    move |source| match source.kind() {
        std::io::ErrorKind::NotFound => Miss::NotFound(path.to_owned()),
        _ => Miss::Io {
            path: path.to_owned(),
            source,
        },
    }
}

fn unexpected(path: &Path, why: &'static str) -> Miss {
    Miss::Unexpected {
        path: path.to_owned(),
        why,
    }
}

/// A registry storage root (`storage.filesystem.rootdirectory`).
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

/// A blob's data, open, with its size at the time it was opened.
#[derive(Debug)]
pub struct OpenBlob {
    pub file: File,
    pub size: u64,
}

impl Layout {
    pub fn new(root: &Path) -> Self {
        Layout {
            root: root.to_path_buf(),
        }
    }

    fn repo(&self, name: &RepoName) -> PathBuf {
        storage_layout::repository(&self.root, name.as_str())
    }

    /// The hex part of a sha256 digest; other algorithms are not read here.
    fn sha256_hex(digest: &Digest) -> Result<&str, Miss> {
        match digest.as_str().split_once(':') {
            Some(("sha256", hex)) => Ok(hex),
            _ => Err(Miss::OtherAlgorithm(digest.to_string())),
        }
    }

    fn blob_data(&self, digest: &Digest) -> Result<PathBuf, Miss> {
        let hex = Self::sha256_hex(digest)?;
        Ok(storage_layout::blob_data(&self.root, hex))
    }

    /// The digest a tag points at (`current/link`).
    pub fn tag(&self, name: &RepoName, tag: &Tag) -> Result<Digest, Miss> {
        let path =
            storage_layout::tag_link(&storage_layout::tags_dir(&self.repo(name)), tag.as_str());
        read_link(&path)
    }

    /// The manifest `digest` of repository `name`: linked as a revision
    /// there, read from the blob store (at most [`MAX_MANIFEST`] bytes).
    pub fn manifest(&self, name: &RepoName, digest: &Digest) -> Result<Vec<u8>, Miss> {
        let hex = Self::sha256_hex(digest)?;
        let link = storage_layout::revision_link(&self.repo(name), hex);
        check_link(&link, digest)?;
        let data = self.blob_data(digest)?;
        let file = File::open(&data).map_err(io(&data))?;
        let meta = file.metadata().map_err(io(&data))?;
        if !meta.is_file() {
            return Err(unexpected(&data, "not a file"));
        }
        if meta.len() > MAX_MANIFEST {
            return Err(unexpected(&data, "larger than a manifest may be"));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_MANIFEST + 1)
            .read_to_end(&mut bytes)
            .map_err(io(&data))?;
        if bytes.len() as u64 != meta.len() {
            return Err(unexpected(&data, "changed while it was read"));
        }
        Ok(bytes)
    }

    /// The blob `digest` of repository `name`: linked as a layer there,
    /// its data open (a blob removed by GC meanwhile stays readable through
    /// the open file).
    pub fn blob(&self, name: &RepoName, digest: &Digest) -> Result<OpenBlob, Miss> {
        let hex = Self::sha256_hex(digest)?;
        let link = storage_layout::layer_link(&self.repo(name), hex);
        check_link(&link, digest)?;
        let data = self.blob_data(digest)?;
        let file = File::open(&data).map_err(io(&data))?;
        let meta = file.metadata().map_err(io(&data))?;
        if !meta.is_file() {
            return Err(unexpected(&data, "not a file"));
        }
        Ok(OpenBlob {
            size: meta.len(),
            file,
        })
    }
}

/// A link file's digest (`sha256:<64 hex>`, nothing else).
fn read_link(path: &Path) -> Result<Digest, Miss> {
    let mut text = String::new();
    File::open(path)
        .and_then(|f| f.take(256).read_to_string(&mut text))
        .map_err(io(path))?;
    match Digest::parse(&text) {
        Ok(d) if d.algorithm() == "sha256" => Ok(d),
        _ => Err(unexpected(path, "does not hold a sha256 digest")),
    }
}

/// The link at `path` names `digest` (2.8 would follow another target: left to it).
fn check_link(path: &Path, digest: &Digest) -> Result<(), Miss> {
    if read_link(path)? == *digest {
        Ok(())
    } else {
        Err(unexpected(path, "links another digest"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "5f21832d7f83f3bfc296527dca1c88307a8dbc1837ade05bf541f0da07b5d3c3";

    fn put(root: &Path, rel: &str, bytes: &[u8]) {
        let p = root.join("docker/registry/v2").join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    fn digest() -> Digest {
        Digest::parse(&format!("sha256:{HEX}")).unwrap()
    }

    #[test]
    fn a_blob_is_served_only_when_linked_in_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let name = RepoName::parse("team/app").unwrap();
        put(dir.path(), &format!("blobs/sha256/5f/{HEX}/data"), b"hello");
        assert!(matches!(
            layout.blob(&name, &digest()),
            Err(Miss::NotFound(_))
        ));
        put(
            dir.path(),
            &format!("repositories/team/app/_layers/sha256/{HEX}/link"),
            format!("sha256:{HEX}").as_bytes(),
        );
        assert_eq!(layout.blob(&name, &digest()).unwrap().size, 5);
        // A manifest needs its own revision link.
        let sha512 = Digest::parse(&format!("sha512:{HEX}{HEX}")).unwrap();
        assert!(!layout.blob(&name, &sha512).unwrap_err().is_fault());
        assert!(matches!(
            layout.manifest(&name, &digest()),
            Err(Miss::NotFound(_))
        ));
    }

    #[test]
    fn a_tag_link_that_is_empty_or_odd_is_a_fault_not_an_answer() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let name = RepoName::parse("app").unwrap();
        let tag = Tag::parse("v1").unwrap();
        for bad in ["", "sha256:short", &format!("sha256:{HEX}\n")] {
            put(
                dir.path(),
                "repositories/app/_manifests/tags/v1/current/link",
                bad.as_bytes(),
            );
            let miss = layout.tag(&name, &tag).unwrap_err();
            assert!(miss.is_fault(), "{bad:?}: {miss}");
        }
        put(
            dir.path(),
            "repositories/app/_manifests/tags/v1/current/link",
            format!("sha256:{HEX}").as_bytes(),
        );
        assert_eq!(layout.tag(&name, &tag).unwrap(), digest());
    }
}
