//! The shape every layer between [`super::answer_errors`] and the endpoints
//! shares, written once: a [`Stage`] is an async function of the request
//! and the services below it, and [`StageLayer`] makes it a tower layer.
//! A layer file then holds only what its stage decides.

use std::future::Future;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use super::{Answer, BoxFuture};
use crate::body::ProxyBody;
use crate::error::RegistryError;

/// The services below a stage: they answer a response or a
/// [`RegistryError`], and can be cloned into a request's future.
pub trait Inner<B>:
    Service<Request<B>, Response = Response<ProxyBody>, Error = RegistryError, Future: Send>
    + Clone
    + Send
    + 'static
{
}

impl<B, S> Inner<B> for S where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = RegistryError, Future: Send>
        + Clone
        + Send
        + 'static
{
}

/// One step of the stack: what it does with a request, and whether and how
/// it calls `inner` (the rest of the stack, ready to be called once).
pub trait Stage<B>: Clone + Send + 'static {
    fn run<S: Inner<B>>(
        self,
        req: Request<B>,
        inner: S,
    ) -> impl Future<Output = Answer> + Send + 'static;
}

/// A [`Stage`] as a tower layer.
#[derive(Clone)]
pub struct StageLayer<T>(pub T);

impl<T: Clone, S> Layer<S> for StageLayer<T> {
    type Service = Staged<T, S>;
    fn layer(&self, inner: S) -> Staged<T, S> {
        Staged {
            stage: self.0.clone(),
            inner,
        }
    }
}

/// The service of a [`StageLayer`].
#[derive(Clone)]
pub struct Staged<T, S> {
    stage: T,
    inner: S,
}

impl<T, S, B> Service<Request<B>> for Staged<T, S>
where
    T: Stage<B>,
    S: Inner<B>,
{
    type Response = Response<ProxyBody>;
    type Error = RegistryError;
    type Future = BoxFuture<Answer>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RegistryError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The service made ready by `poll_ready` goes with this request; a
        // fresh clone stays for the next one (tower's usual swap).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(self.stage.clone().run(req, inner))
    }
}
