//! A response body that holds a write's [`WriteGuard`] until it has been sent
//! completely (or dropped), so a draining gate waits for the whole response.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::pass::WriteGuard;
use crate::body::BoxError;

pin_project! {
    pub struct GuardedBody<B> {
        #[pin]
        inner: B,
        guard: Option<WriteGuard>,
    }
}

impl<B> GuardedBody<B> {
    pub fn new(inner: B, guard: WriteGuard) -> Self {
        GuardedBody {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B> Body for GuardedBody<B>
where
    B: Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = &r {
            // The response is complete: release the write now, not at drop.
            this.guard.take();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
