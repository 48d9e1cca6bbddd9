//! The size of the registry's storage, for the bytes a GC run freed.

use std::path::Path;

/// Sum of the sizes of every file under `root` (symlinks not followed).
/// A missing root is 0 bytes.
pub fn storage_bytes(root: &Path) -> std::io::Result<u64> {
    let mut total = 0u64;
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                // A file removed while we walk (a concurrent GC) counts as gone.
                if let Ok(m) = entry.metadata() {
                    total += m.len();
                }
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_files_recursively() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/x"), [0u8; 100]).unwrap();
        std::fs::write(dir.path().join("y"), [0u8; 23]).unwrap();
        assert_eq!(storage_bytes(dir.path()).unwrap(), 123);
        assert_eq!(storage_bytes(&dir.path().join("missing")).unwrap(), 0);
    }
}
