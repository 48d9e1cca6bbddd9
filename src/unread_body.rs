//! The request body as the listeners hand it to a handler, and what becomes
//! of the part a handler leaves unread.
//!
//! regate answers many requests before reading their body: a 401 challenge
//! to a PUT sent without credentials (every client's first try), a refusal,
//! the write gate's 503, a 413. A server that then closes the connection
//! with the body still arriving makes the kernel reset it, and the client
//! gets `EOF` or `broken pipe` instead of the answer that tells it to log in
//! or retry (Go's transport, docker, containerd). So, as Go's server and
//! nginx's lingering close do, an HTTP/1 body dropped before its end is read
//! and discarded in the background, within [`LINGER_TOTAL`] and
//! [`LINGER_IDLE`]:
//! - a body of a known length up to [`KEEP_ALIVE_DRAIN`] is read to its end
//!   and the connection stays usable ([`Disposal::Keep`]);
//! - a longer or chunked one is answered with `Connection: close`
//!   ([`Disposal::Close`]) and still read while the client sends it, so the
//!   answer arrives before the connection ends;
//! - a body the client has not started (`Expect: 100-continue`, never
//!   polled) is not asked for: the answer closes the connection.
//!
//! HTTP/2 needs none of this: a stream's unread body ends with a
//! `RST_STREAM(NO_ERROR)` and the connection goes on.
//!
//! Owns [`UnreadBody`] and [`Disposal`]; calls only hyper and tokio.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// The largest unread body read to its end with the connection kept (Go's
/// server discards up to 256 KiB; regate's own refusals of manifests and
/// small blobs stay on one connection).
pub const KEEP_ALIVE_DRAIN: u64 = 1024 * 1024;
/// How long an unread body is read after the answer, at most.
pub const LINGER_TOTAL: Duration = Duration::from_secs(30);
/// How long the reading waits for the client's next bytes.
pub const LINGER_IDLE: Duration = Duration::from_secs(5);

/// A request body that is drained, not cut, when its handler drops it early.
pub struct UnreadBody {
    inner: Option<Incoming>,
    /// Shared with the listener, which reads it once the answer is ready.
    progress: Arc<Progress>,
    /// Whether a drop should drain at all (HTTP/1 only).
    drain: bool,
    /// `Expect: 100-continue`: the client sends the body only when asked.
    expects_continue: bool,
}

#[derive(Default)]
struct Progress {
    polled: AtomicBool,
    ended: AtomicBool,
    dropped_early: AtomicBool,
}

/// What the listener must do with the connection, once a handler answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposal {
    /// The body was read or is being read to its end: nothing to say.
    Keep,
    /// The body is left (partly) unread: the answer says `Connection: close`.
    Close,
}

/// The listener's view of a request body it handed out.
#[derive(Clone)]
pub struct BodyWatch {
    progress: Arc<Progress>,
    http1: bool,
    /// `Content-Length`, when the request has one.
    length: Option<u64>,
    expects_continue: bool,
}

impl UnreadBody {
    /// Wraps a request's body; the watch tells, after the handler answered,
    /// whether the connection can stay open.
    pub fn new(inner: Incoming, version: Version, headers: &HeaderMap) -> (UnreadBody, BodyWatch) {
        let progress = Arc::new(Progress::default());
        let http1 = version <= Version::HTTP_11;
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let expects_continue = headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let body = UnreadBody {
            inner: Some(inner),
            progress: Arc::clone(&progress),
            drain: http1,
            expects_continue,
        };
        let watch = BodyWatch {
            progress,
            http1,
            length,
            expects_continue,
        };
        (body, watch)
    }
}

impl BodyWatch {
    /// Decided when the answer is ready: a body dropped unread by then keeps
    /// the connection only if it is small enough to read to its end.
    pub fn disposal(&self) -> Disposal {
        if !self.http1 || !self.progress.dropped_early.load(Ordering::SeqCst) {
            return Disposal::Keep;
        }
        let asked = !self.expects_continue || self.progress.polled.load(Ordering::SeqCst);
        match self.length {
            Some(n) if asked && n <= KEEP_ALIVE_DRAIN => Disposal::Keep,
            _ => Disposal::Close,
        }
    }
}

impl Body for UnreadBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.progress.polled.store(true, Ordering::SeqCst);
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.progress.ended.store(true, Ordering::SeqCst);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(Body::size_hint)
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

impl Drop for UnreadBody {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if self.progress.ended.load(Ordering::SeqCst) || inner.is_end_stream() {
            return;
        }
        self.progress.dropped_early.store(true, Ordering::SeqCst);
        // A body the client waits to be asked for (`Expect: 100-continue`)
        // is not asked for now: polling it would invite the whole upload.
        if !self.drain || (self.expects_continue && !self.progress.polled.load(Ordering::SeqCst)) {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(discard(inner));
        }
    }
}

/// Reads and forgets a body, within the linger bounds.
async fn discard(mut body: Incoming) {
    let _ = tokio::time::timeout(LINGER_TOTAL, async {
        // Until the end, an error, or a client gone quiet.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(LINGER_IDLE, body.frame()).await {}
    })
    .await;
}
