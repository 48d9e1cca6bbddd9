//! Parses a request path once into a typed [`Route`].
//!
//! Owns the grammar of repository names, tags and digests (as in the
//! distribution and OCI specs) and the shape of every `/v2/` endpoint. Auth,
//! the write gate, tag delete and the proxy all consume the [`Route`] value;
//! nobody else looks at the raw path. Paths are parsed as sent (never
//! percent-decoded): a `%` can never be part of a valid name or reference, so
//! encoded tricks such as `%2e%2e` are refused rather than interpreted.

use std::fmt;

use http::StatusCode;

use crate::error::{ErrorCode, RegistryError};
use crate::route_kind::RouteKind;

/// Longest repository name accepted (distribution's limit).
pub const MAX_NAME_LEN: usize = 255;

/// A validated repository name such as `library/alpine`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// Checks `name` against the distribution grammar
    /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
    pub fn parse(name: &str) -> Result<Self, RouteError> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(RouteError::NameInvalid(name.to_owned()));
        }
        if name.split('/').all(valid_path_component) {
            Ok(RepoName(name.to_owned()))
        } else {
            Err(RouteError::NameInvalid(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One `/`-separated component: alphanumeric runs joined by `.`, `_`, `__` or `-+`.
/// Also what an account name must be to stand for `${account}` in a rule.
pub fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

/// A content digest `algorithm:encoded`, checked for shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Accepts the OCI digest grammar; for the registered algorithms `sha256`
    /// and `sha512` the encoded part must be lowercase hex of the right length.
    pub fn parse(s: &str) -> Result<Self, RouteError> {
        let invalid = || RouteError::DigestInvalid(s.to_owned());
        let (alg, enc) = s.split_once(':').ok_or_else(invalid)?;
        let alg_ok = !alg.is_empty()
            && alg.split(['+', '.', '_', '-']).all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        if !alg_ok || enc.is_empty() {
            return Err(invalid());
        }
        let hex_len = match alg {
            "sha256" => Some(64),
            "sha512" => Some(128),
            _ => None,
        };
        match hex_len {
            Some(n) => {
                if enc.len() != n || !enc.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err(invalid());
                }
            }
            None => {
                if !enc
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
                {
                    return Err(invalid());
                }
            }
        }
        Ok(Digest(s.to_owned()))
    }

    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Digest(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(bytes))
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the `:`.
    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map_or("", |(a, _)| a)
    }
}

