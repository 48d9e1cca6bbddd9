//! The admin-auth layer of the admin listener: a request to the GC and
//! maintenance API ([`crate::gc::admin_api::owns`]) or the retention API
//! ([`crate::retention::admin_api::owns`]) needs an account with the
//! `admin` right when auth is on ([`crate::auth::Auth::authorize_admin`]);
//! an admitted one runs in its own task, to its end whatever its client
//! does, and is audited with its status. The probes and metrics pass as
//! they are.

use std::sync::Arc;

use http::{Request, StatusCode};
use tower::ServiceExt;

use crate::app::layers::stage::{Inner, Stage, StageLayer};
use crate::app::layers::{conn_of, Answer};
use crate::auth::Auth;
use crate::error::{ErrorCode, RegistryError};

/// The layer, over `auth`.
pub fn layer(auth: Arc<Auth>) -> StageLayer<RequireAdmin> {
    StageLayer(RequireAdmin { auth })
}

#[derive(Clone)]
pub struct RequireAdmin {
    auth: Arc<Auth>,
}

impl<B: Send + 'static> Stage<B> for RequireAdmin {
    async fn run<S: Inner<B>>(self, mut req: Request<B>, inner: S) -> Answer {
        let path = req.uri().path();
        if !crate::gc::admin_api::owns(path) && !crate::retention::admin_api::owns(path) {
            return inner.oneshot(req).await;
        }
        let auth = self.auth;
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
    }
}
