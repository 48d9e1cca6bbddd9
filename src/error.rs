//! The one place where a registry error becomes an HTTP response.
//!
//! Owns [`RegistryError`] (an OCI error code, a status, a message and optional
//! detail) and its rendering as the OCI JSON body
//! `{"errors":[{"code","message","detail"}]}` (the
//! `Docker-Distribution-Api-Version` header on it, as on every answer, is set
//! by the listeners' stacks: `app::layers::api_version`). Every layer that answers a
//! client itself (route parsing, auth, write gate, tag delete, proxy failures)
//! converts its own error type into this one; nothing else renders error bodies.
//! Also [`chain`]: an error's message with its causes, for the messages
//! (client details, operator errors) that must name the real cause.

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::body::ProxyBody;

/// The error codes of the OCI distribution spec, plus the few distribution adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    TagInvalid,
    RangeInvalid,
    PaginationNumberInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    Unavailable,
    Unknown,
}

impl ErrorCode {
    /// The code as it appears in the JSON body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::TagInvalid => "TAG_INVALID",
            ErrorCode::RangeInvalid => "RANGE_INVALID",
            ErrorCode::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }
}

/// An error regate answers itself, in the registry's own vocabulary.
#[derive(Debug, Clone)]
pub struct RegistryError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    /// Extra response headers: `WWW-Authenticate`, `Retry-After`, `Allow`, ...
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    errors: [ErrorEntry<'a>; 1],
}

#[derive(Serialize)]
struct ErrorEntry<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a serde_json::Value>,
}

impl RegistryError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        RegistryError {
            status,
            code,
            message: message.into(),
            detail: None,
            headers: Vec::new(),
        }
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The upstream registry could not be reached or broke the connection.
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, ErrorCode::Unavailable, message)
    }

    /// Something regate needs for this request (the shared state, another
    /// replica's answer) cannot be had right now; the client may retry in a
    /// second.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            message,
        )
        .with_header(http::header::RETRY_AFTER, HeaderValue::from(1))
    }

    /// The upstream did not answer within the configured time.
    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, ErrorCode::Unavailable, message)
    }

    /// The JSON body, as bytes.
    pub fn body_bytes(&self) -> Bytes {
        let body = ErrorBody {
            errors: [ErrorEntry {
                code: self.code.as_str(),
                message: &self.message,
                detail: self.detail.as_ref(),
            }],
        };
        // Serializing plain strings and an owned JSON value cannot fail.
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// Render as a complete response.
    pub fn into_response(self) -> Response<ProxyBody> {
        let body = self.body_bytes();
        let mut resp = Response::new(crate::body::full(body.clone()));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        for (name, value) in self.headers {
            h.append(name, value);
        }
        resp
    }
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code.as_str(),
            self.message
        )
    }
}

impl std::error::Error for RegistryError {}

/// `e`'s causes, `e.source()` first, outermost to innermost.
pub fn causes<'a>(
    e: &'a dyn std::error::Error,
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(e.source(), |cause| cause.source())
}

/// An error and its sources, `a: b: c`, for messages and logs.
pub struct ErrorChain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        for cause in causes(self.0) {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

/// `Docker-Distribution-Api-Version`, on every answer regate gives
/// (set by `app::layers::api_version`).
pub const API_VERSION_HEADER: HeaderName =
    HeaderName::from_static("docker-distribution-api-version");

/// An error's message and those of its causes, `: `-separated (a client
/// library's own message is often a cause of its outer error).
pub fn chain(e: &dyn std::error::Error) -> String {
    ErrorChain(e).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_oci_error_body() {
        let err = RegistryError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::ManifestUnknown,
            "no such tag",
        )
        .with_detail(serde_json::json!({"tag": "x"}));
        let v: serde_json::Value = serde_json::from_slice(&err.body_bytes()).unwrap();
        assert_eq!(v["errors"][0]["code"], "MANIFEST_UNKNOWN");
        assert_eq!(v["errors"][0]["message"], "no such tag");
        assert_eq!(v["errors"][0]["detail"]["tag"], "x");
        let resp = err.into_response();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
}
