//! The answer to a HEAD: the headers a GET would get, no body.
//!
//! hyper's HTTP/1 server drops a body sent to a HEAD; its HTTP/2 server
//! sends it, and clients then fail the stream (curl's `PROTOCOL_ERROR`, Go's
//! "received DATA on a HEAD request"). So every answer regate makes to a
//! HEAD (challenges, refusals, its own endpoints) loses its body here, on
//! both listeners, and keeps the `Content-Length` the body had. Answers
//! forwarded from the registry come without a body already and pass as they
//! are.

use http::{header, HeaderValue, Response};
use http_body::Body as _;

use crate::body::ProxyBody;

/// `resp` as the answer to a HEAD.
pub fn without_body(resp: Response<ProxyBody>) -> Response<ProxyBody> {
    if resp.body().is_end_stream() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    if !parts.headers.contains_key(header::CONTENT_LENGTH) {
        if let Some(n) = body.size_hint().exact() {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
    }
    Response::from_parts(parts, crate::body::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_keeps_the_length_and_loses_the_body() {
        let resp = Response::new(crate::body::full("{\"errors\":[]}"));
        let head = without_body(resp);
        assert_eq!(head.headers()[header::CONTENT_LENGTH], "13");
        assert!(head.body().is_end_stream());
        // An explicit length (a forwarded blob HEAD) is left alone.
        let mut resp = Response::new(crate::body::empty());
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(1234u64));
        assert_eq!(without_body(resp).headers()[header::CONTENT_LENGTH], "1234");
    }
}
