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

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;
    use crate::error::ErrorCode;

    #[tokio::test]
    async fn an_error_below_becomes_the_oci_error_response() {
        let svc = AnswerErrorsLayer.layer(tower::service_fn(|_req: Request<()>| async {
            Err::<Response<ProxyBody>, _>(RegistryError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::ManifestUnknown,
                "no such tag",
            ))
        }));
        let resp = svc
            .oneshot(Request::get("/v2/a/manifests/v1").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errors"][0]["code"], "MANIFEST_UNKNOWN");
    }
}
