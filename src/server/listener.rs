//! Accept loops: TCP accept, optional TLS handshake (with a timeout), then
//! HTTP/1.1 or HTTP/2 on the connection. Stops accepting when told and lets
//! open connections finish within a bound.
//!
//! hyper's own limits on a request head (twice `server.max_header_bytes`,
//! [`HARD_MAX_HEADERS`]) are a backstop that answers a bare 431; the
//! configured, smaller limits are enforced by the pipeline
//! ([`crate::request_limits`]) with an OCI error body. A client gets the
//! header read timeout to send its first bytes ([`super::first_bytes`]) and
//! then, on HTTP/1.1, each request head. A connection that has had no
//! request in progress for as long is closed gracefully, HTTP/2 with GOAWAY
//! ([`super::idle`]; hyper's header read timeout does this for HTTP/1.1).
//!
//! On shutdown a listener stops accepting, lets open connections finish
//! within `server.shutdown_timeout`, then closes those still open.
//!
//! A listener serves a connection only with a permit of its
//! [`LoopSettings::connections`] budget (`server.max_connections`, shared by
//! the registry listeners; the admin listener has its own), held until the
//! connection closes. At the limit a listener holds the one connection it
//! accepted until a permit frees and accepts no more, so the others wait in
//! the kernel's accept queue instead of taking file descriptors and memory.
//! (The permit is taken after the accept: taken before, a listener with no
//! connection coming would sit on a freed permit the other one needs.)

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceExt};

use super::first_bytes::FirstBytes;
use super::idle::Activity;
use crate::app::ConnInfo;
use crate::body::{BoxError, ProxyBody};
use crate::config::HARD_MAX_HEAD_BYTES;
use crate::guarded_body::GuardedBody;
use crate::metrics::Metrics;
use crate::unread_body::{Disposal, UnreadBody};

/// The number of HTTP/1.1 headers hyper itself refuses (bare 431) beyond.
pub const HARD_MAX_HEADERS: usize = 1000;

pub struct LoopSettings {
    pub name: &'static str,
    pub tls: Option<TlsAcceptor>,
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    /// `server.max_header_bytes`.
    pub max_header_bytes: usize,
    pub shutdown_timeout: Duration,
    /// Connections this listener may hold open (shared between listeners).
    pub connections: Arc<Semaphore>,
    /// The setting the budget comes from, for the log line at the limit.
    pub connections_key: &'static str,
}

/// hyper's HTTP/1 `max_buf_size`: twice the configured head limit
/// (`server.max_header_bytes`), so a head between the two gets regate's 431
/// with an OCI body and only a larger one hyper's bare 431; the HTTP/2
/// header list gets the same bound. The same number also bounds each
/// connection's write queue: hyper takes response chunks from the body while
/// less than this is queued, so a client slower than the registry makes
/// regate hold up to this much plus one upstream read per download (1 MiB
/// here before: 200 rate-limited TLS downloads peaked at 81-129 MiB; with the
/// default 32 KiB limit, 64 KiB, about 50 MiB; see `proxy::UPSTREAM_READ_MAX`).
fn h1_max_buf_size(max_header_bytes: usize) -> usize {
    (2 * max_header_bytes).clamp(16 * 1024, HARD_MAX_HEAD_BYTES)
}

