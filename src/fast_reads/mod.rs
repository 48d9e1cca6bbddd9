//! Fast reads: manifest and blob `GET`/`HEAD` answered from the registry's
//! storage (filesystem driver) instead of through the registry, when regate
//! knows the storage (`[storage] fast_reads`, on by default in managed mode
//! or with a storage root).
//!
//! Owns the one entry point, [`FastReads::answer`], which either answers a
//! read exactly as 2.8 would or says why not ([`Forward`], the outcome the
//! caller counts in the metrics), and then the caller forwards the request. Exactness first: anything the storage does not hold (a
//! "not found" is always confirmed by the registry, so a push that just
//! landed is never reported missing), a layout it does not know, an `Accept`
//! for which 2.8 would convert or refuse the manifest, a conditional request,
//! a range other than one satisfiable byte range, or any I/O error goes to
//! the registry. Auth, the write gate and tag locks are the caller's: this
//! is called where the read would otherwise be forwarded.
//!
//! `layout` reads the storage (blocking, always on the blocking pool),
//! `manifest` and `blob` shape 2.8's answers, `range` reads `Range`.

mod blob;
mod layout;
mod manifest;
mod range;

use std::path::Path;

use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};

use crate::body::{empty, full, BoxError, ProxyBody};
use crate::route::{Reference, Route};
use http_body_util::BodyExt;

pub use layout::{Layout, Miss};

pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

/// Request headers that make 2.8 answer 304, 412 or the whole blob instead:
/// such requests are forwarded.
const CONDITIONAL: [HeaderName; 5] = [
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

/// Reads answered from one storage root.
#[derive(Debug, Clone)]
pub struct FastReads {
    layout: Layout,
    /// Blob chunks in flight over all downloads (the memory bound).
    in_flight: blob::InFlight,
}

fn response(
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: ProxyBody,
) -> Response<ProxyBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    for (k, v) in headers {
        h.insert(k, v);
    }
    h.insert(
        crate::error::API_VERSION_HEADER,
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}

fn missed(route: &Route, miss: &Miss) {
    if miss.is_fault() {
        tracing::warn!(target: "regate::fast_reads", route = route.kind().as_str(), error = %miss, "cannot answer from the storage; forwarded to the registry");
    } else {
        tracing::debug!(target: "regate::fast_reads", route = route.kind().as_str(), error = %miss, "forwarded to the registry");
    }
}

/// Why a read goes to the registry (the `outcome` of the
/// `regate_fast_reads` metric; `served` when the storage answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// Not a manifest or blob `GET`/`HEAD`: never asked of the storage.
    NotARead,
    /// Not in the storage (a tag, link or data file): the registry's 404,
    /// or a push that just landed.
    Miss,
    /// A digest of another algorithm than sha256.
    OtherAlgorithm,
    /// A layout regate does not know (a link that is not a digest, a
    /// directory where data should be, a manifest over 4 MiB).
    Layout,
    /// An I/O error reading the storage.
    IoError,
    /// A manifest without one of the four media types (schema 1, no
    /// `mediaType`): 2.8 may answer it otherwise.
    ManifestType,
    /// The client's `Accept` does not cover the stored manifest type.
    Accept,
    /// A conditional request (`If-None-Match`, ...).
    Conditional,
    /// Several ranges, or one 2.8 refuses (416).
    Range,
}

impl Forward {
    pub fn as_str(self) -> &'static str {
        match self {
            Forward::NotARead => "not_a_read",
            Forward::Miss => "miss",
            Forward::OtherAlgorithm => "other_algorithm",
            Forward::Layout => "layout",
            Forward::IoError => "io_error",
            Forward::ManifestType => "manifest_type",
            Forward::Accept => "accept",
            Forward::Conditional => "conditional",
            Forward::Range => "range",
        }
    }

    fn from_miss(route: &Route, miss: &Miss) -> Self {
        missed(route, miss);
        match miss {
            Miss::NotFound(_) => Forward::Miss,
            Miss::OtherAlgorithm(_) => Forward::OtherAlgorithm,
            Miss::Unexpected { .. } => Forward::Layout,
            Miss::Io { .. } => Forward::IoError,
        }
    }
}

/// The storage's answer, or why the read is forwarded.
pub type Answer = Result<Response<ProxyBody>, Forward>;

/// A blocking task that did not finish (a panic, the runtime stopping).
fn lost(e: tokio::task::JoinError) -> Forward {
    tracing::warn!(target: "regate::fast_reads", error = %e, "a storage read did not finish; forwarded to the registry");
    Forward::IoError
}

impl FastReads {
    pub fn new(root: &Path) -> Self {
        FastReads {
            layout: Layout::new(root),
            in_flight: blob::InFlight::default(),
        }
    }

    /// 2.8's answer to this manifest or blob read, from the storage; or
    /// why to forward it.
    pub async fn answer(&self, method: &Method, headers: &HeaderMap, route: &Route) -> Answer {
        let head = match *method {
            Method::GET => false,
            Method::HEAD => true,
            _ => return Err(Forward::NotARead),
        };
        if !matches!(route, Route::Manifest { .. } | Route::Blob { .. }) {
            return Err(Forward::NotARead);
        }
        if CONDITIONAL.iter().any(|h| headers.contains_key(h)) {
            return Err(Forward::Conditional);
        }
        let layout = self.layout.clone();
        match route.clone() {
            Route::Manifest { name, reference } => {
                let by_tag = matches!(reference, Reference::Tag(_));
                let read = tokio::task::spawn_blocking(move || {
                    let digest = match reference {
                        Reference::Tag(tag) => layout.tag(&name, &tag)?,
                        Reference::Digest(d) => d,
                    };
                    let bytes = layout.manifest(&name, &digest)?;
                    Ok::<_, Miss>((digest, bytes))
                })
                .await
                .map_err(lost)?;
                let (digest, bytes) = read.map_err(|m| Forward::from_miss(route, &m))?;
                let stored = manifest::stored_type(&bytes).ok_or(Forward::ManifestType)?;
                if !manifest::sent_as_stored(headers, stored, by_tag) {
                    return Err(Forward::Accept);
                }
                let headers = manifest::headers(stored, bytes.len(), &digest);
                let body = if head { empty() } else { full(bytes) };
                Ok(response(StatusCode::OK, headers, body))
            }
            Route::Blob { name, digest } => {
                let wanted = digest.clone();
                let open = tokio::task::spawn_blocking(move || layout.blob(&name, &wanted))
                    .await
                    .map_err(lost)?;
                let blob = open.map_err(|m| Forward::from_miss(route, &m))?;
                let ranged = range::parse(
                    headers
                        .get_all(header::RANGE)
                        .iter()
                        .map(HeaderValue::as_bytes),
                    blob.size,
                );
                if ranged == range::Ranged::Forward {
                    return Err(Forward::Range);
                }
                let (status, headers, start, end) = blob::head(&digest, blob.size, ranged);
                let body = if head {
                    empty()
                } else {
                    blob::FileBody::new(blob.file, start, end, self.in_flight.clone())
                        .map_err(|e: BoxError| e)
                        .boxed_unsync()
                };
                Ok(response(status, headers, body))
            }
            _ => Err(Forward::NotARead),
        }
    }
}
