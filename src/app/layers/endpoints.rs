//! The innermost service: `App::endpoints` (what regate answers itself, or
//! forwards) with the route, connection and caller the outer layers put in
//! the request's extensions; deletes are audited with their outcome.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use tower::Service;

use super::{conn_of, extension, Answer, BoxFuture};
use crate::app::App;
use crate::auth::Caller;
use crate::body::ProxyBody;
use crate::error::RegistryError;
use crate::route::Route;

#[derive(Clone)]
pub struct Endpoints {
    pub app: Arc<App>,
}

impl Service<Request<ProxyBody>> for Endpoints {
    type Response = http::Response<ProxyBody>;
    type Error = RegistryError;
    type Future = BoxFuture<Answer>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), RegistryError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ProxyBody>) -> Self::Future {
        let app = Arc::clone(&self.app);
        Box::pin(async move {
            let conn = conn_of(&req)?;
            let route: Route = extension(&req)?;
            let caller: Caller = extension(&req)?;
            let method = req.method().clone();
            let account = caller.account.as_deref().unwrap_or(crate::rules::ANONYMOUS);
            let result = app.endpoints(req, route.clone(), &conn, account).await;
            crate::auth::audit_delete(&app.auth, &method, &route, &caller, conn.peer, &result);
            result
        })
    }
}
