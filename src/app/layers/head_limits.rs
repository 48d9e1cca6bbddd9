//! Oversized request heads (`server.max_header_bytes`, or more than
//! [`crate::request_limits::MAX_HEADERS`] headers) get 431 before any other
//! layer looks at them; the rule itself is [`crate::request_limits`].

use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use super::{Answer, BoxFuture};
use crate::body::ProxyBody;
use crate::error::RegistryError;

#[derive(Debug, Clone, Copy)]
pub struct HeadLimitsLayer {
    /// `server.max_header_bytes`.
    pub max_header_bytes: usize,
}

impl<S> Layer<S> for HeadLimitsLayer {
    type Service = HeadLimits<S>;
    fn layer(&self, inner: S) -> HeadLimits<S> {
        HeadLimits {
            inner,
            max_header_bytes: self.max_header_bytes,
        }
    }
}

#[derive(Clone)]
pub struct HeadLimits<S> {
    inner: S,
    max_header_bytes: usize,
}

impl<S, B> Service<Request<B>> for HeadLimits<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = RegistryError>,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = RegistryError;
    type Future = BoxFuture<Answer>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RegistryError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match crate::request_limits::check(&req, self.max_header_bytes) {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use http::StatusCode;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn an_oversized_head_never_reaches_the_inner_service() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&calls);
        let svc = HeadLimitsLayer {
            max_header_bytes: 1024,
        }
        .layer(tower::service_fn(move |_req: Request<()>| {
            seen.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, RegistryError>(Response::new(crate::body::empty())) }
        }));
        let small = Request::get("/v2/a/manifests/v1")
            .header("x-a", "b")
            .body(())
            .unwrap();
        let resp = svc.clone().oneshot(small).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let big = Request::get("/v2/a/manifests/v1")
            .header("x-big", "v".repeat(2000))
            .body(())
            .unwrap();
        let err = svc.clone().oneshot(big).await.unwrap_err();
        assert_eq!(err.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let mut many = Request::get("/v2/a/manifests/v1");
        for i in 0..=crate::request_limits::MAX_HEADERS {
            many = many.header("x-n", i.to_string());
        }
        let err = svc.oneshot(many.body(()).unwrap()).await.unwrap_err();
        assert_eq!(err.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "a refused head went inward"
        );
    }
}
