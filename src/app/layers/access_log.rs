//! The outermost layer under the version header: who the client is (behind
//! `server.trusted_proxies`, the resolved [`ConnInfo`] replaces the
//! listener's in the extensions), one [`RequestRecord`] per request (access
//! log line and request metrics; in the extensions for the layers below),
//! both bodies metered into it, and `server.idle_timeout` on the request
//! body. It sees every answer, errors included, and records its status.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use tower::{Layer, Service};

use super::BoxFuture;
use crate::access_log::{Direction, RequestRecord};
use crate::app::ConnInfo;
use crate::body::{MeteredBody, ProxyBody};
use crate::forwarded::TrustedProxies;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AccessLogLayer {
    pub metrics: Arc<Metrics>,
    pub trusted_proxies: TrustedProxies,
    /// `server.idle_timeout`, for the request body.
    pub idle_timeout: Duration,
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;
    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog {
            inner,
            config: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AccessLog<S> {
    inner: S,
    config: AccessLogLayer,
}

impl<S, B> Service<Request<B>> for AccessLog<S>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<crate::body::BoxError>,
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
{
    type Response = Response<ProxyBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<ProxyBody>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let local = parts.extensions.get::<ConnInfo>().copied();
        let conn =
            local.map(|c| c.behind(self.config.trusted_proxies.resolve(&parts.headers, c.peer)));
        let peer = conn
            .map(|c| c.peer)
            .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let record = RequestRecord::new(
            parts.method.clone(),
            parts.uri.path(),
            peer,
            Arc::clone(&self.config.metrics),
        );
        if let Some(conn) = conn {
            parts.extensions.insert(conn);
        }
        parts.extensions.insert(Arc::clone(&record));
        let body = MeteredBody::new(body, Arc::clone(&record), Direction::In)
            .idle_timeout(self.config.idle_timeout)
            .boxed_unsync();
        let req = Request::from_parts(parts, body);
        // Boxed before the async block: the compiler cannot prove an async
        // block holding `S::Future` Send (rust-lang/rust#110338).
        let answer: BoxFuture<Result<Response<ProxyBody>, S::Error>> =
            Box::pin(self.inner.call(req));
        Box::pin(async move {
            let resp = answer.await?;
            record.set_status(resp.status().as_u16());
            Ok(resp.map(|b| MeteredBody::new(b, record, Direction::Out).boxed_unsync()))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use http::StatusCode;
    use tower::ServiceExt;

    use super::*;
    use crate::error::RegistryError;

    /// What the inner service got: the connection and the record.
    type Seen = (ConnInfo, Arc<RequestRecord>);

    fn layer(metrics: &Arc<Metrics>, trusted: &str) -> AccessLogLayer {
        AccessLogLayer {
            metrics: Arc::clone(metrics),
            trusted_proxies: TrustedProxies::parse(&[trusted.to_owned()]).unwrap(),
            idle_timeout: Duration::from_secs(60),
        }
    }

    /// The record goes inward with the client a trusted proxy names; the
    /// route and account the inner layers set, and the status, end up in
    /// the request metrics once the response is done.
    #[tokio::test]
    async fn the_record_goes_inward_and_counts_the_answer() {
        let metrics = Arc::new(Metrics::new());
        let seen: Arc<Mutex<Option<Seen>>> = Arc::default();
        let inner = {
            let seen = Arc::clone(&seen);
            tower::service_fn(move |req: Request<ProxyBody>| {
                let conn = *req.extensions().get::<ConnInfo>().unwrap();
                let record = Arc::clone(req.extensions().get::<Arc<RequestRecord>>().unwrap());
                record.set_route(
                    crate::route_kind::RouteKind::Manifest,
                    Some("team/app".into()),
                );
                record.set_account("alice");
                *seen.lock().unwrap() = Some((conn, record));
                async {
                    let mut resp = Response::new(crate::body::full("{}"));
                    *resp.status_mut() = StatusCode::CREATED;
                    Ok::<_, RegistryError>(resp)
                }
            })
        };
        let svc = layer(&metrics, "10.0.0.0/8").layer(inner);
        let mut req = Request::put("/v2/team/app/manifests/v1")
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-forwarded-proto", "http")
            .body(crate::body::empty())
            .unwrap();
        let balancer: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        req.extensions_mut().insert(ConnInfo {
            peer: balancer,
            local: "127.0.0.1:5443".parse().unwrap(),
            tls: true,
        });
        let resp = svc.oneshot(req).await.unwrap();
        let (conn, record) = seen.lock().unwrap().take().unwrap();
        assert_eq!(conn.peer.ip().to_string(), "203.0.113.9");
        assert!(!conn.tls, "the proxy said the client spoke plain HTTP");
        drop(record);
        drop(resp);
        let text = metrics.encode();
        assert!(
            text.contains(
                "regate_requests_total{route=\"manifest\",method=\"PUT\",status=\"201\"} 1"
            ),
            "{text}"
        );
    }
}
