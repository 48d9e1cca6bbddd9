//! The one server-side HTTP client to the upstream registry: a pooled
//! HTTP/1.1 hyper client with the configured `upstream.connect_timeout` and
//! `upstream.response_timeout`, adding regate's own upstream credentials
//! (`[upstream] username`) to every request it sends. Built once at start-up
//! and shared by forwarding ([`super::Upstream`]), regate's own calls
//! ([`crate::registry_api::RegistryApi`]: tag delete, tag list, referrers,
//! GC keepers and untagged cleanup) and the readiness probes (admin
//! `/readyz`, the managed registry's start). The CLI has its own client
//! (reqwest, `crate::client`).

use std::time::Duration;

use http::{header, HeaderValue, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::ProxyBody;

/// The largest read from a registry connection, so the largest body chunk.
/// A download to a client slower than the registry pins about two chunks (one
/// queued for the client, one read ahead by hyper into the body channel); with
/// hyper's default (adaptive up to about 400 KiB) 200 rate-limited TLS downloads
/// peaked at 68-127 MiB resident; with 64 KiB reads (and the 64 KiB write queue of
/// `server::listener`) at 50-53 MiB, idle being 12 MiB.
pub const UPSTREAM_READ_MAX: usize = 64 * 1024;

/// The pooled client and what every request to the registry gets.
#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<HttpConnector, ProxyBody>,
    /// `Basic ...` for `[upstream] username`, marked sensitive.
    authorization: Option<HeaderValue>,
    response_timeout: Duration,
}

/// Never the credentials.
impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("credentials", &self.authorization.is_some())
            .field("response_timeout", &self.response_timeout)
            .finish_non_exhaustive()
    }
}

impl UpstreamClient {
    /// `authorization`: regate's own credentials for the registry
    /// ([`crate::auth::upstream_authorization`]), sent with every request.
    pub fn new(
        connect_timeout: Duration,
        response_timeout: Duration,
        authorization: Option<HeaderValue>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(128)
            .http1_max_buf_size(UPSTREAM_READ_MAX)
            .build(connector);
        UpstreamClient {
            client,
            authorization,
            response_timeout,
        }
    }

    /// `upstream.response_timeout`: how long to wait for response headers
    /// once the request was sent (the caller times it: only it knows when its
    /// body ended).
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// Sends `req` (an absolute `http://` URI) with regate's credentials in
    /// place of any `Authorization` it carries, when they are configured.
    pub fn request(&self, mut req: Request<ProxyBody>) -> ResponseFuture {
        if let Some(v) = &self.authorization {
            req.headers_mut().insert(header::AUTHORIZATION, v.clone());
        }
        self.client.request(req)
    }

    /// A `GET <origin>/v2/` within `timeout`: the status, or why there was
    /// none (the text may name the address: for the operator only).
    pub async fn probe(&self, origin: &str, timeout: Duration) -> Result<StatusCode, String> {
        let req = Request::get(format!("{origin}/v2/"))
            .body(crate::body::empty())
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(timeout, self.request(req)).await {
            Ok(Ok(resp)) => Ok(resp.status()),
            Ok(Err(e)) => Err(crate::error::ErrorChain(&e).to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }
}
