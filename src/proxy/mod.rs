//! Forwarding to the upstream registry: one pooled HTTP/1.1 client
//! ([`client`], shared with regate's own calls), bodies streamed both ways.
//!
//! Owns [`Upstream`]. It rewrites the request URI to the upstream origin
//! (path and query untouched), applies the header rules of [`headers`], times
//! the wait for response headers (counted from the end of the request body, so
//! a slow upload is never cut), and maps transport failures to 502/504 OCI
//! errors. Those never name the upstream's address (anyone may cause one):
//! the address and the cause go to the operator's log, at warn, with the
//! request's route, method and path. It never looks at a body's content.

pub mod client;
pub mod headers;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::{header, HeaderValue, Request, Response, Uri, Version};
use http_body_util::BodyExt;

use crate::body::{MeteredBody, ProxyBody};
use crate::config::UpstreamUrl;
use crate::error::RegistryError;
use crate::metrics::Metrics;
use crate::route_kind::RouteKind;
pub use client::{UpstreamClient, UPSTREAM_READ_MAX};
pub use headers::PublicOrigin;

/// The upstream registry and the pooled client that reaches it.
#[derive(Clone)]
pub struct Upstream {
    client: UpstreamClient,
    origin: String,
    authority: http::uri::Authority,
    idle_timeout: Duration,
}

/// What the forwarder needs to know about the client side.
pub struct ClientSide<'a> {
    pub peer: SocketAddr,
    pub public: &'a PublicOrigin,
    pub route: RouteKind,
    pub metrics: &'a Metrics,
}

impl Upstream {
    /// The registry at `url`, reached through `client`; a body (either way)
    /// may stall `idle_timeout`.
    pub fn new(client: UpstreamClient, url: &UpstreamUrl, idle_timeout: Duration) -> Self {
        Upstream {
            client,
            origin: url.origin(),
            authority: url.authority.clone(),
            idle_timeout,
        }
    }

    /// `http://host:port` of the registry.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The client (with regate's credentials) for regate's own calls.
    pub fn client(&self) -> &UpstreamClient {
        &self.client
    }

    /// Sends `req` upstream and returns its response, streaming.
    pub async fn forward(
        &self,
        req: Request<ProxyBody>,
        side: ClientSide<'_>,
    ) -> Result<Response<ProxyBody>, RegistryError> {
        let (mut parts, body) = req.into_parts();
        // HTTP/2 clients send :authority instead of Host; keep what they asked for.
        if !parts.headers.contains_key(header::HOST) {
            if let Some(a) = parts.uri.authority() {
                if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                    parts.headers.insert(header::HOST, v);
                }
            }
        }
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::set_forwarding(&mut parts.headers, side.peer, side.public);
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        parts.uri = Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| {
                RegistryError::bad_gateway(format!("cannot build the upstream URI: {e}"))
            })?;
        parts.version = Version::HTTP_11;
        // For the operator's log, should the request fail (no query: `_state`).
        let (method, path) = (parts.method.clone(), parts.uri.path().to_owned());

        let mut body = MeteredBody::uncounted(body);
        let body_sent = body.notify_end();
        let req = Request::from_parts(parts, body.boxed_unsync());

        let started = Instant::now();
        let response_timeout = self.client.response_timeout();
        let result = tokio::select! {
            r = self.client.request(req) => r,
            _ = async {
                let _ = body_sent.await;
                tokio::time::sleep(response_timeout).await;
            } => {
                tracing::warn!(
                    target: "regate::upstream",
                    upstream = %self.origin,
                    route = side.route.as_str(),
                    %method,
                    path,
                    peer = %side.peer,
                    "the upstream registry sent no response within {}s; answered 504",
                    response_timeout.as_secs()
                );
                return Err(RegistryError::gateway_timeout(format!(
                    "the upstream registry sent no response within {}s", response_timeout.as_secs()
                )));
            }
        };
        let resp = result.map_err(|e| {
            let err = self.transport_error(&e);
            if err.status == http::StatusCode::BAD_GATEWAY {
                tracing::warn!(
                    target: "regate::upstream",
                    upstream = %self.origin,
                    route = side.route.as_str(),
                    %method,
                    path,
                    peer = %side.peer,
                    error = %crate::error::ErrorChain(&e),
                    "upstream request failed; answered 502"
                );
            }
            err
        })?;
        side.metrics.upstream_latency(side.route, started.elapsed());

        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::rewrite_location(&mut parts.headers, &self.origin, side.public);
        let body = MeteredBody::uncounted(body)
            .idle_timeout(self.idle_timeout)
            .boxed_unsync();
        Ok(Response::from_parts(parts, body))
    }

    /// What the client is told: never the upstream's address, nor a cause
    /// that could carry it (the caller logs those).
    fn transport_error(&self, e: &hyper_util::client::legacy::Error) -> RegistryError {
        if crate::error::causes(e).any(|c| c.is::<crate::body::IdleTimeout>()) {
            return RegistryError::new(
                http::StatusCode::REQUEST_TIMEOUT,
                crate::error::ErrorCode::Unknown,
                "the request body stalled: idle timeout",
            );
        }
        if e.is_connect() {
            RegistryError::bad_gateway("the upstream registry is unreachable")
        } else {
            RegistryError::bad_gateway("the upstream registry failed to answer")
        }
    }

    /// A plain GET to the registry, for readiness checks (on the admin
    /// listener: its answer may name the upstream).
    pub async fn probe(&self, timeout: Duration) -> Result<http::StatusCode, String> {
        self.client.probe(&self.origin, timeout).await
    }
}
