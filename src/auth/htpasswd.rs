//! The htpasswd file (the Apache format `htpasswd -B` writes and `registry:2`
//! reads): bcrypt hashes only (`$2y$`, `$2b$`, `$2a$`); any other hash kind is
//! an error naming the line.
//!
//! Owns [`Htpasswd`], the live user table that notices when the file changes
//! (a `stat` per look-up; a new generation each reload, which empties the
//! credential cache), and [`edit`], the atomic in-place update used by
//! `regate passwd`. Calls the filesystem and `bcrypt`, nothing else.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::rules::ANONYMOUS;

/// User name -> bcrypt hash.
pub type Users = BTreeMap<String, String>;

#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    #[error("{path}: cannot read ({source})")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{path}: cannot write ({source})")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("user name {0:?} is not allowed: it must be non-empty, without ':', spaces or control characters, not starting with '#', and not \"anonymous\"")]
    BadUser(String),
    #[error("user name {0:?} is not allowed: a new account name must be one repository path component (lowercase letters and digits, joined by '.', '_', '__' or '-'; no '/'), so `${{account}}` in a rule names exactly its own namespace")]
    NotAComponent(String),
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// Whether `user` can be written into an htpasswd file (a line starting
/// with `#` would read back as a comment).
pub fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= super::credentials::MAX_USER_LEN
        && user != ANONYMOUS
        && !user.starts_with('#')
        && !user
            .chars()
            .any(|c| c == ':' || c.is_whitespace() || c.is_control())
}

/// Whether `user` may be created (`regate passwd add`): writable, and one
/// repository path component, so a `${account}/*` rule cannot reach into
/// another namespace (`alice/x` would get `alice/x/*` inside `alice/*`).
/// Existing files may hold other names: they log in, but no `${account}`
/// rule ever matches them.
pub fn valid_new_user(user: &str) -> bool {
    valid_user(user) && crate::route::valid_path_component(user)
}

/// Whether `hash` is a bcrypt hash regate (and `registry:2`) can verify.
fn is_bcrypt(hash: &str) -> bool {
    let prefix_ok = ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p));
    // `get`, not indexing: the bytes after the prefix may be any UTF-8.
    prefix_ok
        && hash.len() == 60
        && hash
            .get(4..6)
            .and_then(|c| c.parse::<u32>().ok())
            .is_some_and(|c| (4..=31).contains(&c))
        && hash.get(6..7) == Some("$")
}

/// Parses the text of an htpasswd file.
pub fn parse(text: &str, path: &Path) -> Result<Users, HtpasswdError> {
    let mut users = Users::new();
    for (i, line) in text.lines().enumerate() {
        let err = |message: String| HtpasswdError::Line {
            path: path.display().to_string(),
            line: i + 1,
            message,
        };
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (user, hash) = line
            .split_once(':')
            .ok_or_else(|| err("not `user:hash`".into()))?;
        if !valid_user(user) {
            return Err(err(format!("user name {user:?} is not allowed")));
        }
        if !is_bcrypt(hash) {
            let kind = if hash.starts_with("$apr1$") {
                "an Apache MD5 hash"
            } else if hash.starts_with("{SHA}") {
                "a SHA-1 hash"
            } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
                "a SHA-crypt hash"
            } else {
                "not a bcrypt hash"
            };
            return Err(err(format!(
                "user {user:?}: {kind}; only bcrypt ($2y$, $2b$, $2a$) is supported: recreate it with `regate passwd add {user}` or `htpasswd -B`"
            )));
        }
        if users.insert(user.to_owned(), hash.to_owned()).is_some() {
            return Err(err(format!("user {user:?} appears twice")));
        }
    }
    Ok(users)
}

/// Reads and parses `path`.
pub fn load(path: &Path) -> Result<Users, HtpasswdError> {
    let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, path)
}

/// What identifies one version of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    ino: u64,
    ctime: i64,
    ctime_nsec: i64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        ino: m.ino(),
        ctime: m.ctime(),
        ctime_nsec: m.ctime_nsec(),
    })
}

struct Loaded {
    users: Arc<Users>,
    stamp: Option<Stamp>,
    generation: u64,
}

