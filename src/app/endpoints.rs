//! The innermost service of the stack ([`super::layers::endpoints`]): what regate answers itself or wraps around a
//! forward, by route and method. Tag deletes (one, or many at once) and restores, the sorted tag
//! list, the referrers API, manifest PUTs (read once, for `OCI-Subject` and
//! the referrers index), digest deletes, strict chunked uploads, and the tag
//! locks around manifest reads and writes; the `[[protect]]` check of a
//! manifest PUT by tag, and the push and pull times of tags (for retention);
//! manifest and blob reads go to `fast_reads` first when it is on, and a
//! forwarded blob GET's 416 is sent whole (`range_refusal`).
//! Everything else is forwarded as is.
//! A method one of regate's own endpoints does not serve ([`Route::own_methods`])
//! gets 405 with `Allow`.

use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use super::responses::{empty_response, json_response};
use super::{App, ConnInfo};
use crate::body::{full, read_capped, CappedReadError, ProxyBody};
use crate::error::{ErrorCode, RegistryError};
use crate::route::{Digest, Reference, RepoName, Route, Tag};
use crate::upload_check;

/// The largest manifest accepted (distribution's own limit).
const MAX_MANIFEST: usize = 4 * 1024 * 1024;

/// 405 for a method one of regate's own endpoints does not serve.
fn method_not_allowed(method: &Method, served: &[&str]) -> RegistryError {
    let allow = served.join(", ");
    RegistryError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::Unsupported,
        format!("{method} is not served here; use {allow}"),
    )
    .with_header(
        header::ALLOW,
        HeaderValue::from_str(&allow).expect("method names are header-safe"),
    )
}

/// A tag delete's error as the client sees it; one the registry caused
/// (502) is also logged for the operator, at warn.
fn logged(route: &Route, e: crate::tag_delete::TagDeleteError) -> RegistryError {
    let err = RegistryError::from(e);
    if err.status == StatusCode::BAD_GATEWAY {
        tracing::warn!(
            target: "regate::upstream",
            route = route.kind().as_str(),
            repository = route.repository().map(|r| r.as_str()),
            error = %err.message,
            "a call to the upstream registry failed; answered 502"
        );
    }
    err
}

