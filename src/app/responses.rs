//! Small responses regate makes itself (success answers; errors go through
//! `RegistryError`). The version header is the stack's
//! ([`super::layers::api_version`]), as on every answer.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{empty, full, ProxyBody};

/// A bodiless answer.
pub fn empty_response(status: StatusCode) -> Response<ProxyBody> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

/// A JSON answer.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<ProxyBody> {
    let body = serde_json::to_vec(value).expect("JSON value");
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}