/// How often the file is looked at for changes: one `stat` a second at most,
/// not one per request (a change takes effect within this).
pub const RECHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The live user table.
pub struct Htpasswd {
    path: PathBuf,
    loaded: RwLock<Loaded>,
    opened: std::time::Instant,
    /// When (ms after `opened`) the file is next looked at.
    next_check_ms: std::sync::atomic::AtomicU64,
    recheck_ms: u64,
}

impl Htpasswd {
    /// Loads `path`; any problem is a start-up error.
    pub fn open(path: &Path) -> Result<Htpasswd, HtpasswdError> {
        let stamp = stamp(path);
        let users = load(path)?;
        tracing::info!(file = %path.display(), users = users.len(), "htpasswd loaded");
        Ok(Htpasswd {
            path: path.to_owned(),
            loaded: RwLock::new(Loaded {
                users: Arc::new(users),
                stamp,
                generation: 0,
            }),
            opened: std::time::Instant::now(),
            next_check_ms: std::sync::atomic::AtomicU64::new(RECHECK_EVERY.as_millis() as u64),
            recheck_ms: RECHECK_EVERY.as_millis() as u64,
        })
    }

    /// The same table, looking at the file every `every` (zero: each time).
    pub fn rechecked_every(mut self, every: std::time::Duration) -> Htpasswd {
        self.recheck_ms = every.as_millis() as u64;
        self.next_check_ms = std::sync::atomic::AtomicU64::new(self.recheck_ms);
        self
    }

    /// The users now, reloading first if the file changed (looked at once
    /// per [`RECHECK_EVERY`]), and the generation (which grows with every
    /// reload). A file that no longer
    /// parses is reported once and the previous users stay.
    pub fn current(&self) -> (Arc<Users>, u64) {
        use std::sync::atomic::Ordering;
        let now_ms = self.opened.elapsed().as_millis() as u64;
        let due = self.next_check_ms.load(Ordering::Relaxed);
        let next = now_ms + self.recheck_ms;
        // One caller a second looks at the file; the others use what is loaded.
        if now_ms < due
            || self
                .next_check_ms
                .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            let l = self.loaded.read().unwrap_or_else(|e| e.into_inner());
            return (Arc::clone(&l.users), l.generation);
        }
        let now = stamp(&self.path);
        {
            let l = self.loaded.read().unwrap_or_else(|e| e.into_inner());
            if l.stamp == now {
                return (Arc::clone(&l.users), l.generation);
            }
        }
        let mut l = self.loaded.write().unwrap_or_else(|e| e.into_inner());
        if l.stamp != now {
            l.stamp = now;
            match load(&self.path) {
                Ok(users) => {
                    tracing::info!(file = %self.path.display(), users = users.len(), "htpasswd changed; reloaded");
                    l.users = Arc::new(users);
                    l.generation += 1;
                }
                Err(e) => {
                    tracing::error!("htpasswd not reloaded, keeping the previous users: {e}");
                }
            }
        }
        (Arc::clone(&l.users), l.generation)
    }
}

/// Changes to the file made by `regate passwd`.
pub enum Edit<'a> {
    /// Add or replace `user` with a bcrypt hash of `password`.
    Set {
        user: &'a str,
        password: &'a str,
        cost: u32,
    },
    Remove {
        user: &'a str,
    },
}

