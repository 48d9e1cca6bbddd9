//! The admin-auth layer of the admin listener: a request to the GC and
//! maintenance API ([`crate::gc::admin_api::owns`]) or the retention API
//! ([`crate::retention::admin_api::owns`]) needs an account with the
//! `admin` right when auth is on ([`crate::auth::Auth::authorize_admin`]);
//! an admitted one runs in its own task, to its end whatever its client
//! does, and is audited with its status. The probes and metrics pass as
//! they are.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use tower::{Layer, Service, ServiceExt};

use crate::app::layers::{conn_of, Answer, BoxFuture};
use crate::auth::Auth;
use crate::body::ProxyBody;
use crate::error::{ErrorCode, RegistryError};

#[derive(Clone)]
pub struct RequireAdminLayer {
    pub auth: Arc<Auth>,
}

impl<S> Layer<S> for RequireAdminLayer {
    type Service = RequireAdmin<S>;
    fn layer(&self, inner: S) -> RequireAdmin<S> {
        RequireAdmin {
            inner,
            auth: Arc::clone(&self.auth),
        }
    }
}

#[derive(Clone)]
pub struct RequireAdmin<S> {
    inner: S,
    auth: Arc<Auth>,
}

impl<S, B> Service<Request<B>> for RequireAdmin<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = RegistryError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = RegistryError;
    type Future = BoxFuture<Answer>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RegistryError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let path = req.uri().path();
        if !crate::gc::admin_api::owns(path) && !crate::retention::admin_api::owns(path) {
            return Box::pin(inner.oneshot(req));
        }
        let mut req = req;
        let auth = Arc::clone(&self.auth);
        Box::pin(async move {
            let peer = conn_of(&req)?.peer;
            let caller = auth.authorize_admin(req.headers(), peer).await?;
            // Who it is, for what the call audits itself (retention's deletions).
            req.extensions_mut().insert(caller.clone());
            // Its own task: a change (maintenance drains for up to
            // drain_timeout) runs to its end and is audited even when the
            // client goes away meanwhile.
            let (method, path) = (req.method().clone(), req.uri().path().to_owned());
            let call = tokio::spawn(async move {
                let answer = inner.oneshot(req).await;
                let status = match &answer {
                    Ok(r) => r.status(),
                    Err(e) => e.status,
                };
                auth.audit_admin(&caller, peer, &method, &path, status.as_u16());
                answer
            });
            call.await.unwrap_or_else(|e| {
                Err(RegistryError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Unknown,
                    format!("the admin call stopped unexpectedly: {e}"),
                ))
            })
        })
    }
}
