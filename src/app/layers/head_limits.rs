//! Oversized request heads (`server.max_header_bytes`, or more than
//! [`crate::request_limits::MAX_HEADERS`] headers) get 431 before any other
//! layer looks at them; the rule itself is [`crate::request_limits`].

use http::Request;

use super::stage::{Inner, Stage, StageLayer};
use super::Answer;

/// The layer, with `server.max_header_bytes`.
pub fn layer(max_header_bytes: usize) -> StageLayer<HeadLimits> {
    StageLayer(HeadLimits { max_header_bytes })
}

#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    max_header_bytes: usize,
}

impl<B: Send + 'static> Stage<B> for HeadLimits {
    async fn run<S: Inner<B>>(self, req: Request<B>, mut inner: S) -> Answer {
        crate::request_limits::check(&req, self.max_header_bytes)?;
        inner.call(req).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use http::StatusCode;
    use tower::ServiceExt;

    use super::*;
    use crate::error::RegistryError;
    use http::Response;

    #[tokio::test]
    async fn an_oversized_head_never_reaches_the_inner_service() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&calls);
        let svc = tower::Layer::layer(
            &layer(1024),
            tower::service_fn(move |_req: Request<()>| {
                seen.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, RegistryError>(Response::new(crate::body::empty())) }
            }),
        );
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
