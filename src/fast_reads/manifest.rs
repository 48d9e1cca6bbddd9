//! Manifest `GET`/`HEAD` answered from the storage, as 2.8's manifest
//! handler answers them: `Content-Type` the stored `mediaType`,
//! `Content-Length`, `Docker-Content-Digest`, `Etag: "<digest>"`.
//!
//! Only where 2.8 sends the stored bytes unchanged: a schema 2 manifest
//! whose `mediaType` is one of the four types, and a client whose `Accept`
//! names that type exactly (2.8.2 compares case-sensitively, parameters
//! dropped; it answers 404 to an OCI type it does not accept, and
//! by tag rewrites a Docker manifest or list to schema 1). Fetched by digest,
//! Docker types are sent whatever the `Accept`. Everything else is
//! [`None`]: forwarded.

use http::{header, HeaderMap, HeaderValue};

use crate::route::Digest;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The media type 2.8 would answer for these stored bytes, if it sends them
/// as they are: schema version 2 with one of the four `mediaType`s.
pub fn stored_type(bytes: &[u8]) -> Option<&'static str> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Versioned {
        schema_version: Option<i64>,
        media_type: Option<String>,
    }
    let v: Versioned = serde_json::from_slice(bytes).ok()?;
    if v.schema_version != Some(2) {
        return None;
    }
    [DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX]
        .into_iter()
        .find(|t| v.media_type.as_deref() == Some(*t))
}

/// The media types named in the request's `Accept` headers, as 2.8.2 reads
/// them (measured): comma separated, parameters dropped, spaces trimmed,
/// compared case-sensitively; `None` when a value is not text (left to it).
fn accepted(headers: &HeaderMap) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    for value in headers.get_all(header::ACCEPT) {
        for item in value.to_str().ok()?.split(',') {
            out.push(item.split(';').next().unwrap_or_default().trim());
        }
    }
    Some(out)
}

/// Whether 2.8 sends a manifest of type `stored` unchanged to this request.
pub fn sent_as_stored(headers: &HeaderMap, stored: &str, by_tag: bool) -> bool {
    let Some(accepted) = accepted(headers) else {
        return false;
    };
    let covered = accepted.contains(&stored);
    match stored {
        OCI_MANIFEST | OCI_INDEX => covered,
        _ => covered || !by_tag,
    }
}

/// The headers of 2.8's answer.
pub fn headers(
    stored: &'static str,
    len: usize,
    digest: &Digest,
) -> Vec<(header::HeaderName, HeaderValue)> {
    let digest_value = HeaderValue::from_str(digest.as_str()).expect("a digest is header-safe");
    let etag = HeaderValue::from_str(&format!("\"{}\"", digest.as_str()))
        .expect("a digest is header-safe");
    vec![
        (header::CONTENT_TYPE, HeaderValue::from_static(stored)),
        (header::CONTENT_LENGTH, HeaderValue::from(len)),
        (super::DOCKER_CONTENT_DIGEST, digest_value),
        (header::ETAG, etag),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT, v.parse().unwrap());
        }
        h
    }

    #[rstest]
    #[case::oci_accepted(OCI_MANIFEST, &[OCI_MANIFEST], true, true)]
    #[case::oci_not_accepted_is_a_404_of_the_registry(OCI_MANIFEST, &[DOCKER_MANIFEST], false, false)]
    #[case::oci_among_others_with_q(OCI_INDEX, &["application/json, application/vnd.oci.image.index.v1+json;q=0.5"], true, true)]
    #[case::not_case_folded(OCI_INDEX, &["Application/VND.oci.image.index.v1+json"], true, false)]
    #[case::docker_by_tag_without_accept_is_rewritten(DOCKER_MANIFEST, &[], true, false)]
    #[case::docker_by_digest_is_sent_as_is(DOCKER_MANIFEST, &[], false, true)]
    #[case::list_by_tag_accepted(DOCKER_LIST, &[DOCKER_LIST], true, true)]
    #[case::list_by_tag_not_accepted(DOCKER_LIST, &[DOCKER_MANIFEST], true, false)]
    #[case::odd_parameters_are_dropped(OCI_MANIFEST, &["application/vnd.oci.image.manifest.v1+json; q"], true, true)]
    #[case::two_headers(OCI_MANIFEST, &[DOCKER_MANIFEST, OCI_MANIFEST], true, true)]
    fn when_the_stored_bytes_are_sent(
        #[case] stored: &str,
        #[case] accept_values: &[&str],
        #[case] by_tag: bool,
        #[case] sent: bool,
    ) {
        assert_eq!(sent_as_stored(&accept(accept_values), stored, by_tag), sent);
    }

    #[test]
    fn the_stored_type_is_the_media_type_of_schema_2_only() {
        let doc = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
        assert_eq!(
            stored_type(&doc(
                serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
            )),
            Some(OCI_INDEX)
        );
        // No mediaType: 2.8 guesses from the fields; left to it.
        assert_eq!(
            stored_type(&doc(serde_json::json!({"schemaVersion": 2, "layers": []}))),
            None
        );
        assert_eq!(
            stored_type(&doc(
                serde_json::json!({"schemaVersion": 1, "mediaType": DOCKER_MANIFEST})
            )),
            None
        );
        assert_eq!(stored_type(b"not json"), None);
    }
}
