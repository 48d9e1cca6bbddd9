//! The admin listener (plain HTTP, meant for loopback or an internal network):
//! `/healthz` (the process is up), `/readyz` (the upstream registry answers)
//! and `/metrics` (Prometheus text), the GC and maintenance API of
//! [`crate::gc::admin_api`] and the retention API of
//! [`crate::retention::admin_api`] (`/admin/...`). The probes and metrics are open
//! (for load balancers and Prometheus); `/admin/...` needs an account with the
//! `admin` right when auth is on ([`crate::auth::admin_access`]), and every
//! call that changes something is audited. An `/admin/...` call runs in its
//! own task, to its end and audited whatever its client does. It binds
//! loopback by default.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{header, Method, Request, Response, StatusCode};

use crate::body::{full, ProxyBody};
use crate::error::{ErrorCode, RegistryError};
use crate::metrics::Metrics;
use crate::proxy::Upstream;
use crate::unread_body::UnreadBody;

pub struct Admin {
    pub upstream: Upstream,
    pub metrics: Arc<Metrics>,
    pub gc: Arc<crate::gc::Gc>,
    pub auth: Arc<crate::auth::Auth>,
    pub retention: Arc<crate::retention::Retention>,
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<ProxyBody> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

impl Admin {
    pub async fn handle(
        self: Arc<Self>,
        req: Request<UnreadBody>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let retention = crate::retention::admin_api::owns(req.uri().path());
        if retention || crate::gc::admin_api::owns(req.uri().path()) {
            let caller = match self.auth.authorize_admin(req.headers(), peer).await {
                Ok(caller) => caller,
                Err(e) => return RegistryError::from(e).into_response(),
            };
            // Its own task: a change (maintenance drains for up to
            // drain_timeout) runs to its end and is audited even when the
            // client goes away meanwhile.
            let (method, path) = (req.method().clone(), req.uri().path().to_owned());
            let me = Arc::clone(&self);
            let call = tokio::spawn(async move {
                let resp = if retention {
                    let account = caller.account.as_deref().unwrap_or("anonymous");
                    crate::retention::admin_api::handle(&me.retention, req, account, peer.ip())
                        .await
                } else {
                    crate::gc::admin_api::handle(&me.gc, req).await
                };
                me.auth
                    .audit_admin(&caller, peer, &method, &path, resp.status().as_u16());
                resp
            });
            return call.await.unwrap_or_else(|e| {
                RegistryError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Unknown,
                    format!("the admin call stopped unexpectedly: {e}"),
                )
                .into_response()
            });
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return RegistryError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::Unsupported,
                "use GET",
            )
            .into_response();
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
            "/readyz" => match self.upstream.probe(Duration::from_secs(2)).await {
                // Any HTTP answer (200, or 401 from a registry with its own auth) means it is up.
                Ok(status) if status.is_success() || status == StatusCode::UNAUTHORIZED => {
                    text(StatusCode::OK, "text/plain", "ready\n".into())
                }
                Ok(status) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("upstream {} answered {status}\n", self.upstream.origin()),
                ),
                Err(e) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("upstream {} unreachable: {e}\n", self.upstream.origin()),
                ),
            },
            "/metrics" => text(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.metrics.encode(),
            ),
            _ => RegistryError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::Unsupported,
                "not an admin endpoint",
            )
            .into_response(),
        }
    }
}
