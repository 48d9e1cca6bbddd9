//! Body types that flow through regate, and the one wrapper that streams them.
//!
//! Owns [`ProxyBody`] (the boxed body every handler returns) and [`MeteredBody`],
//! which passes frames through untouched while counting bytes into the
//! request's [`RequestRecord`], enforcing an idle timeout (time without a frame,
//! never a total time, so a slow multi-GiB upload is not cut) and telling a
//! waiter when the stream has ended. Nothing here buffers a body but
//! [`read_capped`], for the small bodies regate reads itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, LengthLimitError, Limited};
use pin_project_lite::pin_project;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::access_log::{Direction, RequestRecord};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request and response regate handles.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Why [`read_capped`] returned no body.
#[derive(Debug, thiserror::Error)]
pub enum CappedReadError {
    /// The body holds more than the cap (in bytes).
    #[error("the body is over {0} bytes")]
    TooLarge(usize),
    /// The body failed before its end.
    #[error("{0}")]
    Read(BoxError),
}

/// Reads a whole small body (a form, a JSON request, a manifest) into memory,
/// refusing one of more than `limit` bytes as soon as it passes the limit.
/// The one capped reader: `http_body_util::Limited`. (The future is boxed so
/// that callers' futures stay `Send`: a generic `Into<BoxError>` bound in an
/// unboxed one trips rustc's "not general enough" on `Box<dyn Error>`.)
pub fn read_capped<B>(
    body: B,
    limit: usize,
) -> Pin<Box<dyn Future<Output = Result<Bytes, CappedReadError>> + Send>>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    Box::pin(async move {
        match Limited::new(body, limit).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<LengthLimitError>() => Err(CappedReadError::TooLarge(limit)),
            Err(e) => Err(CappedReadError::Read(e)),
        }
    })
}

/// A stream stalled for longer than the configured idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("no data for {0:?}: idle timeout")]
pub struct IdleTimeout(pub Duration);

pin_project! {
    /// Counts, times out when idle, and reports the end of a streamed body.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        idle_after: Option<Duration>,
        idle: Option<Pin<Box<Sleep>>>,
        // The idle clock runs: set at a poll, cleared by a frame.
        waiting: bool,
        record: Option<Arc<RequestRecord>>,
        direction: Direction,
        on_end: Option<oneshot::Sender<()>>,
    }
}

impl<B> MeteredBody<B> {
    /// Counts the body's bytes into `record`.
    pub fn new(inner: B, record: Arc<RequestRecord>, direction: Direction) -> Self {
        MeteredBody {
            inner,
            idle_after: None,
            idle: None,
            waiting: false,
            record: Some(record),
            direction,
            on_end: None,
        }
    }

    /// Counts nothing; for timeouts and end notification only.
    pub fn uncounted(inner: B) -> Self {
        MeteredBody {
            inner,
            idle_after: None,
            idle: None,
            waiting: false,
            record: None,
            direction: Direction::In,
            on_end: None,
        }
    }

    /// Fail the stream when no frame arrives for `after`.
    /// The clock starts at the first poll, not at creation: a request held
    /// before it is forwarded (the write gate) has not stalled.
    pub fn idle_timeout(mut self, after: Duration) -> Self {
        self.idle_after = Some(after);
        self
    }

    /// Returns a receiver that completes when the body has been read to its end
    /// (or dropped).
    pub fn notify_end(&mut self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.on_end = Some(tx);
        rx
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        // The clock starts when the consumer asks for a frame, not when the
        // last one was handed over: a consumer that paused (a slow client, a
        // busy registry) has not seen this stream stall.
        if let (false, Some(after)) = (*this.waiting, *this.idle_after) {
            match this.idle.as_mut() {
                Some(sleep) => sleep.as_mut().reset(Instant::now() + after),
                None => *this.idle = Some(Box::pin(tokio::time::sleep(after))),
            }
            *this.waiting = true;
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(record)) = (frame.data_ref(), this.record.as_ref()) {
                    record.add_bytes(*this.direction, data.len() as u64);
                }
                *this.waiting = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                if let Some(tx) = this.on_end.take() {
                    let _ = tx.send(());
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let (Some(sleep), Some(after)) = (this.idle.as_mut(), this.idle_after) {
                    if sleep.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Some(Err(Box::new(IdleTimeout(*after)))));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&'static [u8]], fail: bool) -> ProxyBody {
        let mut items: Vec<Result<Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        if fail {
            items.push(Err("connection reset".into()));
        }
        http_body_util::StreamBody::new(futures_util::stream::iter(items)).boxed_unsync()
    }

    #[tokio::test]
    async fn a_capped_read_takes_up_to_the_limit_over_frames() {
        let got = read_capped(frames(&[b"abc", b"de"], false), 5)
            .await
            .unwrap();
        assert_eq!(&got[..], b"abcde");
        let got = read_capped(empty(), 0).await.unwrap();
        assert!(got.is_empty());
    }

    #[tokio::test]
    async fn a_capped_read_refuses_one_byte_more_and_passes_read_errors_on() {
        let e = read_capped(frames(&[b"abc", b"def"], false), 5)
            .await
            .unwrap_err();
        assert!(matches!(e, CappedReadError::TooLarge(5)), "{e:?}");
        assert_eq!(e.to_string(), "the body is over 5 bytes");
        let e = read_capped(frames(&[b"ab"], true), 5).await.unwrap_err();
        assert!(matches!(e, CappedReadError::Read(_)), "{e:?}");
        assert_eq!(e.to_string(), "connection reset");
    }

    #[tokio::test]
    async fn the_idle_clock_counts_only_while_the_consumer_waits_for_a_frame() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Frame<Bytes>, BoxError>>();
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|f| (f, rx)) },
            );
        let after = Duration::from_millis(200);
        let mut body = MeteredBody::uncounted(http_body_util::StreamBody::new(Box::pin(stream)))
            .idle_timeout(after);
        let frame = |b: &'static [u8]| Ok(Frame::data(Bytes::from_static(b)));
        tx.send(frame(b"one")).unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        // The consumer pauses for twice the idle time; the stream did not stall.
        tokio::time::sleep(after * 2).await;
        let asked = tokio::time::timeout(Duration::from_millis(50), body.frame()).await;
        assert!(
            asked.is_err(),
            "timed out a stream whose consumer paused: {asked:?}"
        );
        tx.send(frame(b"two")).unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        // Now the stream stalls while the consumer waits: that times out.
        let started = std::time::Instant::now();
        let e = body.frame().await.unwrap().unwrap_err();
        assert!(e.is::<IdleTimeout>(), "{e}");
        assert!(started.elapsed() >= after, "{:?}", started.elapsed());
        drop(tx);
    }
}
