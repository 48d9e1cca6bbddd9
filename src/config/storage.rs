//! The `[storage]` section: where the registry keeps its data, for the reads
//! regate answers from it (`fast_reads`).
//!
//! Owns the raw keys of the section ([`RawStorage`]) and their validation into
//! [`StorageSettings`]. The storage root is `storage.root`, else
//! `gc.storage_root`, else the managed registry's storage; fast reads are on
//! by default whenever a root is known.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::problem::Problem;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// Answer manifest and blob reads from the storage (default: on when
    /// the storage root is known).
    pub fast_reads: Option<bool>,
    /// The registry's `storage.filesystem.rootdirectory`, when it is not
    /// `gc.storage_root` or the managed registry's.
    pub root: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct StorageSettings {
    /// The storage root fast reads use; `None`: every read is forwarded.
    pub fast_reads: Option<PathBuf>,
}

/// `managed_storage`: the managed registry's storage folder, if managed.
pub(super) fn validate(
    raw: RawStorage,
    gc_root: Option<&Path>,
    managed_storage: Option<PathBuf>,
    problems: &mut Vec<Problem>,
) -> StorageSettings {
    let own = raw.root.map(PathBuf::from);
    if let Some(root) = &own {
        if !root.is_dir() {
            problems.push(Problem::new(
                "storage.root",
                format!("{} is not a directory; point it at the registry's storage.filesystem.rootdirectory", root.display()),
            ));
        }
    }
    let root = own
        .or_else(|| gc_root.map(Path::to_path_buf))
        .or(managed_storage);
    match (raw.fast_reads, root) {
        (Some(false), _) => StorageSettings { fast_reads: None },
        (Some(true), None) => {
            problems.push(Problem::new(
                "storage.fast_reads",
                "needs to read the registry's storage: set storage.root (or gc.storage_root) to its storage.filesystem.rootdirectory, use [upstream.managed], or set fast_reads = false",
            ));
            StorageSettings { fast_reads: None }
        }
        (_, root) => StorageSettings { fast_reads: root },
    }
}

#[cfg(test)]
mod tests {
    use super::super::Settings;

    fn load(extra: &str) -> Result<Settings, super::super::ConfigError> {
        let text = format!(
            "[server]\ndev_certs = true\n[upstream]\nurl = \"http://127.0.0.1:5000\"\n{extra}"
        );
        Settings::from_toml(&text, "test.toml", std::iter::empty())
    }

    #[test]
    fn fast_reads_follow_the_known_storage_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        assert_eq!(load("").unwrap().storage.fast_reads, None);
        let from_gc = load(&format!("[gc]\nstorage_root = {root:?}\n")).unwrap();
        assert_eq!(from_gc.storage.fast_reads.as_deref(), Some(dir.path()));
        let own = load(&format!("[storage]\nroot = {root:?}\n")).unwrap();
        assert_eq!(own.storage.fast_reads.as_deref(), Some(dir.path()));
        let off = load(&format!("[storage]\nroot = {root:?}\nfast_reads = false\n")).unwrap();
        assert_eq!(off.storage.fast_reads, None);
    }

    #[test]
    fn fast_reads_without_a_storage_root_name_the_key_and_what_to_do() {
        let err = load("[storage]\nfast_reads = true\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("storage.fast_reads: needs to read the registry's storage"),
            "{err}"
        );
        let err = load("[storage]\nroot = \"/nonexistent/registry\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("storage.root: /nonexistent/registry is not a directory"),
            "{err}"
        );
        let err = load("[storage]\nfast_read = true\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("did you mean `storage.fast_reads`?"), "{err}");
    }
}
