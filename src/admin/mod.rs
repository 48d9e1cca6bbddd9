//! The admin listener (plain HTTP, meant for loopback or an internal network):
//! `/healthz` (the process is up), `/readyz` (the upstream registry answers)
//! and `/metrics` (Prometheus text), and the GC and maintenance API of
//! [`crate::gc::admin_api`] (`/admin/...`). The probes and metrics are open
//! (for load balancers and Prometheus); `/admin/...` needs an account with the
//! `admin` right when auth is on ([`crate::auth::admin_access`]), and every
//! call that changes something is audited ([`require_admin`]). An
//! `/admin/...` call runs in its own task, to its end and audited whatever
//! its client does. It binds loopback by default.
//!
//! Owns the admin listener's [`tower`] stack ([`Admin::service`]): version
//! header -> errors become responses -> [`require_admin`] -> the endpoints.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{header, Method, Request, Response, StatusCode};
use tower::{Service, ServiceBuilder};

use crate::body::{full, ProxyBody};
use crate::error::{ErrorCode, RegistryError};
use crate::metrics::Metrics;
use crate::proxy::Upstream;
use crate::unread_body::UnreadBody;

pub mod require_admin;

pub struct Admin {
    pub upstream: Upstream,
    pub metrics: Arc<Metrics>,
    pub gc: Arc<crate::gc::Gc>,
    pub auth: Arc<crate::auth::Auth>,
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
    /// The admin listener's service, read top to bottom.
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
        let admin = Arc::clone(self);
        ServiceBuilder::new()
            .layer(crate::app::layers::api_version::layer())
            .layer(crate::app::layers::answer_errors::AnswerErrorsLayer)
            .layer(require_admin::RequireAdminLayer {
                auth: Arc::clone(&self.auth),
            })
            .service(tower::service_fn(move |req| Arc::clone(&admin).serve(req)))
    }

    /// Serves one request that [`require_admin`] let through.
    async fn serve(
        self: Arc<Self>,
        req: Request<UnreadBody>,
    ) -> Result<Response<ProxyBody>, RegistryError> {
        if crate::gc::admin_api::owns(req.uri().path()) {
            return crate::gc::admin_api::serve(&self.gc, req).await;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(RegistryError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::Unsupported,
                "use GET",
            ));
        }
        Ok(match req.uri().path() {
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
            _ => {
                return Err(RegistryError::new(
                    StatusCode::NOT_FOUND,
                    ErrorCode::Unsupported,
                    "not an admin endpoint",
                ))
            }
        })
    }
}
