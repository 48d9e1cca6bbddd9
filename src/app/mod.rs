//! The request pipeline of the registry listeners, one straight line:
//! head limits -> parse the route once -> (authenticate and authorize) ->
//! (write gate) -> (tag delete) or forward upstream.
//!
//! Owns [`App`], the shared state every request sees, and the conversion of
//! any layer's error into the response through [`RegistryError`]. The stages
//! in parentheses are added by their own modules; this file only orders them.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, Request, Response};
use http_body_util::BodyExt;

use crate::access_log::{Direction, RequestRecord};
use crate::body::{MeteredBody, ProxyBody};
use crate::config::Settings;
use crate::error::RegistryError;
use crate::metrics::Metrics;
use crate::proxy::{ClientSide, PublicOrigin, Upstream};
use crate::referrers::ReferrersIndex;
use crate::registry_api::RegistryApi;
use crate::route::Route;
use crate::route_kind::RouteKind;
use crate::state::State;
use crate::tag_delete::TagDeleter;
use crate::unread_body::UnreadBody;
use crate::upload_check::UploadOffsets;
use crate::write_gate::WriteGate;

mod delete_tags;
mod endpoints;
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
    pub settings: Arc<Settings>,
    pub upstream: Upstream,
    pub metrics: Arc<Metrics>,
    pub state: State,
    /// regate's own calls to the registry.
    pub api: RegistryApi,
    pub tags: Arc<TagDeleter>,
    pub referrers: ReferrersIndex,
    pub uploads: UploadOffsets,
    pub gate: Arc<WriteGate>,
    pub auth: Arc<crate::auth::Auth>,
    /// Push and pull times of tags, for retention.
    pub times: Arc<crate::retention::Recorder>,
}

impl App {
    /// Serves one request from a registry client.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<UnreadBody>,
        conn: ConnInfo,
    ) -> Response<ProxyBody> {
        // Behind a trusted load balancer: the client it names, everywhere below.
        let trusted = &self.settings.server.trusted_proxies;
        let conn = conn.behind(trusted.resolve(req.headers(), conn.peer));
        let parsed = Route::parse(req.uri().path());
        let (kind, repo) = match &parsed {
            Ok(r) => (r.kind(), r.repository().map(|n| n.to_string())),
            Err(_) => (RouteKind::Other, None),
        };
        let record = RequestRecord::new(
            req.method().clone(),
            kind,
            repo,
            req.uri().path(),
            conn.peer,
            Arc::clone(&self.metrics),
        );
        let idle = self.settings.server.idle_timeout;
        let req = req.map(|b| {
            MeteredBody::new(b, Arc::clone(&record), Direction::In)
                .idle_timeout(idle)
                .boxed_unsync()
        });

        // Oversized heads are refused before anything else looks at them.
        let limits = crate::request_limits::check(&req, self.settings.server.max_header_bytes);
        let resp = match (limits, parsed) {
            (Err(e), _) => Err(e),
            (Ok(()), Ok(route)) => self.dispatch(req, route, &conn, &record).await,
            // The token issuer shares the registry listeners (before the
            // route parser, which knows only /v2/).
            (Ok(()), Err(_)) if req.uri().path() == crate::auth::token::endpoint::PATH => {
                crate::auth::token::endpoint::serve(&self.auth, req, conn.peer)
                    .await
                    .map_err(RegistryError::from)
            }
            (Ok(()), Err(e)) => Err(e.answer_to(req.method())),
        }
        .unwrap_or_else(RegistryError::into_response);

        record.set_status(resp.status().as_u16());
        resp.map(|b| MeteredBody::new(b, record, Direction::Out).boxed_unsync())
    }

    async fn dispatch(
        &self,
        req: Request<ProxyBody>,
        route: Route,
        conn: &ConnInfo,
        record: &RequestRecord,
    ) -> Result<Response<ProxyBody>, RegistryError> {
        // Stages, in this order, each in its own module:
        // 1. authenticate and authorize (auth, rules)
        // 2. write gate (writes wait or are refused while GC runs)
        // 3. endpoints regate answers itself (tag delete, tag list, referrers)
        // 4. forward upstream
        // 1. Authenticate and authorize.
        let public = self.public_origin(&req, conn);
        let (mut parts, body) = req.into_parts();
        // No body the registry would read as parameters gets past here.
        crate::registry_params::check_body_type(&parts.method, &parts.headers)?;
        let caller = crate::auth::stage(&self.auth, &parts, &route, conn.peer, &public).await?;
        if let Some(a) = &caller.account {
            record.set_account(a);
        }
        // The client's credentials stop here.
        self.auth.prepare_upstream(&mut parts.headers);
        if matches!(route, Route::UploadStart { .. } | Route::Upload { .. }) {
            crate::registry_params::neutral_upload_type(&mut parts.headers);
        }
        if caller.drop_mount {
            parts.uri = uri_without_mount(&parts.uri)?;
        }
        let req = Request::from_parts(parts, body);
        if let (Route::Catalog, true) = (&route, self.auth.filters_catalog()) {
            let side = ClientSide {
                peer: conn.peer,
                public: &public,
                route: route.kind(),
                metrics: &self.metrics,
            };
            let query = req.uri().query();
            return crate::auth::catalog::serve(&self.auth, &self.upstream, query, &caller, side)
                .await;
        }
        let method = req.method().clone();
        let account = record.account().unwrap_or("anonymous").to_owned();

        // 2. The write gate. An admitted write holds its pass until its
        // response is complete, so a draining gate waits for it; it is taken
        // before any tag lock, so a held write never blocks reads.
        let pass = self.gate.admit(&method, &route).await?;
        // 3 and 4.
        let result = self.endpoints(req, route.clone(), conn, &account).await;
        crate::auth::audit_delete(&self.auth, &method, &route, &caller, conn.peer, &result);
        let resp = result?;
        Ok(match pass {
            Some(pass) => pass.finish(resp),
            None => resp,
        })
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

/// `uri` without the `mount` and `from` of its query.
fn uri_without_mount(uri: &http::Uri) -> Result<http::Uri, RegistryError> {
    let path = uri.path();
    let target = match uri.query().and_then(crate::registry_params::without_mount) {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    let rewritten = target.parse().ok().and_then(|pq| {
        parts.path_and_query = Some(pq);
        http::Uri::from_parts(parts).ok()
    });
    rewritten.ok_or_else(|| {
        RegistryError::new(
            http::StatusCode::BAD_REQUEST,
            crate::error::ErrorCode::Unsupported,
            "the request target cannot be passed on without its mount",
        )
    })
}
