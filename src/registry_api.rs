//! regate's own calls to the upstream registry (reqwest), as opposed to
//! forwarding clients' requests: resolving a tag, uploading a blob, putting
//! and deleting manifests, listing tags. Used by tag delete, restore and the
//! tag list; always sends every manifest type in `Accept`, so the registry
//! never rewrites what it returns.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

/// Every manifest type; without them 2.8 rewrites or hides manifests.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Without its URL: this text may reach a client (in a 502), which must
    /// never learn the upstream's address.
    #[error("the upstream registry is unreachable: {}", crate::error::ErrorChain(.0))]
    Transport(reqwest::Error),
    #[error("the upstream registry answered {status} to {what}: {body}")]
    Status {
        what: String,
        status: StatusCode,
        body: String,
    },
    #[error("the upstream registry returned digest {got} for {what}, expected {want}")]
    DigestMismatch {
        what: String,
        got: String,
        want: String,
    },
}

/// A manifest as the registry stores it.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: String,
    pub media_type: String,
    pub bytes: Bytes,
}

#[derive(Clone)]
pub struct RegistryApi {
    http: reqwest::Client,
    origin: String,
}

/// The origin only: never the credentials.
impl std::fmt::Debug for RegistryApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryApi")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// What a DELETE by tag got from the registry itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NativeTagDelete {
    /// Distribution 3.x and others: the tag is gone.
    Deleted,
    /// Deletes are disabled upstream (405).
    Disabled,
    /// The registry does not implement it (2.8: 400 DIGEST_INVALID).
    NotImplemented,
    /// The tag does not exist.
    NotFound,
}

impl From<reqwest::Error> for ApiError {
    fn from(e: reqwest::Error) -> Self {
        ApiError::Transport(e.without_url())
    }
}

impl ApiError {
    /// A 502 for the client (this error's text names no address) and a warn
    /// line for the operator naming what regate was doing for which request.
    pub fn bad_gateway_for(self, route: &str, repository: &str) -> crate::error::RegistryError {
        tracing::warn!(target: "regate::upstream", route, repository, error = %self, "a call to the upstream registry failed; answered 502");
        crate::error::RegistryError::bad_gateway(self.to_string())
    }

    /// The registry refused a manifest because a blob it references is not
    /// in the repository (`MANIFEST_BLOB_UNKNOWN`).
    pub fn is_blob_unknown(&self) -> bool {
        matches!(self, ApiError::Status { status, body, .. }
            if *status == StatusCode::BAD_REQUEST && body.contains("BLOB_UNKNOWN"))
    }
}

async fn status_error(what: String, resp: reqwest::Response) -> ApiError {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    ApiError::Status {
        what,
        status,
        body: body.chars().take(500).collect(),
    }
}

impl RegistryApi {
    pub fn new(origin: &str) -> Self {
        Self::with_authorization(origin, None)
    }