impl App {
    pub(super) async fn endpoints(
        &self,
        req: Request<ProxyBody>,
        route: Route,
        conn: &ConnInfo,
        account: &str,
    ) -> Result<Response<ProxyBody>, RegistryError> {
        let method = req.method().clone();
        if let Some(served) = route.own_methods() {
            if !served.contains(&method.as_str()) {
                return Err(method_not_allowed(&method, served));
            }
        }
        match (&route, &method) {
            (
                Route::Manifest {
                    name,
                    reference: Reference::Tag(tag),
                },
                &Method::DELETE,
            )
            | (Route::TagReference { name, tag }, &Method::DELETE) => {
                self.tags
                    .delete(name, tag, account)
                    .await
                    .map_err(|e| logged(&route, e))?;
                Ok(empty_response(StatusCode::ACCEPTED))
            }
            (Route::TagReference { .. }, &Method::OPTIONS) => {
                let mut resp = empty_response(StatusCode::OK);
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("DELETE, OPTIONS"));
                Ok(resp)
            }
            (Route::DeletedTags { name }, &Method::GET) => self.deleted_tags(name, account).await,
            (Route::RestoreTag { name, tag }, &Method::POST) => {
                let restored = self
                    .tags
                    .restore(name, tag, account)
                    .await
                    .map_err(|e| logged(&route, e))?;
                let body = serde_json::json!({ "name": name.as_str(), "tag": tag.as_str(), "digest": restored.digest });
                Ok(json_response(StatusCode::CREATED, &body))
            }
            (Route::DeleteTags { name }, &Method::POST) => {
                self.delete_tags(name, req.into_body(), account, conn.peer)
                    .await
            }
            (Route::TagsList { name }, &Method::GET) => {
                crate::tag_list::serve(&self.api, name, req.uri().query()).await
            }
            (Route::Referrers { name, digest }, &Method::GET) => {
                self.referrers
                    .serve(name.as_str(), digest.as_str(), req.uri().query())
                    .await
            }
            (
                Route::Manifest {
                    name,
                    reference: Reference::Digest(digest),
                },
                &Method::DELETE,
            ) => self.delete_by_digest(req, &route, name, digest, conn).await,
            (
                Route::Manifest {
                    name,
                    reference: Reference::Tag(tag),
                },
                &Method::GET | &Method::HEAD,
            ) => self.read_tag(req, &route, name, tag, conn).await,
            (
                Route::Manifest {
                    reference: Reference::Digest(_),
                    ..
                }
                | Route::Blob { .. },
                &Method::GET | &Method::HEAD,
            ) => {
                if let Some(resp) = self.answer_from_storage(&req, &route).await {
                    return Ok(resp);
                }
                let blob_get = matches!(route, Route::Blob { .. }) && method == Method::GET;
                let resp = self.forward(req, &route, conn).await?;
                if blob_get {
                    return Ok(crate::range_refusal::whole(resp).await);
                }
                Ok(resp)
            }
            (Route::Manifest { name, reference }, &Method::PUT) => {
                self.put_manifest_locked(req, &route, name, reference, conn)
                    .await
            }
            (Route::UploadStart { name }, &Method::POST) => {
                self.start_upload(req, &route, name, conn).await
            }
            (Route::Upload { name, session }, &Method::PATCH) => {
                self.patch_upload(req, &route, name, session, conn).await
            }
            (Route::Upload { name, session }, &Method::GET) => {
                let resp = self.forward(req, &route, conn).await?;
                Ok(self.uploads.current_status(name.as_str(), session, resp))
            }
            (Route::Upload { name, session }, &Method::PUT | &Method::DELETE) => {
                let resp = self.forward(req, &route, conn).await?;
                if resp.status().is_success() {
                    self.uploads.forget(name.as_str(), session);
                }
                Ok(resp)
            }
            _ => self.forward(req, &route, conn).await,
        }
    }

    /// Regate's record of the tags deleted in `name` (who deleted them
    /// only for those who may delete there).
    async fn deleted_tags(
        &self,
        name: &RepoName,
        account: &str,
    ) -> Result<Response<ProxyBody>, RegistryError> {
        let (state, repo) = (self.state.clone(), name.to_string());
        let list = crate::state::blocking(move || state.deletions(Some(&repo), 1000))
            .await
            .map_err(crate::tag_delete::TagDeleteError::from)?;
        // Who deleted what is for those who may delete there.
        let caller = Some(account).filter(|a| *a != crate::rules::ANONYMOUS);
        let mut list = serde_json::to_value(list).unwrap_or_default();
        if !self.auth.sees_deleters(caller, name.as_str()) {
            for d in list.as_array_mut().into_iter().flatten() {
                d["account"] = serde_json::Value::Null;
            }
        }
        Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({ "name": name.as_str(), "deleted": list }),
        ))
    }

    /// A delete by digest, under the repository's exclusive lock, after the
    /// checks of shared digests and protected tags; the referrers index
    /// follows.
    async fn delete_by_digest(
        &self,
        req: Request<ProxyBody>,
        route: &Route,
        name: &RepoName,
        digest: &Digest,
        conn: &ConnInfo,
    ) -> Result<Response<ProxyBody>, RegistryError> {
        // 2.8 untags by reading every tag link of the repository:
        // no tag may be rewritten meanwhile (see TagLocks::repo_shared).
        // Taken before the check, so a tag pushed while it runs is
        // either seen by it or waits until the delete is done.
        let _repo = self.tags.locks.repo_exclusive(name.as_str()).await;
        self.tags
            .check_digest_delete(name, digest.as_str())
            .await
            .map_err(|e| logged(route, e))?;
        let resp = self.forward(req, route, conn).await?;
        if resp.status() == StatusCode::ACCEPTED {
            self.referrers
                .record_delete(name.as_str(), digest.as_str())
                .await;
        }
        Ok(resp)
    }

    /// A manifest read by tag, under the tag's read lock; a pull noted for
    /// retention.
    async fn read_tag(
        &self,
        req: Request<ProxyBody>,
        route: &Route,
        name: &RepoName,
        tag: &Tag,
        conn: &ConnInfo,
    ) -> Result<Response<ProxyBody>, RegistryError> {
        // Wait for a delete or push of this tag to finish, and hold
        // them off until the registry has answered: nobody ever sees
        // the dummy.
        let _reading = self.tags.locks.read(name.as_str(), tag.as_str()).await;
        let resp = match self.answer_from_storage(&req, route).await {
            Some(resp) => resp,
            None => self.forward(req, route, conn).await?,
        };
        if resp.status().is_success() {
            self.times.pulled(name.as_str(), tag.as_str());
        }
        Ok(resp)
    }

    /// A manifest PUT under its tag's write lock (and the repository's
    /// shared lock) when it names a tag.
    async fn put_manifest_locked(
        &self,
        req: Request<ProxyBody>,
        route: &Route,
        name: &RepoName,
        reference: &Reference,
        conn: &ConnInfo,
    ) -> Result<Response<ProxyBody>, RegistryError> {
        // Exclusive for a tag: 2.8 rewrites the tag's link file in
        // place (truncate, then write), and a read in between gets a 500.
        let _writing = match reference {
            Reference::Tag(tag) => {
                let t = self.tags.locks.write(name.as_str(), tag.as_str()).await;
                Some((t, self.tags.locks.repo_shared(name.as_str()).await))
            }
            Reference::Digest(_) => None,
        };
        self.put_manifest(req, route, name, conn).await
    }

    /// A new upload session, remembered for the strict chunked-upload checks.
    async fn start_upload(
        &self,
        req: Request<ProxyBody>,
        route: &Route,
        name: &RepoName,
        conn: &ConnInfo,
    ) -> Result<Response<ProxyBody>, RegistryError> {
        let resp = self.forward(req, route, conn).await?;
        if resp.status() == StatusCode::ACCEPTED {
            self.uploads.started(
                name.as_str(),
                resp.headers().get(header::LOCATION),
                resp.headers(),
            );
        }
        Ok(resp)
    }

    /// The read answered from the storage (`fast_reads`), or `None`: forward
    /// it; counted in the `fast_reads` metric either way. (The future holds
    /// no reference to the request, whose body is not `Sync`.)
    fn answer_from_storage<'a>(
        &'a self,
        req: &Request<ProxyBody>,
        route: &'a Route,
    ) -> impl std::future::Future<Output = Option<Response<ProxyBody>>> + Send + 'a {
        let asked = self
            .fast_reads
            .as_ref()
            .map(|f| (f, req.method().clone(), req.headers().clone()));
        async move {
            let (fast, method, headers) = asked?;
            let kind = match route {
                Route::Manifest { .. } => "manifest",
                _ => "blob",
            };
            match fast.answer(&method, &headers, route).await {
                Ok(resp) => {
                    self.metrics.fast_read(kind, "served");
                    Some(resp)
                }
                Err(crate::fast_reads::Forward::NotARead) => None,
                Err(why) => {
                    self.metrics.fast_read(kind, why.as_str());
                    None
                }
            }
        }
    }

    /// Reads the manifest once (it is small), forwards it, and on success
    /// records a referrer and answers `OCI-Subject`.
    async fn put_manifest(
        &self,
        req: Request<ProxyBody>,
        route: &Route,
        name: &RepoName,
        conn: &ConnInfo,
    ) -> Result<Response<ProxyBody>, RegistryError> {
        let (parts, body) = req.into_parts();
        let too_big = || {
            RegistryError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::SizeInvalid,
                "manifests are limited to 4 MiB",
            )
        };
        if parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .is_some_and(|n| n > MAX_MANIFEST)
        {
            return Err(too_big());
        }
        let bytes = read_capped(body, MAX_MANIFEST).await.map_err(|e| match e {
            CappedReadError::TooLarge(_) => too_big(),
            CappedReadError::Read(e) => RegistryError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::ManifestInvalid,
                format!("reading the manifest: {e}"),
            ),
        })?;
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        crate::manifest_check::check(content_type.as_deref(), &bytes)?;
        let digest = crate::route::Digest::sha256_of(&bytes).to_string();
        // An immutable tag ([[protect]]) moves nowhere (under its write lock).
        if let Route::Manifest {
            reference: Reference::Tag(tag),
            ..
        } = route
        {
            self.tags.check_move(name, tag, &digest).await?;
        }
        let referrer =
            crate::referrers::describe(name.as_str(), &digest, content_type.as_deref(), &bytes);
        let mut resp = self
            .forward(Request::from_parts(parts, full(bytes)), route, conn)
            .await?;
        if resp.status() == StatusCode::CREATED {
            if let Route::Manifest {
                reference: Reference::Tag(tag),
                ..
            } = route
            {
                self.times.pushed(name.as_str(), tag.as_str(), &digest);
            }
            if let Some(r) = referrer {
                if let Ok(v) = HeaderValue::from_str(&r.subject) {
                    resp.headers_mut().insert(crate::referrers::OCI_SUBJECT, v);
                }
                self.referrers.record_put(r).await;
            }
        }
        Ok(resp)
    }

    /// Checks a chunk's start against the session's offset before forwarding.
    async fn patch_upload(
        &self,
        req: Request<ProxyBody>,
        route: &Route,
        name: &RepoName,
        session: &str,
        conn: &ConnInfo,
    ) -> Result<Response<ProxyBody>, RegistryError> {
        let repo = name.as_str();
        let start = upload_check::content_range_start(req.headers())?;
        let known = self.uploads.get(repo, session);
        if let Some(start) = start {
            let (expected, location) = match known.clone() {
                Some(k) => k,
                None => {
                    let path = req
                        .uri()
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or_default();
                    match self.api.upload_status(path).await {
                        Ok(Some(offset)) => (offset, None),
                        // Unknown to the registry too: let it answer.
                        Ok(None) => (start, None),
                        Err(e) => return Err(e.bad_gateway_for("upload", repo)),
                    }
                }
            };
            if start != expected {
                let location =
                    location.or_else(|| HeaderValue::from_str(&req.uri().to_string()).ok());
                return Err(upload_check::out_of_order(expected, location));
            }
        }
        let resp = self.forward(req, route, conn).await?;
        if resp.status() == StatusCode::ACCEPTED {
            let before = known.map(|k| k.0);
            if let Some(offset) = upload_check::next_offset(resp.headers(), before.or(Some(1))) {
                self.uploads.set(
                    repo,
                    session,
                    offset,
                    resp.headers().get(header::LOCATION).cloned(),
                );
            }
        }
        Ok(resp)
    }
}
