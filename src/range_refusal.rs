//! The registry's 416 to a blob `GET`, sent whole.
//!
//! 2.8's blob server sets `Content-Length` to the blob's size before Go's
//! `http.ServeContent` refuses the `Range` (unsatisfiable, reversed or
//! malformed) with `http.Error`: the answer declares the blob's size and
//! carries `invalid range\n` or nothing. Forwarded as is, that body ends
//! early: an HTTP/1.1 client sees the connection cut, and on HTTP/2 hyper
//! resets the stream (`INTERNAL_ERROR`), and h2 drops the answer's headers
//! too when they were still queued, so the client gets no 416 at all (seen
//! in the `fast_reads` table test: 2 runs in 30 at either read size).
//!
//! [`whole`] reads such a body (it is small; at most [`MAX_READ`] bytes are
//! held) up to its end or its failure and sends what arrived with its real
//! length. Owns nothing else; calls only `body`.

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};

use crate::body::{BoxError, ProxyBody};

/// The most of a 416's body held in memory; a longer one is passed on as
/// it comes (after the part already read).
pub const MAX_READ: usize = 64 * 1024;

/// `resp` (the registry's answer to a blob `GET`) with a 416's body read
/// and its `Content-Length` the bytes that arrived; any other answer as is.
pub async fn whole(resp: Response<ProxyBody>) -> Response<ProxyBody> {
    if resp.status() != StatusCode::RANGE_NOT_SATISFIABLE {
        return resp;
    }
    let (mut parts, mut body) = resp.into_parts();
    let mut read = BytesMut::new();
    while read.len() <= MAX_READ {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    read.extend_from_slice(data);
                }
            }
            Some(Err(e)) => {
                tracing::debug!(target: "regate::upstream", error = %e, received = read.len(), "the registry's 416 body ended early (it declares the blob's size); sent with its real length");
                break;
            }
            None => break,
        }
    }
    if read.len() > MAX_READ {
        // Not 2.8's short text: the rest follows as it comes, length unknown.
        parts.headers.remove(header::CONTENT_LENGTH);
        let first = futures_util::stream::once(async move {
            Ok::<_, BoxError>(http_body::Frame::data(read.freeze()))
        });
        let rest = http_body_util::BodyStream::new(body);
        use futures_util::StreamExt as _;
        return Response::from_parts(parts, StreamBody::new(first.chain(rest)).boxed_unsync());
    }
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(read.len()));
    let bytes: Bytes = read.freeze();
    Response::from_parts(parts, crate::body::full(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;

    fn answer(
        status: StatusCode,
        length: u64,
        frames: Vec<Result<&'static [u8], &'static str>>,
    ) -> Response<ProxyBody> {
        let items: Vec<Result<Frame<Bytes>, BoxError>> = frames
            .into_iter()
            .map(|f| {
                f.map(|b| Frame::data(Bytes::from_static(b)))
                    .map_err(BoxError::from)
            })
            .collect();
        let mut resp =
            Response::new(StreamBody::new(futures_util::stream::iter(items)).boxed_unsync());
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        resp
    }

    #[tokio::test]
    async fn a_416_cut_short_is_sent_with_the_bytes_that_arrived() {
        let resp = whole(answer(
            StatusCode::RANGE_NOT_SATISFIABLE,
            70_000,
            vec![Ok(b"invalid "), Ok(b"range\n"), Err("cut short")],
        ))
        .await;
        assert_eq!(resp.headers()[header::CONTENT_LENGTH], "14");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"invalid range\n");
        let resp = whole(answer(
            StatusCode::RANGE_NOT_SATISFIABLE,
            70_000,
            vec![Err("cut")],
        ))
        .await;
        assert_eq!(resp.headers()[header::CONTENT_LENGTH], "0");
    }

    #[tokio::test]
    async fn other_answers_and_long_bodies_pass_on_untouched() {
        let resp = whole(answer(StatusCode::OK, 3, vec![Ok(b"abc")])).await;
        assert_eq!(resp.headers()[header::CONTENT_LENGTH], "3");
        let big: &'static [u8] = Box::leak(vec![b'x'; MAX_READ].into_boxed_slice());
        let resp = whole(answer(
            StatusCode::RANGE_NOT_SATISFIABLE,
            9,
            vec![Ok(big), Ok(b"yz"), Ok(b"!")],
        ))
        .await;
        assert!(resp.headers().get(header::CONTENT_LENGTH).is_none());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), MAX_READ + 3);
        assert_eq!(&body[MAX_READ..], b"yz!");
    }
}
