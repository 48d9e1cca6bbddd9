//! regate's own calls to the upstream registry, as opposed to forwarding
//! clients' requests: resolving a tag, uploading a blob, putting and
//! deleting manifests, listing tags and repositories. Used by tag delete,
//! restore, the tag list, referrers, GC keepers and untagged cleanup;
//! always sends every manifest type in `Accept`, so the registry never
//! rewrites what it returns. Goes through the shared upstream client
//! ([`crate::proxy::UpstreamClient`]: its pool, the configured timeouts and
//! regate's upstream credentials); reads each answer whole (manifests, tag
//! lists: small).

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, Method, Request, StatusCode};
use http_body_util::BodyExt;

use crate::proxy::UpstreamClient;

/// Every manifest type; without them 2.8 rewrites or hides manifests.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Without its URL: this text may reach a client (in a 502), which must
    /// never learn the upstream's address.
    #[error("the upstream registry is unreachable: {}", crate::error::ErrorChain(.0.as_ref()))]
    Transport(crate::body::BoxError),
    /// No answer (or its body) within `upstream.response_timeout`.
    #[error("the upstream registry sent no answer to {what} within {after:?}")]
    Timeout {
        what: String,
        after: std::time::Duration,
    },
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
    client: UpstreamClient,
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

impl ApiError {
    /// A 502 for the client, or a 504 when the registry did not answer in
    /// time (as a forwarded request gets; this error's text names no
    /// address), and a warn line for the operator naming what regate was
    /// doing for which request.
    pub fn bad_gateway_for(self, route: &str, repository: &str) -> crate::error::RegistryError {
        if let ApiError::Timeout { .. } = self {
            tracing::warn!(target: "regate::upstream", route, repository, error = %self, "a call to the upstream registry timed out; answered 504");
            return crate::error::RegistryError::gateway_timeout(self.to_string());
        }
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

/// An answer of the registry, its body read whole.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    fn error(self, what: String) -> ApiError {
        ApiError::Status {
            what,
            status: self.status,
            body: String::from_utf8_lossy(&self.body)
                .chars()
                .take(500)
                .collect(),
        }
    }
}