    /// Like [`RegistryApi::new`], sending `authorization` (regate's own
    /// upstream credentials, `[upstream] username`) with every call.
    pub fn with_authorization(origin: &str, authorization: Option<http::HeaderValue>) -> Self {
        let mut headers = http::HeaderMap::new();
        if let Some(v) = authorization {
            headers.insert(http::header::AUTHORIZATION, v);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(32)
            .build()
            .expect("a plain HTTP client always builds");
        RegistryApi {
            http,
            origin: origin.trim_end_matches('/').to_owned(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    /// GET a manifest by tag or digest; `None` when it does not exist.
    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<Manifest>, ApiError> {
        let resp = self
            .http
            .get(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("accept", ACCEPT_MANIFESTS)
            .send()
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(status_error(format!("GET manifest {repo}:{reference}"), resp).await);
        }
        let media_type = header(&resp, "content-type").unwrap_or_default();
        let claimed = header(&resp, "docker-content-digest");
        let bytes = resp.bytes().await?;
        let digest = crate::route::Digest::sha256_of(&bytes).to_string();
        if let Some(claimed) = claimed {
            if claimed != digest {
                return Err(ApiError::DigestMismatch {
                    what: format!("{repo}:{reference}"),
                    got: claimed,
                    want: digest,
                });
            }
        }
        Ok(Some(Manifest {
            digest,
            media_type,
            bytes,
        }))
    }

    /// HEAD a manifest: its digest, or `None` when it does not exist.
    pub async fn resolve(&self, repo: &str, reference: &str) -> Result<Option<String>, ApiError> {
        let resp = self
            .http
            .head(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("accept", ACCEPT_MANIFESTS)
            .send()
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(header(&resp, "docker-content-digest")),
            _ => Err(status_error(format!("HEAD manifest {repo}:{reference}"), resp).await),
        }
    }

    /// A monolithic upload: POST a session, then PUT the bytes with the digest.
    pub async fn upload_blob(&self, repo: &str, bytes: Bytes) -> Result<String, ApiError> {
        let digest = crate::route::Digest::sha256_of(&bytes).to_string();
        let resp = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/")))
            .send()
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_error(format!("POST upload in {repo}"), resp).await);
        }
        let location = header(&resp, "location").unwrap_or_default();
        let location = if location.starts_with("http") {
            location
        } else {
            self.url(&location)
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let resp = self
            .http
            .put(format!("{location}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(status_error(format!("PUT blob {digest} in {repo}"), resp).await);
        }
        Ok(digest)
    }

    /// PUT a manifest; checks the digest the registry computed.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<String, ApiError> {
        let want = crate::route::Digest::sha256_of(&bytes).to_string();
        let resp = self
            .http
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("content-type", media_type)
            .body(bytes)
            .send()
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(status_error(format!("PUT manifest {repo}:{reference}"), resp).await);
        }
        match header(&resp, "docker-content-digest") {
            Some(got) if got != want => Err(ApiError::DigestMismatch {
                what: format!("{repo}:{reference}"),
                got,
                want,
            }),
            _ => Ok(want),
        }
    }

    /// DELETE a manifest by digest: `true` when deleted, `false` when unknown.
    pub async fn delete_manifest(&self, repo: &str, digest: &str) -> Result<bool, ApiError> {
        let resp = self
            .http
            .delete(self.url(&format!("/v2/{repo}/manifests/{digest}")))
            .send()
            .await?;
        match resp.status() {
            StatusCode::ACCEPTED | StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error(format!("DELETE manifest {repo}@{digest}"), resp).await),
        }
    }

    /// HEAD a blob in a repository: its size, or `None` when the repository
    /// does not hold it.
    pub async fn blob_size(&self, repo: &str, digest: &str) -> Result<Option<u64>, ApiError> {
        let resp = self
            .http
            .head(self.url(&format!("/v2/{repo}/blobs/{digest}")))
            .send()
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(
                header(&resp, "content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            _ => Err(status_error(format!("HEAD blob {repo}@{digest}"), resp).await),
        }
    }

    /// Unlinks a blob from a repository (the data goes at the next GC).
    pub async fn delete_blob(&self, repo: &str, digest: &str) -> Result<bool, ApiError> {
        let resp = self
            .http
            .delete(self.url(&format!("/v2/{repo}/blobs/{digest}")))
            .send()
            .await?;
        match resp.status() {
            StatusCode::ACCEPTED | StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error(format!("DELETE blob {repo}@{digest}"), resp).await),
        }
    }

    /// Asks the registry to delete a tag itself.
    pub async fn delete_tag_native(
        &self,
        repo: &str,
        tag: &str,
    ) -> Result<NativeTagDelete, ApiError> {
        let resp = self
            .http
            .delete(self.url(&format!("/v2/{repo}/manifests/{tag}")))
            .send()
            .await?;
        match resp.status() {
            StatusCode::ACCEPTED | StatusCode::OK => Ok(NativeTagDelete::Deleted),
            StatusCode::METHOD_NOT_ALLOWED => Ok(NativeTagDelete::Disabled),
            StatusCode::NOT_FOUND => Ok(NativeTagDelete::NotFound),
            StatusCode::BAD_REQUEST => {
                let body = resp.text().await.unwrap_or_default();
                // 2.8 parses the reference as a digest and fails; OCI registries
                // that do not support it answer UNSUPPORTED.
                if body.contains("DIGEST_INVALID") || body.contains("UNSUPPORTED") {
                    Ok(NativeTagDelete::NotImplemented)
                } else {
                    Err(ApiError::Status {
                        what: format!("DELETE tag {repo}:{tag}"),
                        status: StatusCode::BAD_REQUEST,
                        body,
                    })
                }
            }
            _ => Err(status_error(format!("DELETE tag {repo}:{tag}"), resp).await),
        }
    }

    /// Every tag of a repository (2.8 ignores `n` and `last`); `None` for an
    /// unknown repository. The raw response is returned for errors.
    pub async fn tags(
        &self,
        repo: &str,
    ) -> Result<Result<Vec<String>, (StatusCode, Bytes)>, ApiError> {
        let resp = self
            .http
            .get(self.url(&format!("/v2/{repo}/tags/list")))
            .send()
            .await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            return Ok(Err((status, body)));
        }
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let list: TagList = serde_json::from_slice(&body).map_err(|e| ApiError::Status {
            what: format!("tags/list of {repo}"),
            status,
            body: format!("unreadable JSON: {e}"),
        })?;
        Ok(Ok(list.tags.unwrap_or_default()))
    }
}

impl RegistryApi {
    /// The next offset of an upload session, from its status (`GET` on the
    /// session URL, path and query as the client sent them); `None` when the
    /// registry does not know the session.
    pub async fn upload_status(&self, path_and_query: &str) -> Result<Option<u64>, ApiError> {
        let resp = self.http.get(self.url(path_and_query)).send().await?;
        match resp.status() {
            StatusCode::NO_CONTENT | StatusCode::OK => {
                Ok(crate::upload_check::next_offset(resp.headers(), Some(0)))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error("GET upload status".into(), resp).await),
        }
    }

    /// Every repository, following the catalog's `Link` pages.
    pub async fn catalog(&self) -> Result<Vec<String>, ApiError> {
        let mut out = Vec::new();
        let mut next = Some("/v2/_catalog?n=1000".to_owned());
        while let Some(path) = next.take() {
            let resp = self.http.get(self.url(&path)).send().await?;
            if !resp.status().is_success() {
                return Err(status_error("GET _catalog".into(), resp).await);
            }
            next = header(&resp, "link")
                .and_then(|l| Some(l.trim_start_matches('<').split('>').next()?.to_owned()));
            let v: serde_json::Value = resp.json().await?;
            out.extend(
                v["repositories"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.as_str().map(str::to_owned)),
            );
        }
        Ok(out)
    }
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
