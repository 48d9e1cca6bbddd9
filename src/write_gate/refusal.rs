//! A write the gate did not let through, and its OCI answer: 503
//! `UNAVAILABLE` with `Retry-After` and a message naming the maintenance.

use http::{HeaderValue, StatusCode};

use crate::error::{ErrorCode, RegistryError};

/// A write the gate did not let through.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(
        "the registry is in maintenance ({reason}); writes are refused until it ends, retry later"
    )]
    Refused { reason: String, retry_after: u64 },
    #[error("the registry is in maintenance ({reason}); this write waited {waited_secs}s for it to end and gave up, retry later")]
    HoldTimeout {
        reason: String,
        waited_secs: u64,
        retry_after: u64,
    },
}

impl From<GateError> for RegistryError {
    fn from(e: GateError) -> Self {
        let (reason, retry_after) = match &e {
            GateError::Refused {
                reason,
                retry_after,
            } => (reason.clone(), *retry_after),
            GateError::HoldTimeout {
                reason,
                retry_after,
                ..
            } => (reason.clone(), *retry_after),
        };
        RegistryError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            e.to_string(),
        )
        .with_detail(serde_json::json!({"maintenance": true, "reason": reason}))
        .with_header(http::header::RETRY_AFTER, HeaderValue::from(retry_after))
    }
}