impl RegistryApi {
    /// The registry at `origin` (`http://host:port`), through `client`.
    pub fn new(client: UpstreamClient, origin: &str) -> Self {
        RegistryApi {
            client,
            origin: origin.trim_end_matches('/').to_owned(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    /// Sends one request (`target`: a path on the registry, or an absolute
    /// URL it gave) and reads the answer whole, each within
    /// `upstream.response_timeout`. `what` names the call in errors.
    async fn call(
        &self,
        method: Method,
        target: &str,
        headers: &[(HeaderName, &str)],
        body: Option<Bytes>,
        what: impl Fn() -> String,
    ) -> Result<Answer, ApiError> {
        let uri = if target.starts_with("http") {
            target.to_owned()
        } else {
            self.url(target)
        };
        let mut req = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            req = req.header(name, *value);
        }
        let body = match body {
            Some(b) => crate::body::full(b),
            None => crate::body::empty(),
        };
        let req = req
            .body(body)
            .map_err(|e| ApiError::Transport(Box::new(e)))?;
        let limit = self.client.response_timeout();
        let timeout = || ApiError::Timeout {
            what: what(),
            after: limit,
        };
        let resp = tokio::time::timeout(limit, self.client.request(req))
            .await
            .map_err(|_| timeout())?
            .map_err(|e| ApiError::Transport(Box::new(e)))?;
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(limit, body.collect())
            .await
            .map_err(|_| timeout())?
            .map_err(|e| ApiError::Transport(Box::new(e)))?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// GET a manifest by tag or digest; `None` when it does not exist.
    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<Manifest>, ApiError> {
        let what = || format!("GET manifest {repo}:{reference}");
        let resp = self
            .call(
                Method::GET,
                &format!("/v2/{repo}/manifests/{reference}"),
                &[(header::ACCEPT, ACCEPT_MANIFESTS)],
                None,
                what,
            )
            .await?;
        if resp.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status.is_success() {
            return Err(resp.error(what()));
        }
        let media_type = resp.header("content-type").unwrap_or_default();
        let claimed = resp.header("docker-content-digest");
        let bytes = resp.body;
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
        let what = || format!("HEAD manifest {repo}:{reference}");
        let resp = self
            .call(
                Method::HEAD,
                &format!("/v2/{repo}/manifests/{reference}"),
                &[(header::ACCEPT, ACCEPT_MANIFESTS)],
                None,
                what,
            )
            .await?;
        match resp.status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(resp.header("docker-content-digest")),
            _ => Err(resp.error(what())),
        }
    }

    /// A monolithic upload: POST a session, then PUT the bytes with the digest.
    pub async fn upload_blob(&self, repo: &str, bytes: Bytes) -> Result<String, ApiError> {
        let digest = crate::route::Digest::sha256_of(&bytes).to_string();
        let what = || format!("POST upload in {repo}");
        let resp = self
            .call(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                None,
                what,
            )
            .await?;
        if resp.status != StatusCode::ACCEPTED {
            return Err(resp.error(what()));
        }
        let location = resp.header("location").unwrap_or_default();
        let sep = if location.contains('?') { '&' } else { '?' };
        let what = || format!("PUT blob {digest} in {repo}");
        let resp = self
            .call(
                Method::PUT,
                &format!("{location}{sep}digest={digest}"),
                &[(header::CONTENT_TYPE, "application/octet-stream")],
                Some(bytes),
                what,
            )
            .await?;
        if resp.status != StatusCode::CREATED {
            return Err(resp.error(what()));
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
        let what = || format!("PUT manifest {repo}:{reference}");
        let resp = self
            .call(
                Method::PUT,
                &format!("/v2/{repo}/manifests/{reference}"),
                &[(header::CONTENT_TYPE, media_type)],
                Some(bytes),
                what,
            )
            .await?;
        if resp.status != StatusCode::CREATED {
            return Err(resp.error(what()));
        }
        match resp.header("docker-content-digest") {
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
        let what = || format!("DELETE manifest {repo}@{digest}");
        let resp = self
            .call(
                Method::DELETE,
                &format!("/v2/{repo}/manifests/{digest}"),
                &[],
                None,
                what,
            )
            .await?;
        match resp.status {
            StatusCode::ACCEPTED | StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(resp.error(what())),
        }
    }

    /// HEAD a blob in a repository: its size, or `None` when the repository
    /// does not hold it.
    pub async fn blob_size(&self, repo: &str, digest: &str) -> Result<Option<u64>, ApiError> {
        let what = || format!("HEAD blob {repo}@{digest}");
        let resp = self
            .call(
                Method::HEAD,
                &format!("/v2/{repo}/blobs/{digest}"),
                &[],
                None,
                what,
            )
            .await?;
        match resp.status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(
                resp.header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            _ => Err(resp.error(what())),
        }
    }

    /// Unlinks a blob from a repository (the data goes at the next GC).
    pub async fn delete_blob(&self, repo: &str, digest: &str) -> Result<bool, ApiError> {
        let what = || format!("DELETE blob {repo}@{digest}");
        let resp = self
            .call(
                Method::DELETE,
                &format!("/v2/{repo}/blobs/{digest}"),
                &[],
                None,
                what,
            )
            .await?;
        match resp.status {
            StatusCode::ACCEPTED | StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(resp.error(what())),
        }
    }

    /// Asks the registry to delete a tag itself.
    pub async fn delete_tag_native(
        &self,
        repo: &str,
        tag: &str,
    ) -> Result<NativeTagDelete, ApiError> {
        let what = || format!("DELETE tag {repo}:{tag}");
        let resp = self
            .call(
                Method::DELETE,
                &format!("/v2/{repo}/manifests/{tag}"),
                &[],
                None,
                what,
            )
            .await?;
        match resp.status {
            StatusCode::ACCEPTED | StatusCode::OK => Ok(NativeTagDelete::Deleted),
            StatusCode::METHOD_NOT_ALLOWED => Ok(NativeTagDelete::Disabled),
            StatusCode::NOT_FOUND => Ok(NativeTagDelete::NotFound),
            StatusCode::BAD_REQUEST => {
                let body = String::from_utf8_lossy(&resp.body).into_owned();
                // 2.8 parses the reference as a digest and fails; OCI registries
                // that do not support it answer UNSUPPORTED.
                if body.contains("DIGEST_INVALID") || body.contains("UNSUPPORTED") {
                    Ok(NativeTagDelete::NotImplemented)
                } else {
                    Err(ApiError::Status {
                        what: what(),
                        status: StatusCode::BAD_REQUEST,
                        body,
                    })
                }
            }
            _ => Err(resp.error(what())),
        }
    }

    /// Every tag of a repository (2.8 ignores `n` and `last`); `None` for an
    /// unknown repository. The raw response is returned for errors.
    pub async fn tags(
        &self,
        repo: &str,
    ) -> Result<Result<Vec<String>, (StatusCode, Bytes)>, ApiError> {
        let what = || format!("tags/list of {repo}");
        let resp = self
            .call(
                Method::GET,
                &format!("/v2/{repo}/tags/list"),
                &[],
                None,
                what,
            )
            .await?;
        let status = resp.status;
        let body = resp.body;
        if !status.is_success() {
            return Ok(Err((status, body)));
        }
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let list: TagList = serde_json::from_slice(&body).map_err(|e| ApiError::Status {
            what: what(),
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
        let what = || "GET upload status".to_owned();
        let resp = self
            .call(Method::GET, path_and_query, &[], None, what)
            .await?;
        match resp.status {
            StatusCode::NO_CONTENT | StatusCode::OK => {
                Ok(crate::upload_check::next_offset(&resp.headers, Some(0)))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(resp.error(what())),
        }
    }

    /// Every repository, following the catalog's `Link` pages.
    pub async fn catalog(&self) -> Result<Vec<String>, ApiError> {
        let mut out = Vec::new();
        let mut pages = crate::pages::Pages::starting_at("/v2/_catalog?n=1000");
        let what = || "GET _catalog".to_owned();
        while let Some(path) = pages.next_path() {
            let resp = self.call(Method::GET, &path, &[], None, what).await?;
            if !resp.status.is_success() {
                return Err(resp.error(what()));
            }
            pages.follow(&resp.headers);
            let v: serde_json::Value =
                serde_json::from_slice(&resp.body).map_err(|e| ApiError::Status {
                    what: what(),
                    status: resp.status,
                    body: format!("unreadable JSON: {e}"),
                })?;
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

impl RegistryApi {
    /// GET a (small) blob whole, e.g. an image config; `None` when the
    /// repository does not hold it.
    pub async fn blob(&self, repo: &str, digest: &str) -> Result<Option<Bytes>, ApiError> {
        let what = || format!("GET blob {repo}@{digest}");
        let resp = self
            .call(
                Method::GET,
                &format!("/v2/{repo}/blobs/{digest}"),
                &[],
                None,
                what,
            )
            .await?;
        match resp.status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(resp.body)),
            _ => Err(resp.error(what())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::AsyncReadExt;

    use super::*;

    /// A stub registry that reads one request head, hands it over, and
    /// never answers.
    async fn silent_registry() -> (String, tokio::sync::oneshot::Receiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed before its request head");
                head.extend_from_slice(&buf[..n]);
            }
            let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(conn);
        });
        (origin, rx)
    }

    #[tokio::test]
    async fn calls_carry_the_upstream_credentials_and_stop_at_the_response_timeout() {
        let (origin, head) = silent_registry().await;
        let mut credentials = http::HeaderValue::from_static("Basic cmVnYXRlOnB3");
        credentials.set_sensitive(true);
        let client = UpstreamClient::new(
            Duration::from_secs(1),
            Duration::from_millis(300),
            Some(credentials),
        );
        let api = RegistryApi::new(client, &origin);
        let started = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(10), api.resolve("a/b", "v1"))
            .await
            .expect("the configured response timeout was not applied");
        assert!(
            matches!(&result, Err(ApiError::Timeout { after, .. }) if after.as_millis() == 300),
            "{result:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
        let head = head.await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("head /v2/a/b/manifests/v1 "), "{head}");
        assert!(
            head.contains("authorization: basic cmvnyxrlonb3\r\n"),
            "{head}"
        );
        assert!(head.contains("accept: application/vnd.oci.image.manifest.v1+json"));
    }
}