/// Applies `edit` to `path` atomically (temporary file in the same folder,
/// fsync, rename), keeping comments, order and the file's permissions; a new
/// file is created readable by its owner only. Returns whether the user was
/// there before.
pub fn edit(path: &Path, edit: Edit<'_>) -> Result<bool, HtpasswdError> {
    use std::io::Write as _;
    let werr = |source| HtpasswdError::Write {
        path: path.display().to_string(),
        source,
    };
    let (text, mode) = match std::fs::read_to_string(path) {
        Ok(t) => {
            parse(&t, path)?;
            let mode = std::fs::metadata(path).map(|m| m.mode() & 0o7777).ok();
            (t, mode)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), None),
        Err(source) => {
            return Err(HtpasswdError::Read {
                path: path.display().to_string(),
                source,
            })
        }
    };
    let user = match &edit {
        Edit::Set { user, .. } | Edit::Remove { user } => *user,
    };
    if !valid_user(user) {
        return Err(HtpasswdError::BadUser(user.to_owned()));
    }
    // A new account must be one path component; an existing one may still
    // change its password.
    let exists = text
        .lines()
        .any(|line| line.split_once(':').map(|(u, _)| u) == Some(user));
    if matches!(edit, Edit::Set { .. }) && !exists && !valid_new_user(user) {
        return Err(HtpasswdError::NotAComponent(user.to_owned()));
    }
    let new_line = match &edit {
        Edit::Set { password, cost, .. } => Some(format!(
            "{user}:{}",
            bcrypt::hash(password, *cost).map_err(|e| HtpasswdError::Hash(e.to_string()))?
        )),
        Edit::Remove { .. } => None,
    };
    let mut found = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.split_once(':').map(|(u, _)| u) == Some(user) {
            found = true;
            if let Some(l) = &new_line {
                out.push_str(l);
                out.push('\n');
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !found {
        if let Some(l) = &new_line {
            out.push_str(l);
            out.push('\n');
        }
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(werr)?;
    let mut tmp = tempfile_in(dir).map_err(werr)?;
    let perms = std::os::unix::fs::PermissionsExt::from_mode(mode.unwrap_or(0o600));
    std::fs::set_permissions(&tmp.path, perms).map_err(werr)?;
    tmp.file.write_all(out.as_bytes()).map_err(werr)?;
    tmp.file.sync_all().map_err(werr)?;
    std::fs::rename(&tmp.path, path).map_err(werr)?;
    tmp.keep = true;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(found)
}

/// A temporary file removed on drop unless kept.
struct TempFile {
    path: PathBuf,
    file: std::fs::File,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn tempfile_in(dir: &Path) -> std::io::Result<TempFile> {
    use rand::Rng as _;
    let name = format!(".htpasswd.{:016x}.tmp", rand::thread_rng().gen::<u64>());
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok(TempFile {
        path,
        file,
        keep: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(pw: &str) -> String {
        bcrypt::hash(pw, 4).unwrap()
    }

    #[test]
    fn parses_bcrypt_and_skips_comments() {
        let y = hash("a").replacen("$2b$", "$2y$", 1);
        let text = format!("# users\n\nalice:{y}\nbob:{}\n", hash("b"));
        let users = parse(&text, Path::new("h")).unwrap();
        assert_eq!(users.len(), 2);
        assert!(bcrypt::verify("a", &users["alice"]).unwrap());
    }

    #[test]
    fn other_hash_kinds_name_the_line() {
        for bad in [
            "carol:$apr1$abc$def",
            "carol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
            "carol:plaintext",
            "carol:$2y$99$......................................................",
        ] {
            let text = format!("alice:{}\n{bad}\n", hash("a"));
            let err = parse(&text, Path::new("conf/htpasswd")).unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with("conf/htpasswd:2: user \"carol\""), "{msg}");
        }
        let err = parse(&format!("anonymous:{}\n", hash("a")), Path::new("h")).unwrap_err();
        assert!(err.to_string().contains("h:1:"));
    }

    #[test]
    fn edit_adds_replaces_removes_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, format!("# keep me\nbob:{}\n", hash("b"))).unwrap();
        assert!(!edit(
            &path,
            Edit::Set {
                user: "alice",
                password: "one",
                cost: 4
            }
        )
        .unwrap());
        assert!(edit(
            &path,
            Edit::Set {
                user: "alice",
                password: "two",
                cost: 4
            }
        )
        .unwrap());
        let users = load(&path).unwrap();
        assert!(bcrypt::verify("two", &users["alice"]).unwrap());
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("# keep me\n"));
        assert!(edit(&path, Edit::Remove { user: "bob" }).unwrap());
        assert_eq!(load(&path).unwrap().len(), 1);
        assert!(edit(
            &path,
            Edit::Set {
                user: "a:b",
                password: "x",
                cost: 4
            }
        )
        .is_err());
        // Nothing but the file itself is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_new_account_name_must_be_one_path_component() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        for bad in ["alice/x", "Alice", "a@b.example", "-x", "a..b", "a/"] {
            let set = Edit::Set {
                user: bad,
                password: "pw",
                cost: 4,
            };
            let err = edit(&path, set).unwrap_err();
            assert!(
                matches!(err, HtpasswdError::NotAComponent(_)),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains("one repository path component"));
        }
        assert!(!path.exists(), "nothing was written");
        for good in ["alice", "ci-bot", "team.a", "x__y", "a1"] {
            let set = Edit::Set {
                user: good,
                password: "pw",
                cost: 4,
            };
            assert!(!edit(&path, set).unwrap(), "{good}");
        }
        // An account an older file already holds may still change its password.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}Legacy:{}\n", hash("a"))).unwrap();
        let set = Edit::Set {
            user: "Legacy",
            password: "new",
            cost: 4,
        };
        assert!(edit(&path, set).unwrap());
        assert!(edit(&path, Edit::Remove { user: "Legacy" }).unwrap());
    }

    #[test]
    fn a_user_that_would_read_back_as_a_comment_is_refused() {
        // Found by a_line_written_by_edit_reads_back: `regate passwd add '#x'`
        // wrote a line the parser then skipped, and the user was silently gone.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let set = Edit::Set {
            user: "#x",
            password: "pw",
            cost: 4,
        };
        assert!(matches!(edit(&path, set), Err(HtpasswdError::BadUser(_))));
        assert!(valid_user("x#"));
    }

    #[test]
    fn multibyte_text_in_a_hash_is_an_error_not_a_panic() {
        // Found while writing the htpasswd fuzz target: a byte range that
        // splits a character used to panic (at start-up, or at a reload
        // during a request).
        for hash in [
            format!("$2y$1é{}", "x".repeat(53)),
            format!("$2y$12é{}", "x".repeat(52)),
        ] {
            assert_eq!(hash.len(), 60);
            let err = parse(&format!("alice:{hash}\n"), Path::new("h")).unwrap_err();
            assert!(err.to_string().starts_with("h:1: user \"alice\""), "{err}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        #[test]
        fn parser_never_panics(text in "(\\PC{0,70}\n?){0,4}") {
            let _ = parse(&text, Path::new("h"));
        }

        #[test]
        fn bcrypt_shaped_lines_never_panic(user in "[a-z]{1,8}", cost in "\\PC{0,3}", tail in "\\PC{0,60}") {
            let _ = parse(&format!("{user}:$2y${cost}{tail}\n"), Path::new("h"));
        }

        #[test]
        fn a_line_written_by_edit_reads_back(
            user in "[a-z0-9]{1,8}([._-][a-z0-9]{1,8}){0,2}",
            password in "\\PC{0,30}",
            others in proptest::collection::btree_set("[a-z]{1,6}", 0..3),
        ) {
            proptest::prop_assume!(valid_new_user(&user) && !others.contains(&user));
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("htpasswd");
            let mut text = String::from("# users\n");
            for o in &others {
                text.push_str(&format!("{o}:{}\n", hash("other")));
            }
            std::fs::write(&path, text).unwrap();
            edit(&path, Edit::Set { user: &user, password: &password, cost: 4 }).unwrap();
            let users = load(&path).unwrap();
            proptest::prop_assert_eq!(users.len(), others.len() + 1);
            proptest::prop_assert!(bcrypt::verify(&password, &users[&user]).unwrap());
            for o in &others {
                proptest::prop_assert!(users.contains_key(o));
            }
        }
    }

    #[test]
    fn live_table_reloads_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, format!("alice:{}\n", hash("a"))).unwrap();
        let h = Htpasswd::open(&path)
            .unwrap()
            .rechecked_every(std::time::Duration::ZERO);
        let (u, g0) = h.current();
        assert_eq!(u.len(), 1);
        edit(
            &path,
            Edit::Set {
                user: "bob",
                password: "b",
                cost: 4,
            },
        )
        .unwrap();
        let (u, g1) = h.current();
        assert_eq!(u.len(), 2);
        assert!(g1 > g0);
        // A broken file keeps the previous users.
        std::fs::write(&path, "broken line\n").unwrap();
        assert_eq!(h.current().0.len(), 2);
    }
}
