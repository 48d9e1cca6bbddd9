//! The request pipeline of the registry listeners: a [`tower`] stack built
//! with one `ServiceBuilder` ([`App::service`]), read top to bottom: version
//! header -> access log and metrics -> (errors become responses) -> head
//! limits -> route, parsed once -> authenticate and authorize -> write gate
//! -> endpoints (tag delete, tag list, referrers, manifest PUT, forward).
//!
//! Owns [`App`], the shared state every request sees, and the order of the
//! stack; each layer is a file of `layers`, and what regate answers itself
//! is `App::endpoints`. What a layer decides travels inward in the
//! request's extensions ([`ConnInfo`], the access-log record, the route, the
//! caller).

use std::net::SocketAddr;
use std::sync::Arc;

use std::convert::Infallible;

use http::{header, Request, Response};
use tower::{Service, ServiceBuilder};

use crate::body::ProxyBody;
use crate::config::Settings;
use crate::error::RegistryError;
use crate::metrics::Metrics;
use crate::proxy::{ClientSide, PublicOrigin, Upstream};
use crate::referrers::ReferrersIndex;
use crate::registry_api::RegistryApi;
use crate::route::Route;
use crate::state::State;
use crate::tag_delete::TagDeleter;
use crate::unread_body::UnreadBody;
use crate::upload_check::UploadOffsets;
use crate::write_gate::WriteGate;

mod delete_tags;
mod endpoints;
pub(crate) mod layers;
mod responses;

/// Which listener a connection arrived on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
}

impl ConnInfo {
    /// The connection as the client made it, when a trusted proxy
    /// (`server.trusted_proxies`) says who the client is and how it connected.
    pub fn behind(self, client: Option<crate::forwarded::ForwardedClient>) -> ConnInfo {
        match client {
            Some(c) => ConnInfo {
                peer: c.addr,
                local: self.local,
                tls: c.https.unwrap_or(self.tls),
            },
            None => self,
        }
    }
}

/// Everything a request may need, shared by all connections.
pub struct App {
    settings: Arc<Settings>,
    upstream: Upstream,
    metrics: Arc<Metrics>,
    state: State,
    /// regate's own calls to the registry.
    api: RegistryApi,
    /// Public for the tests that look at the tag locks.
    pub tags: Arc<TagDeleter>,
    referrers: ReferrersIndex,
    uploads: UploadOffsets,
    gate: Arc<WriteGate>,
    auth: Arc<crate::auth::Auth>,
    /// Manifest and blob reads answered from the storage (`[storage] fast_reads`).
    fast_reads: Option<crate::fast_reads::FastReads>,
    /// Push and pull times of tags, for retention.
    times: Arc<crate::retention::Recorder>,
}

/// What [`App::new`] is made of: the components `server::start` opens.
#[derive(Clone)]
pub struct AppParts {
    pub settings: Arc<Settings>,
    pub upstream: Upstream,
    pub metrics: Arc<Metrics>,
    pub state: State,
    pub api: RegistryApi,
    pub tags: Arc<TagDeleter>,
    pub gate: Arc<WriteGate>,
    pub auth: Arc<crate::auth::Auth>,
    /// Manifest and blob reads answered from the storage (`[storage] fast_reads`).
    pub fast_reads: Option<crate::fast_reads::FastReads>,
    /// Push and pull times of tags, for retention.
    pub times: Arc<crate::retention::Recorder>,
}

impl App {
    /// The app over `parts`, with an empty referrers cache and no upload
    /// sessions known yet.
    pub fn new(parts: AppParts) -> Arc<App> {
        let AppParts {
            settings,
            upstream,
            metrics,
            state,
            api,
            tags,
            gate,
            auth,
            fast_reads,
            times,
        } = parts;
        Arc::new(App {
            settings,
            upstream,
            metrics,
            referrers: ReferrersIndex::new(state.clone(), api.clone()),
            state,
            uploads: UploadOffsets::default(),
            api,
            tags,
            gate,
            auth,
            fast_reads,
            times,
        })
    }

    /// The registry listeners' service: the stack of `layers` around
    /// `App::endpoints`.
    pub fn service(
        self: &Arc<Self>,
    ) -> impl Service<
        Request<UnreadBody>,
        Response = Response<ProxyBody>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
           + Send
           + 'static {
        self.stack::<UnreadBody, _>(layers::endpoints::Endpoints {
            app: Arc::clone(self),
        })
    }

    /// The stack around `endpoints`, read top to bottom (tests put a stub
    /// where `App::endpoints` goes).
    pub(crate) fn stack<B, E>(
        self: &Arc<Self>,
        endpoints: E,
    ) -> impl Service<
        Request<B>,
        Response = Response<ProxyBody>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
           + Send
           + 'static
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<crate::body::BoxError>,
        E: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = RegistryError>
            + Clone
            + Send
            + 'static,
        E::Future: Send + 'static,
    {
        let server = &self.settings.server;
        ServiceBuilder::new()
            .layer(layers::api_version::layer())
            .layer(layers::access_log::AccessLogLayer {
                metrics: Arc::clone(&self.metrics),
                trusted_proxies: server.trusted_proxies.clone(),
                idle_timeout: server.idle_timeout,
            })
            .layer(layers::answer_errors::AnswerErrorsLayer)
            .layer(layers::head_limits::layer(server.max_header_bytes))
            .layer(layers::route::layer(Arc::clone(&self.auth)))
            .layer(layers::authorize::layer(Arc::clone(self)))
            .layer(layers::write_gate::layer(Arc::clone(&self.gate)))
            .service(endpoints)
    }

    pub(crate) async fn forward(
        &self,
        req: Request<ProxyBody>,
        route: &Route,
        conn: &ConnInfo,
    ) -> Result<Response<ProxyBody>, RegistryError> {
        let public = self.public_origin(&req, conn);
        self.upstream
            .forward(
                req,
                ClientSide {
                    peer: conn.peer,
                    public: &public,
                    route: route.kind(),
                    metrics: &self.metrics,
                },
            )
            .await
    }

    /// The origin clients reach regate at: the configured public URL, or the
    /// scheme of the listener with the `Host` the client sent.
    fn public_origin<B>(&self, req: &Request<B>, conn: &ConnInfo) -> PublicOrigin {
        if let Some(p) = &self.settings.server.public_url {
            return PublicOrigin {
                scheme: p.scheme.clone(),
                authority: p.authority.clone(),
            };
        }
        let authority = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_else(|| conn.local.to_string());
        PublicOrigin {
            scheme: if conn.tls { "https" } else { "http" }.into(),
            authority,
        }
    }
}
