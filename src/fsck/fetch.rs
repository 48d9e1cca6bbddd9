//! The requests `fsck` makes, bounded by one semaphore (`--concurrency`),
//! retried on transport errors, and sorted into what the walk needs: found
//! (with the bytes), not found (404), or another answer. Authentication
//! problems and an unreachable registry stop the walk ([`FsckError`]).

use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, Response, StatusCode};
use tokio::sync::Semaphore;

use super::FsckError;
use crate::client::{error_text, ClientError, RegistryClient};
use crate::error::chain;
use crate::registry_api::ACCEPT_MANIFESTS;

/// How often a request cut by a transport error is tried.
const ATTEMPTS: u32 = 3;

/// A GET's outcome.
#[derive(Debug)]
pub(crate) enum Fetched {
    Found {
        bytes: Bytes,
        /// `Docker-Content-Digest`, when sent.
        digest: Option<String>,
    },
    /// 404, with the registry's error text.
    NotFound(String),
    /// Any other status, with the registry's error text.
    Other(String),
}

/// A HEAD's outcome.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Presence {
    Present,
    NotFound,
    Other(String),
}

pub(crate) struct Fetcher<'a> {
    client: &'a RegistryClient,
    permits: Semaphore,
    /// `n` of listing pages, when not the defaults.
    pub page_size: Option<usize>,
}

impl<'a> Fetcher<'a> {
    pub fn new(client: &'a RegistryClient, concurrency: usize, page_size: Option<usize>) -> Self {
        Fetcher {
            client,
            permits: Semaphore::new(concurrency.max(1)),
            page_size,
        }
    }

    pub fn base(&self) -> &str {
        &self.client.base
    }

    /// One request under a permit; transport errors are retried, then end
    /// the walk, and so does a 401/403.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        scope: &str,
        accept: Option<&str>,
    ) -> Result<Response, FsckError> {
        let _permit = self.permits.acquire().await.expect("never closed");
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            match self.client.send(method.clone(), path, scope, accept).await {
                Ok(r) => break r,
                Err(ClientError::Transport { url, source }) if attempt >= ATTEMPTS => {
                    return Err(FsckError::Unreachable {
                        url,
                        detail: chain(&source),
                    })
                }
                Err(ClientError::Transport { .. }) => {
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                Err(e) => {
                    return Err(FsckError::Auth {
                        url: format!("{}{path}", self.client.base),
                        detail: e.to_string(),
                    })
                }
            }
        };
        match resp.status() {
            StatusCode::UNAUTHORIZED if !self.client.has_credentials() => {
                Err(FsckError::NeedsCredentials {
                    url: format!("{}{path}", self.client.base),
                })
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(FsckError::Auth {
                url: format!("{}{path}", self.client.base),
                detail: error_text(resp).await,
            }),
            _ => Ok(resp),
        }
    }

    async fn get(
        &self,
        path: &str,
        scope: &str,
        accept: Option<&str>,
    ) -> Result<Fetched, FsckError> {
        let resp = self.send(Method::GET, path, scope, accept).await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(Fetched::NotFound(error_text(resp).await));
        }
        if !status.is_success() {
            return Ok(Fetched::Other(error_text(resp).await));
        }
        let digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match resp.bytes().await {
            Ok(bytes) => Ok(Fetched::Found { bytes, digest }),
            Err(e) => Ok(Fetched::Other(format!(
                "reading the body of {path}: {}",
                chain(&e)
            ))),
        }
    }

    async fn head(
        &self,
        path: &str,
        scope: &str,
        accept: Option<&str>,
    ) -> Result<Presence, FsckError> {
        let resp = self.send(Method::HEAD, path, scope, accept).await?;
        Ok(match resp.status() {
            s if s.is_success() => Presence::Present,
            StatusCode::NOT_FOUND => Presence::NotFound,
            s => Presence::Other(format!("HEAD answered {}", s.as_u16())),
        })
    }

    /// GET a manifest by tag or digest, with all four manifest types in Accept.
    pub async fn manifest(&self, repo: &str, reference: &str) -> Result<Fetched, FsckError> {
        self.get(
            &format!("/v2/{repo}/manifests/{reference}"),
            &pull(repo),
            Some(ACCEPT_MANIFESTS),
        )
        .await
    }

    /// HEAD a manifest by digest.
    pub async fn manifest_exists(&self, repo: &str, digest: &str) -> Result<Presence, FsckError> {
        self.head(
            &format!("/v2/{repo}/manifests/{digest}"),
            &pull(repo),
            Some(ACCEPT_MANIFESTS),
        )
        .await
    }

    /// HEAD a blob.
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<Presence, FsckError> {
        self.head(&format!("/v2/{repo}/blobs/{digest}"), &pull(repo), None)
            .await
    }

    /// GET a (small) blob.
    pub async fn blob(&self, repo: &str, digest: &str) -> Result<Fetched, FsckError> {
        self.get(&format!("/v2/{repo}/blobs/{digest}"), &pull(repo), None)
            .await
    }

    /// GET a listing path (`/v2/_catalog?...`, `/v2/<repo>/tags/list?...`).
    pub async fn listing(&self, path: &str, scope: &str) -> Result<Response, FsckError> {
        self.send(Method::GET, path, scope, None).await
    }
}

fn pull(repo: &str) -> String {
    format!("repository:{repo}:pull")
}