/// The digest algorithms distribution knows (go-digest's registered ones).
const REGISTRY_ALGORITHMS: [&str; 3] = ["sha256", "sha384", "sha512"];

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Result<Self, RouteError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b[1..]
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if ok {
            Ok(Tag(s.to_owned()))
        } else {
            Err(RouteError::TagInvalid(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a manifest path names: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    /// A reference with a `:` is a digest, anything else a tag. A digest of
    /// an algorithm the registry does not know is refused here: 2.8 would
    /// read it as a tag and answer 500 (naming its storage path).
    pub fn parse(s: &str) -> Result<Self, RouteError> {
        if s.contains(':') {
            let d = Digest::parse(s)?;
            if !REGISTRY_ALGORITHMS.contains(&d.algorithm()) {
                return Err(RouteError::DigestInvalid(s.to_owned()));
            }
            Ok(Reference::Digest(d))
        } else {
            Tag::parse(s).map(Reference::Tag)
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Reference::Tag(t) => t.as_str(),
            Reference::Digest(d) => d.as_str(),
        }
    }
}

/// Every endpoint of the `/v2/` API that regate knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the version check.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/<name>/manifests/<reference>`.
    Manifest {
        name: RepoName,
        reference: Reference,
    },
    /// `/v2/<name>/blobs/<digest>`.
    Blob { name: RepoName, digest: Digest },
    /// `/v2/<name>/blobs/uploads/`: starts an upload (or a mount).
    UploadStart { name: RepoName },
    /// `/v2/<name>/blobs/uploads/<session>`.
    Upload { name: RepoName, session: String },
    /// `/v2/<name>/tags/list`.
    TagsList { name: RepoName },
    /// `/v2/<name>/referrers/<digest>` (OCI distribution 1.1).
    Referrers { name: RepoName, digest: Digest },
    /// `/v2/<name>/tags/reference/<tag>` (GitLab's tag-delete route).
    TagReference { name: RepoName, tag: Tag },
    /// `/v2/<name>/_regate/deleted`: regate's history of removed tags.
    DeletedTags { name: RepoName },
    /// `/v2/<name>/_regate/restore/<tag>`: undo the last removal of a tag.
    RestoreTag { name: RepoName, tag: Tag },
    /// `/v2/<name>/_regate/delete`: remove many tags at once (POST, JSON).
    DeleteTags { name: RepoName },
}

impl Route {
    /// For an endpoint regate serves itself, the methods it answers (the
    /// `Allow` of a 405); `None` for the registry's endpoints, which are
    /// forwarded whatever the method. `OPTIONS` on GitLab's tag route is
    /// GitLab's probe for tag deletes (it wants `Allow: DELETE`).
    pub fn own_methods(&self) -> Option<&'static [&'static str]> {
        match self {
            Route::TagReference { .. } => Some(&["DELETE", "OPTIONS"]),
            // As 2.8 serves its lists: GET only (a HEAD gets 405).
            Route::TagsList { .. } | Route::Referrers { .. } | Route::DeletedTags { .. } => {
                Some(&["GET"])
            }
            Route::RestoreTag { .. } | Route::DeleteTags { .. } => Some(&["POST"]),
            Route::Base
            | Route::Catalog
            | Route::Manifest { .. }
            | Route::Blob { .. }
            | Route::UploadStart { .. }
            | Route::Upload { .. } => None,
        }
    }

    pub fn kind(&self) -> RouteKind {
        match self {
            Route::Base => RouteKind::Base,
            Route::Catalog => RouteKind::Catalog,
            Route::Manifest { .. } => RouteKind::Manifest,
            Route::Blob { .. } => RouteKind::Blob,
            Route::UploadStart { .. } => RouteKind::UploadStart,
            Route::Upload { .. } => RouteKind::Upload,
            Route::TagsList { .. } => RouteKind::TagsList,
            Route::Referrers { .. } => RouteKind::Referrers,
            Route::TagReference { .. } => RouteKind::TagReference,
            Route::DeletedTags { .. } => RouteKind::DeletedTags,
            Route::RestoreTag { .. } => RouteKind::RestoreTag,
            Route::DeleteTags { .. } => RouteKind::DeleteTags,
        }
    }

    /// The repository the request is about, if any.
    pub fn repository(&self) -> Option<&RepoName> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::UploadStart { name }
            | Route::Upload { name, .. }
            | Route::TagsList { name }
            | Route::Referrers { name, .. }
            | Route::TagReference { name, .. }
            | Route::DeletedTags { name }
            | Route::DeleteTags { name }
            | Route::RestoreTag { name, .. } => Some(name),
        }
    }

    /// Parses a raw request path (without the query).
    pub fn parse(path: &str) -> Result<Route, RouteError> {
        let rest = match path {
            "/v2" | "/v2/" => return Ok(Route::Base),
            "/v2/_catalog" => return Ok(Route::Catalog),
            p => p.strip_prefix("/v2/").ok_or(RouteError::NotFound)?,
        };
        let segs: Vec<&str> = rest.split('/').collect();
        let n = segs.len();
        let name_of = |k: usize| -> Result<RepoName, RouteError> {
            if k == 0 {
                return Err(RouteError::NotFound);
            }
            RepoName::parse(&rest[..segs[..k].iter().map(|s| s.len() + 1).sum::<usize>() - 1])
        };
        // Endpoints are recognised from the end, so a repository may itself
        // contain a component called `manifests` or `blobs`.
        if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
            return Ok(Route::TagsList {
                name: name_of(n - 2)?,
            });
        }
        // `_regate` cannot start a repository component, so these never clash.
        if n >= 3 && segs[n - 2] == "_regate" && segs[n - 1] == "deleted" {
            return Ok(Route::DeletedTags {
                name: name_of(n - 2)?,
            });
        }
        if n >= 3 && segs[n - 2] == "_regate" && segs[n - 1] == "delete" {
            return Ok(Route::DeleteTags {
                name: name_of(n - 2)?,
            });
        }
        if n >= 4 && segs[n - 3] == "_regate" && segs[n - 2] == "restore" {
            let name = name_of(n - 3)?;
            return Ok(Route::RestoreTag {
                name,
                tag: Tag::parse(segs[n - 1])?,
            });
        }
        if n >= 4 && segs[n - 3] == "tags" && segs[n - 2] == "reference" {
            let name = name_of(n - 3)?;
            return Ok(Route::TagReference {
                name,
                tag: Tag::parse(segs[n - 1])?,
            });
        }
        if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
            let name = name_of(n - 3)?;
            let session = segs[n - 1];
            if session.is_empty() {
                return Ok(Route::UploadStart { name });
            }
            if !valid_session(session) {
                return Err(RouteError::NotFound);
            }
            return Ok(Route::Upload {
                name,
                session: session.to_owned(),
            });
        }
        if n >= 3 && segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
            return Ok(Route::UploadStart {
                name: name_of(n - 2)?,
            });
        }
        if n >= 3 && segs[n - 2] == "blobs" {
            let name = name_of(n - 2)?;
            return Ok(Route::Blob {
                name,
                digest: Digest::parse(segs[n - 1])?,
            });
        }
        if n >= 3 && segs[n - 2] == "manifests" {
            let name = name_of(n - 2)?;
            return Ok(Route::Manifest {
                name,
                reference: Reference::parse(segs[n - 1])?,
            });
        }
        if n >= 3 && segs[n - 2] == "referrers" {
            let name = name_of(n - 2)?;
            return Ok(Route::Referrers {
                name,
                digest: Digest::parse(segs[n - 1])?,
            });
        }
        Err(RouteError::NotFound)
    }
}

