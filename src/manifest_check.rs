//! Checks a manifest body before it goes to the registry, for what 2.8
//! answers with a `500 UNKNOWN` instead of a `400`: an OCI image manifest or
//! index (by `Content-Type`, parameters allowed) whose JSON is `null` or an
//! object without `"schemaVersion": 2` (2.8's OCI unmarshaller returns a
//! plain error there). Everything else is left to the registry, which answers
//! it correctly. Pure; calls serde_json and the error type.

use http::StatusCode;

use crate::error::{ErrorCode, RegistryError};

const OCI_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
];

/// Go's encoding/json matches object keys case-insensitively (Unicode simple
/// folding: `ſ` is an `s`), so every key it would read as `schemaVersion` counts.
fn is_schema_version_key(key: &str) -> bool {
    let folded = key
        .chars()
        .map(|c| if c == 'ſ' { 's' } else { c })
        .flat_map(char::to_lowercase);
    folded.eq("schemaversion".chars())
}

/// Refuses a body 2.8 would answer with a 500.
pub fn check(content_type: Option<&str>, body: &[u8]) -> Result<(), RegistryError> {
    let essence = content_type
        .and_then(|t| t.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase());
    if !essence.is_some_and(|t| OCI_TYPES.contains(&t.as_str())) {
        return Ok(());
    }
    let refuse = || {
        Err(RegistryError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::ManifestInvalid,
            "an OCI manifest or index must be a JSON object with \"schemaVersion\": 2",
        ))
    };
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Null) => refuse(),
        Ok(serde_json::Value::Object(m)) => {
            let mut versions = m
                .iter()
                .filter(|(k, _)| is_schema_version_key(k))
                .peekable();
            if versions.peek().is_none() || !versions.all(|(_, v)| v.as_u64() == Some(2)) {
                return refuse();
            }
            Ok(())
        }
        // Not JSON, or another JSON type: 2.8 answers 400 itself.
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OCI: &str = "application/vnd.oci.image.manifest.v1+json";

    #[test]
    fn what_2_8_would_answer_with_500_is_refused() {
        for body in [
            "{}",
            "null",
            r#"{"schemaVersion":1}"#,
            r#"{"schemaVersion":2,"SchemaVersion":1}"#,
            r#"{"schemaVersion":2,"ſchemaVersion":1}"#,
        ] {
            let e = check(Some(OCI), body.as_bytes()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.code, ErrorCode::ManifestInvalid);
        }
        let index = "application/vnd.oci.image.index.v1+json; charset=utf-8";
        assert!(check(Some(index), b"{}").is_err());
    }

    #[test]
    fn everything_else_is_left_to_the_registry() {
        for (ct, body) in [
            (Some(OCI), r#"{"schemaVersion":2,"layers":[]}"#),
            (Some(OCI), "not json"),
            (Some(OCI), "[]"),
            (
                Some("application/vnd.docker.distribution.manifest.v2+json"),
                "{}",
            ),
            (Some("text/plain"), "{}"),
            (None, "{}"),
        ] {
            assert!(check(ct, body.as_bytes()).is_ok(), "{ct:?} {body}");
        }
    }
}
