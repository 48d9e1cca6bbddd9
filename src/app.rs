//! The request pipeline of the registry listeners, one straight line:
//! parse the route once -> (authenticate and authorize) -> (write gate) ->
//! (tag delete) or forward upstream.
//!
//! Owns [`App`], the shared state every request sees, and the conversion of
//! any layer's error into the response through [`RegistryError`]. The stages
//! in parentheses are added by their own modules; this file only orders them.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::access_log::{Direction, RequestRecord};
use crate::body::{MeteredBody, ProxyBody};
use crate::config::Settings;
use crate::error::RegistryError;
use crate::metrics::Metrics;
use crate::proxy::{ClientSide, PublicOrigin, Upstream};
use crate::registry_api::RegistryApi;
use crate::route::{Reference, Route, RouteKind};
use crate::state::State;
use crate::tag_delete::TagDeleter;

/// Which listener a connection arrived on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
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
    pub auth: Arc<crate::auth::Auth>,
}

impl App {
    /// Serves one request from a registry client.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: ConnInfo,
    ) -> Response<ProxyBody> {
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

        let resp = match parsed {
            Ok(route) => self.dispatch(req, route, &conn, &record).await,
            // The token issuer shares the registry listeners (before the
            // route parser, which knows only /v2/).
            Err(_) if req.uri().path() == crate::auth::token::endpoint::PATH => {
                crate::auth::token::endpoint::serve(&self.auth, req, conn.peer)
                    .await
                    .map_err(RegistryError::from)
            }
            Err(e) => Err(RegistryError::from(e)),
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
        let public = self.public_origin(&req, conn);
        let (mut parts, body) = req.into_parts();
        let caller = crate::auth::stage(&self.auth, &parts, &route, conn.peer, &public).await?;
        if let Some(a) = &caller.account {
            record.set_account(a);
        }
        // The client's credentials stop here.
        self.auth.prepare_upstream(&mut parts.headers);
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
        let account = record.account().unwrap_or("anonymous");
        let result = self.answer(req, &route, conn, account).await;
        crate::auth::audit_delete(&self.auth, &method, &route, &caller, conn.peer, &result);
        result
    }

    /// Stages 2 to 4 for a request that passed stage 1.
    async fn answer(
        &self,
        req: Request<ProxyBody>,
        route: &Route,
        conn: &ConnInfo,
        account: &str,
    ) -> Result<Response<ProxyBody>, RegistryError> {
        let method = req.method().clone();
        match (route, &method) {
            (
                Route::Manifest {
                    name,
                    reference: Reference::Tag(tag),
                },
                &Method::DELETE,
            )
            | (Route::TagReference { name, tag }, &Method::DELETE) => {
                self.tags.delete(name, tag, account).await?;
                return Ok(empty_response(StatusCode::ACCEPTED));
            }
            (Route::TagReference { .. }, &Method::OPTIONS) => {
                let mut resp = empty_response(StatusCode::OK);
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("DELETE, OPTIONS"));
                return Ok(resp);
            }
            (Route::TagReference { .. }, _) => {
                return Err(RegistryError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    crate::error::ErrorCode::Unsupported,
                    "only DELETE and OPTIONS are served on /tags/reference/",
                )
                .with_header(header::ALLOW, HeaderValue::from_static("DELETE, OPTIONS")));
            }
            (Route::DeletedTags { name }, &Method::GET) => {
                let (state, repo) = (self.state.clone(), name.to_string());
                let list = tokio::task::spawn_blocking(move || state.deletions(Some(&repo), 1000))
                    .await
                    .expect("state call panicked")
                    .map_err(crate::tag_delete::TagDeleteError::from)?;
                return Ok(json_response(
                    StatusCode::OK,
                    &serde_json::json!({ "name": name.as_str(), "deleted": list }),
                ));
            }
            (Route::RestoreTag { name, tag }, &Method::POST) => {
                let restored = self.tags.restore(name, tag, account).await?;
                let body = serde_json::json!({ "name": name.as_str(), "tag": tag.as_str(), "digest": restored.digest });
                return Ok(json_response(StatusCode::CREATED, &body));
            }
            (Route::DeletedTags { .. } | Route::RestoreTag { .. }, _) => {
                return Err(RegistryError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    crate::error::ErrorCode::Unsupported,
                    "use GET for _regate/deleted and POST for _regate/restore/<tag>",
                ));
            }
            (Route::TagsList { name }, &Method::GET) => {
                return crate::tag_list::serve(&self.api, name, req.uri().query()).await;
            }
            (
                Route::Manifest {
                    name,
                    reference: Reference::Digest(digest),
                },
                &Method::DELETE,
            ) => {
                self.tags.check_digest_delete(name, digest.as_str()).await?;
            }
            (
                Route::Manifest {
                    name,
                    reference: Reference::Tag(tag),
                },
                &Method::GET | &Method::HEAD,
            ) => {
                // Wait for a delete or push of this tag to finish, and hold
                // them off until the registry has answered: nobody ever sees
                // the dummy.
                let _reading = self.tags.locks.read(name.as_str(), tag.as_str()).await;
                return self.forward(req, route, conn).await;
            }
            (
                Route::Manifest {
                    name,
                    reference: Reference::Tag(tag),
                },
                &Method::PUT,
            ) => {
                // Exclusive: 2.8 rewrites the tag's link file in place
                // (truncate, then write), and a read in between gets a 500.
                let _writing = self.tags.locks.write(name.as_str(), tag.as_str()).await;
                return self.forward(req, route, conn).await;
            }
            _ => {}
        }
        self.forward(req, route, conn).await
    }

    async fn forward(
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

/// A bodiless answer of regate's own, with the registry's version header.
fn empty_response(status: StatusCode) -> Response<ProxyBody> {
    let mut resp = Response::new(crate::body::empty());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp.headers_mut().insert(
        crate::error::API_VERSION_HEADER,
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<ProxyBody> {
    let body = serde_json::to_vec(value).expect("JSON value");
    let mut resp = Response::new(crate::body::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp.headers_mut().insert(
        crate::error::API_VERSION_HEADER,
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}