/// The upload session a `Location` points to (`/v2/<name>/blobs/uploads/<id>?...`,
/// a path or an absolute URL): the session the route of the requests that
/// follow will carry. `None` for anything else.
pub fn upload_session_of(location: &str) -> Option<String> {
    let uri: http::Uri = location.parse().ok()?;
    match Route::parse(uri.path()).ok()? {
        Route::Upload { session, .. } => Some(session),
        _ => None,
    }
}

/// Upload session ids are opaque to clients, but distribution makes UUIDs;
/// accept the URL-safe characters any registry would use.
fn valid_session(s: &str) -> bool {
    s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

/// Why a path was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("not an endpoint of the registry API")]
    NotFound,
    #[error("invalid repository name {0:?}")]
    NameInvalid(String),
    #[error("invalid tag {0:?}")]
    TagInvalid(String),
    #[error("invalid digest {0:?}")]
    DigestInvalid(String),
}

impl RouteError {
    /// The answer to a request whose path did not parse: a read of a
    /// manifest by a reference that is no valid tag is a manifest that does
    /// not exist (404 `MANIFEST_UNKNOWN`, as 2.8 and the OCI conformance
    /// suite say); writes keep the 400 that names what is wrong.
    pub fn answer_to(self, method: &http::Method) -> RegistryError {
        match (&self, method) {
            (RouteError::TagInvalid(t), &http::Method::GET | &http::Method::HEAD) => {
                RegistryError::new(
                    StatusCode::NOT_FOUND,
                    ErrorCode::ManifestUnknown,
                    format!("manifest unknown: {t:?} is not a valid tag"),
                )
            }
            _ => RegistryError::from(self),
        }
    }
}

impl From<RouteError> for RegistryError {
    fn from(e: RouteError) -> Self {
        let (status, code) = match &e {
            RouteError::NotFound => (StatusCode::NOT_FOUND, ErrorCode::Unsupported),
            RouteError::NameInvalid(_) => (StatusCode::BAD_REQUEST, ErrorCode::NameInvalid),
            RouteError::TagInvalid(_) => (StatusCode::BAD_REQUEST, ErrorCode::TagInvalid),
            RouteError::DigestInvalid(_) => (StatusCode::BAD_REQUEST, ErrorCode::DigestInvalid),
        };
        RegistryError::new(status, code, e.to_string())
    }
}

#[cfg(test)]
mod tests;
