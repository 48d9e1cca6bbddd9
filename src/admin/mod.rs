//! The admin listener (plain HTTP, meant for loopback or an internal network):
//! `/healthz` (the process is up), `/readyz` (the upstream registry answers,
//! and in a cluster PostgreSQL confirmed the write gate lately)
//! and `/metrics` (Prometheus text), the GC and maintenance API of
//! [`crate::gc::admin_api`] and the retention API of
//! [`crate::retention::admin_api`] (`/admin/...`). The probes and metrics are open
//! (for load balancers and Prometheus); `/admin/...` needs an account with the
//! `admin` right when auth is on ([`crate::auth::admin_access`]), and every
//! call that changes something is audited ([`require_admin`]). An
//! `/admin/...` call runs in its own task, to its end and audited whatever
//! its client does. It binds loopback by default.
//!
//! Owns the admin listener's [`tower`] stack ([`Admin::service`]): version
//! header -> errors become responses -> the body boxed -> [`require_admin`]
//! -> the endpoints.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::{Service, ServiceBuilder};

use crate::body::{full, ProxyBody};
use crate::error::{ErrorCode, RegistryError};
use crate::metrics::Metrics;
use crate::proxy::Upstream;

pub mod require_admin;

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
    /// The admin listener's service, read top to bottom.
    pub fn service<B>(
        self: &Arc<Self>,
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
    {
        let admin = Arc::clone(self);
        ServiceBuilder::new()
            .layer(crate::app::layers::api_version::layer())
            .layer(crate::app::layers::answer_errors::AnswerErrorsLayer)
            .map_request(|req: Request<B>| req.map(|b| b.map_err(Into::into).boxed_unsync()))
            .layer(require_admin::layer(Arc::clone(&self.auth)))
            .service(tower::service_fn(move |req| Arc::clone(&admin).serve(req)))
    }

    /// Serves one request that [`require_admin`] let through.
    async fn serve(
        self: Arc<Self>,
        req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, RegistryError> {
        if crate::gc::admin_api::owns(req.uri().path()) {
            return crate::gc::admin_api::serve(&self.gc, req).await;
        }
        if crate::retention::admin_api::owns(req.uri().path()) {
            let account = req
                .extensions()
                .get::<crate::auth::Caller>()
                .and_then(|c| c.account.clone())
                .unwrap_or_else(|| "anonymous".into());
            let client = crate::app::layers::conn_of(&req)?.peer.ip();
            return crate::retention::admin_api::serve(&self.retention, req, &account, client)
                .await;
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
            "/readyz" if self.gc.cluster().and_then(|c| c.unconfirmed()).is_some() => {
                let why = self.gc.cluster().and_then(|c| c.unconfirmed());
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("{}\n", why.unwrap_or_default()),
                )
            }
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

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use tower::ServiceExt;

    use super::*;
    use crate::app::layers::test_app::{app, htpasswd_toml, request};
    use crate::error::API_VERSION_HEADER;

    /// The admin stack over an app whose registry is never reached: alice
    /// has `admin` everywhere, bob only pulls.
    #[tokio::test]
    async fn admin_calls_need_the_admin_right_and_every_answer_has_the_version_header() {
        let acl =
            "[[acl]]\naccount = \"alice\"\nrepository = \"*\"\nactions = [\"pull\", \"admin\"]\n\
            [[acl]]\naccount = \"bob\"\nrepository = \"*\"\nactions = [\"pull\"]\n";
        let t = app(|dir| htpasswd_toml(dir, "basic", acl));
        let a = &t.parts;
        let gc = crate::gc::Gc::new(
            a.settings.gc.clone(),
            crate::gc::GcTarget::new(&a.settings.gc, None, a.api.clone()),
            Arc::clone(&a.gate),
            a.state.clone(),
            Arc::clone(&a.metrics),
            a.settings.state.dir.join("gc"),
        );
        let retention = Arc::new(crate::retention::Retention::new(
            Vec::new(),
            crate::retention::dates::Sources {
                api: a.api.clone(),
                state: a.state.clone(),
                storage_root: None,
            },
            Arc::clone(&a.tags),
            Arc::clone(&a.times),
            Arc::clone(&a.auth),
        ));
        let admin = Arc::new(Admin {
            upstream: a.upstream.clone(),
            metrics: Arc::clone(&a.metrics),
            gc,
            auth: Arc::clone(&a.auth),
            retention,
        });
        let svc = admin.service();
        let basic = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        let cases = [
            ("/admin/status", None, StatusCode::UNAUTHORIZED),
            (
                "/admin/status",
                Some(basic("alice", "wrong")),
                StatusCode::UNAUTHORIZED,
            ),
            (
                "/admin/status",
                Some(basic("bob", "bob-pw")),
                StatusCode::FORBIDDEN,
            ),
            (
                "/admin/status",
                Some(basic("alice", "alice-pw")),
                StatusCode::OK,
            ),
            ("/healthz", None, StatusCode::OK),
            ("/nothing", None, StatusCode::NOT_FOUND),
        ];
        for method in [Method::GET, Method::HEAD] {
            for (path, auth, status) in &cases {
                let mut b = Request::builder().method(method.clone()).uri(*path);
                if let Some(a) = auth {
                    b = b.header(header::AUTHORIZATION, a.as_str());
                }
                let req = request(b.body(crate::body::empty()).unwrap());
                let resp = svc.clone().oneshot(req).await.unwrap();
                // What the GC API answers an allowed HEAD is its own
                // business; the auth decision before it is this test's.
                let allowed_head = method == Method::HEAD
                    && *status == StatusCode::OK
                    && path.starts_with("/admin/");
                if !allowed_head {
                    assert_eq!(resp.status(), *status, "{method} {path} {auth:?}");
                }
                assert_eq!(
                    resp.headers()[API_VERSION_HEADER],
                    "registry/2.0",
                    "{method} {path}"
                );
            }
        }
    }
}