fn http_builder(
    header_read_timeout: Duration,
    max_header_bytes: usize,
) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(h1_max_buf_size(max_header_bytes))
        .max_headers(HARD_MAX_HEADERS);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .adaptive_window(true)
        // Header list size counts 32 bytes per header on top of the text.
        .max_header_list_size(u32::try_from(2 * max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    b
}

/// Serves `listener` with `service` until `stop` turns true, then drains.
/// Each request reaches `service` with its body as an [`UnreadBody`] and the
/// connection's [`ConnInfo`] in its extensions; the answer to a HEAD loses
/// its body here ([`super::head_response`]), and a request whose body was
/// left unread closes its HTTP/1.1 connection.
pub async fn serve<S>(
    listener: TcpListener,
    settings: LoopSettings,
    service: S,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) where
    S: Service<Request<UnreadBody>, Response = Response<ProxyBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    // Draining: open connections close once their requests are done; each
    // holds a sender of `open` until it ends.
    let (drain, draining) = watch::channel(false);
    let (open, mut all_closed) = mpsc::channel::<()>(1);
    let builder = http_builder(settings.header_read_timeout, settings.max_header_bytes);
    let first_bytes = settings.header_read_timeout;
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut warned_at: Option<std::time::Instant> = None;
    // Past the shutdown timeout, every connection still open is closed.
    let (force_close, closing) = watch::channel(false);
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
        let permit = match Arc::clone(&settings.connections).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if warned_at.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    warned_at = Some(std::time::Instant::now());
                    tracing::warn!(
                        listener = settings.name,
                        limit = settings.connections_key,
                        "connection limit reached; new connections wait until one closes"
                    );
                }
                tokio::select! {
                    p = Arc::clone(&settings.connections).acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = crate::stop_signal::stopped(&mut stop) => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = ConnInfo {
            peer,
            local,
            tls: settings.tls.is_some(),
        };
        let service = service.clone();
        let activity = Arc::new(Activity::default());
        let requests = Arc::clone(&activity);
        let svc = TowerToHyperService::new(tower::service_fn(move |req: Request<Incoming>| {
            let request = requests.start();
            let head = req.method() == Method::HEAD;
            let (mut parts, body) = req.into_parts();
            let (body, watch) = UnreadBody::new(body, parts.version, &parts.headers);
            parts.extensions.insert(conn);
            let answer = service.clone().oneshot(Request::from_parts(parts, body));
            async move {
                let mut resp = answer.await?;
                if watch.disposal() == Disposal::Close {
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                if head {
                    resp = super::head_response::without_body(resp);
                }
                Ok::<_, Infallible>(
                    resp.map(|body| ProxyBody::new(GuardedBody::new(body, request))),
                )
            }
        }));
        let ends = ConnEnds {
            activity,
            idle: settings.header_read_timeout,
            draining: draining.clone(),
            closing: closing.clone(),
            _open: open.clone(),
        };
        let builder = builder.clone();
        let tls = settings.tls.clone();
        let handshake_timeout = settings.handshake_timeout;
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let _permit = permit;
            let result = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let sni = tls_stream.get_ref().1.server_name().map(str::to_owned);
                            tracing::trace!(%peer, sni = sni.as_deref().unwrap_or("-"), "TLS established");
                            let io = FirstBytes::new(tls_stream, first_bytes);
                            serve_connection(&builder, TokioIo::new(io), svc, ends).await
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
                    let io = FirstBytes::new(stream, first_bytes);
                    serve_connection(&builder, TokioIo::new(io), svc, ends).await
                }
            };
            if let Some(Err(e)) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = drain.send(true);
    drop(open);
    if tokio::time::timeout(settings.shutdown_timeout, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = settings.name,
            "connections still open after the shutdown timeout; closing them"
        );
        let _ = force_close.send(true);
    }
}

/// What ends a connection besides the client.
struct ConnEnds {
    /// Its requests in progress, and `idle`: how long it may have none.
    activity: Arc<Activity>,
    idle: Duration,
    /// The listener drains: close once the requests in progress are done.
    draining: watch::Receiver<bool>,
    /// Shutdown's time is up: drop it.
    closing: watch::Receiver<bool>,
    /// Held until the connection ends (the listener waits for all).
    _open: mpsc::Sender<()>,
}

/// Serves one connection until it ends: closed gracefully (HTTP/2 GOAWAY,
/// HTTP/1.1 without keep-alive; requests in progress finish) once it has had
/// no request in progress for `ends.idle` or when the listener drains;
/// dropped (`None`) when shutdown's time is up.
async fn serve_connection<I, H>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: H,
    mut ends: ConnEnds,
) -> Option<Result<(), BoxError>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    H: hyper::service::Service<Request<Incoming>, Response = Response<ProxyBody>>,
    H::Future: 'static,
    H::Error: Into<BoxError>,
    TokioExecutor: auto::HttpServerConnExec<H::Future, ProxyBody>,
{
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut closing_gracefully = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => return Some(done),
            _ = ends.activity.idle_for(ends.idle), if !closing_gracefully => {
                tracing::debug!(idle = ?ends.idle, "closing a connection without requests");
                conn.as_mut().graceful_shutdown();
                closing_gracefully = true;
            }
            _ = crate::stop_signal::stopped(&mut ends.draining), if !closing_gracefully => {
                conn.as_mut().graceful_shutdown();
                closing_gracefully = true;
            }
            _ = crate::stop_signal::stopped(&mut ends.closing) => return None,
        }
    }
}
