//! Accept loops: TCP accept, optional TLS handshake (with a timeout), then
//! HTTP/1.1 or HTTP/2 on the connection. Stops accepting when told and lets
//! open connections finish within a bound.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::app::ConnInfo;
use crate::body::ProxyBody;
use crate::metrics::Metrics;

pub type ResponseFuture = Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>>;
/// A request handler for one listener.
pub type Handler = Arc<dyn Fn(Request<Incoming>, ConnInfo) -> ResponseFuture + Send + Sync>;

pub struct LoopSettings {
    pub name: &'static str,
    pub tls: Option<TlsAcceptor>,
    pub handshake_timeout: Duration,
    pub shutdown_timeout: Duration,
}

/// hyper's HTTP/1 `max_buf_size` for client connections. Besides the read buffer
/// (request head, body reads) it bounds each connection's write queue: hyper takes
/// response chunks from the body while less than this is queued, so a client slower
/// than the registry made regate hold up to this much plus one chunk per download
/// (1 MiB here before: 200 rate-limited TLS downloads peaked at 81-129 MiB). At
/// 64 KiB the queue holds one upstream read (see `proxy::UPSTREAM_READ_MAX`).
const H1_MAX_BUF_SIZE: usize = 64 * 1024;

fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(H1_MAX_BUF_SIZE);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .adaptive_window(true)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    b
}

/// Serves `listener` until `stop` turns true, then drains.
pub async fn serve(
    listener: TcpListener,
    settings: LoopSettings,
    handler: Handler,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let builder = http_builder();
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = settings.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::stop_signal::stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = ConnInfo {
            peer,
            local,
            tls: settings.tls.is_some(),
        };
        let handler = Arc::clone(&handler);
        let svc = service_fn(move |req| {
            let fut = handler(req, conn);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = settings.tls.clone();
        let handshake_timeout = settings.handshake_timeout;
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let result = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let sni = tls_stream.get_ref().1.server_name().map(str::to_owned);
                            tracing::trace!(%peer, sni = sni.as_deref().unwrap_or("-"), "TLS established");
                            watcher
                                .watch(builder.serve_connection(TokioIo::new(tls_stream), svc))
                                .await
                        }
                        Ok(Err(e)) => {
                            metrics.tls_failure("handshake");
                            tracing::debug!(%peer, failure = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            metrics.tls_failure("timeout");
                            tracing::debug!(%peer, failure = "timeout", "TLS handshake timed out");
                            return;
                        }
                    }
                }
                None => {
                    watcher
                        .watch(builder.serve_connection(TokioIo::new(stream), svc))
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(settings.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = settings.name,
            "connections still open after the shutdown timeout; closing them"
        );
    }
}
