//! Which writes the draining rules tell apart: the start of an upload, a
//! request on an upload session, a manifest PUT, anything else.

use http::Method;

use crate::route::{Reference, Route};

/// What kind of write a request is, for the draining rules.
#[derive(Debug, Clone)]
pub(super) enum WriteKind {
    /// POST to `blobs/uploads/`: the first request of a blob upload (or a mount).
    UploadStart { repo: String },
    /// PATCH/PUT/DELETE on an upload session.
    UploadSession { repo: String, session: String },
    /// PUT of a manifest.
    ManifestPut { repo: String, by_tag: bool },
    /// Deletes and anything else.
    Other,
}

impl WriteKind {
    pub(super) fn of(method: &Method, route: &Route) -> Option<WriteKind> {
        if !matches!(
            *method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        ) {
            return None;
        }
        Some(match (method, route) {
            (&Method::POST, Route::UploadStart { name }) => WriteKind::UploadStart {
                repo: name.to_string(),
            },
            (_, Route::Upload { name, session }) => WriteKind::UploadSession {
                repo: name.to_string(),
                session: session.clone(),
            },
            (&Method::PUT, Route::Manifest { name, reference }) => WriteKind::ManifestPut {
                repo: name.to_string(),
                by_tag: matches!(reference, Reference::Tag(_)),
            },
            _ => WriteKind::Other,
        })
    }

    pub(super) fn repo(&self) -> Option<&str> {
        match self {
            WriteKind::UploadStart { repo }
            | WriteKind::UploadSession { repo, .. }
            | WriteKind::ManifestPut { repo, .. } => Some(repo),
            WriteKind::Other => None,
        }
    }
}
