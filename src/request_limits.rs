//! Limits on a request's head, checked first in the pipeline: the size of
//! the target and headers (`server.max_header_bytes`) and the number of
//! headers ([`MAX_HEADERS`]). A request over either gets 431 with an OCI error
//! body before anything else looks at it. hyper's larger limits
//! ([`crate::config::HARD_MAX_HEAD_BYTES`]) stay as a backstop. Pure; calls
//! only the error type.

use http::{Request, StatusCode};

use crate::error::{ErrorCode, RegistryError};

/// The most headers a request may carry (hyper's own default for HTTP/1.1).
pub const MAX_HEADERS: usize = 100;

/// The size of a request head as HTTP/1.1 would send it: method, target,
/// and `name: value\r\n` per header.
pub fn head_size<B>(req: &Request<B>) -> usize {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().len())
        .unwrap_or(0);
    req.method().as_str().len()
        + target
        + req
            .headers()
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>()
}

/// Refuses a request whose head is over the limits.
pub fn check<B>(req: &Request<B>, max_bytes: usize) -> Result<(), RegistryError> {
    let count = req.headers().len();
    if count > MAX_HEADERS {
        return Err(too_large(format!(
            "too many request headers: {count}, the limit is {MAX_HEADERS}"
        )));
    }
    let size = head_size(req);
    if size > max_bytes {
        return Err(too_large(format!(
            "the request headers are too large: {size} bytes, the limit is {max_bytes}"
        )));
    }
    Ok(())
}

fn too_large(message: String) -> RegistryError {
    RegistryError::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ErrorCode::SizeInvalid,
        message,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, String)]) -> Request<()> {
        let mut b = Request::get("/v2/a/manifests/v1");
        for (n, v) in headers {
            b = b.header(*n, v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn counts_and_sizes_are_limited() {
        assert!(check(&req(&[("x-a", "b".into())]), 1024).is_ok());
        let big = req(&[("x-big", "v".repeat(2000))]);
        let err = check(&big, 1024).unwrap_err();
        assert_eq!(err.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert!(check(&big, 4096).is_ok());
        let many: Vec<(&str, String)> = (0..=MAX_HEADERS).map(|i| ("x-n", i.to_string())).collect();
        assert_eq!(
            check(&req(&many), 1 << 20).unwrap_err().status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        assert!(check(&req(&many[..MAX_HEADERS]), 1 << 20).is_ok());
    }
}
