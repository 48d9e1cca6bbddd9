//! The write gate in the stack: a write the [`WriteGate`] admits holds its
//! pass until its response is complete (a draining gate waits for it); a
//! closed gate holds the write or refuses it (503 with `Retry-After`).
//! Reads pass at once. Taken before any tag lock (in the endpoints), so a
//! held write never blocks reads.

use std::sync::Arc;

use http::Request;

use super::stage::{Inner, Stage, StageLayer};
use super::{extension, Answer};
use crate::route::Route;
use crate::write_gate::WriteGate;

/// The layer, over `gate`.
pub fn layer(gate: Arc<WriteGate>) -> StageLayer<Gated> {
    StageLayer(Gated { gate })
}

#[derive(Clone)]
pub struct Gated {
    gate: Arc<WriteGate>,
}

impl<B: Send + 'static> Stage<B> for Gated {
    async fn run<S: Inner<B>>(self, req: Request<B>, mut inner: S) -> Answer {
        let route: Route = extension(&req)?;
        let pass = self.gate.admit(req.method(), &route).await?;
        let resp = inner.call(req).await?;
        Ok(match pass {
            Some(pass) => pass.finish(resp),
            None => resp,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use http::{Method, StatusCode};
    use tower::ServiceExt;

    use super::*;
    use crate::body::ProxyBody;
    use crate::config::gc::ClosedWrites;
    use crate::error::RegistryError;
    use crate::metrics::Metrics;
    use crate::write_gate::GatePolicy;
    use http::Response;
    use tower::Service;

    fn gate(closed_writes: ClosedWrites) -> Arc<WriteGate> {
        WriteGate::new(
            GatePolicy {
                closed_writes,
                hold_timeout: Duration::from_secs(30),
                retry_after: Duration::from_secs(7),
                push_window: Duration::from_secs(60),
            },
            Arc::new(Metrics::new()),
        )
    }

    fn req(method: Method, path: &str) -> Request<()> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        req.extensions_mut().insert(Route::parse(path).unwrap());
        req
    }

    fn counted(
        calls: &Arc<AtomicUsize>,
    ) -> impl Service<
        Request<()>,
        Response = Response<ProxyBody>,
        Error = RegistryError,
        Future: Send + 'static,
    > + Clone
           + Send
           + 'static {
        let calls = Arc::clone(calls);
        tower::service_fn(move |_req: Request<()>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok(Response::new(crate::body::empty())) }
        })
    }

    #[tokio::test]
    async fn a_closed_gate_refuses_writes_and_reads_pass() {
        let g = gate(ClosedWrites::Reject);
        g.close_now("test");
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = tower::Layer::layer(&layer(Arc::clone(&g)), counted(&calls));
        for m in [Method::GET, Method::HEAD] {
            let resp = svc
                .clone()
                .oneshot(req(m, "/v2/a/manifests/v1"))
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let err = svc
            .clone()
            .oneshot(req(Method::PUT, "/v2/a/manifests/v1"))
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.into_response().headers()["retry-after"], "7");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "a refused write went inward"
        );
        g.open();
        svc.oneshot(req(Method::PUT, "/v2/a/manifests/v1"))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_closed_gate_holds_a_write_until_it_opens() {
        let g = gate(ClosedWrites::Hold);
        g.close_now("test");
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = tower::Layer::layer(&layer(Arc::clone(&g)), counted(&calls));
        let write = tokio::spawn(svc.oneshot(req(Method::POST, "/v2/a/blobs/uploads/")));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!write.is_finished(), "a write passed a closed gate");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        g.open();
        let resp = write.await.unwrap().unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Its pass is held until the response is done, then released.
        assert_eq!(g.status().writes_in_flight, 1);
        drop(resp);
        assert_eq!(g.status().writes_in_flight, 0);
    }
}
