//! Errors become responses, once, near the top of the stack (under the
//! access log, so it records their status and counts their bytes): every
//! service below fails with a [`RegistryError`], rendered here by
//! [`RegistryError::into_response`]; above, nothing fails (`Infallible`).
//!
//! (tower's `map_result` would need `Infallible: From<RegistryError>` for
//! readiness errors; here readiness is driven inside the call, so a
//! readiness error is answered like any other.)

use std::convert::Infallible;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service, ServiceExt};

use super::BoxFuture;
use crate::body::ProxyBody;
use crate::error::RegistryError;

#[derive(Debug, Clone, Copy)]
pub struct AnswerErrorsLayer;

impl<S> Layer<S> for AnswerErrorsLayer {
    type Service = AnswerErrors<S>;
    fn layer(&self, inner: S) -> AnswerErrors<S> {
        AnswerErrors { inner }
    }
}

#[derive(Clone)]
pub struct AnswerErrors<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for AnswerErrors<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = RegistryError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<ProxyBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let answer = self.inner.clone().oneshot(req);
        Box::pin(async move { Ok(answer.await.unwrap_or_else(RegistryError::into_response)) })
    }
}
