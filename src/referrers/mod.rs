//! The OCI 1.1 referrers API on top of a registry that has none (2.8).
//!
//! Owns the referrers index kept in [`State`]: updated on every manifest PUT
//! and DELETE by digest that passes through, served at
//! `GET /v2/<name>/referrers/<digest>[?artifactType=...]`, and rebuilt by
//! [`reindex`]. Before answering, every listed referrer is checked against
//! the registry, so the index never claims one the registry no longer has
//! (for example after garbage collection removed it).

pub mod reindex;

use http::{header, HeaderName, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

use crate::body::{full, ProxyBody};
use crate::error::RegistryError;
use crate::registry_api::RegistryApi;
use crate::state::{blocking, Referrer, State};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
const FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

/// The index entry for a manifest, if it has a `subject`.
pub fn describe(
    repository: &str,
    digest: &str,
    content_type: Option<&str>,
    bytes: &[u8],
) -> Option<Referrer> {
    let m: Value = serde_json::from_slice(bytes).ok()?;
    let subject = m.get("subject")?.get("digest")?.as_str()?.to_owned();
    let media_type = m
        .get("mediaType")
        .and_then(Value::as_str)
        .or(content_type)
        .unwrap_or("application/vnd.oci.image.manifest.v1+json")
        .to_owned();
    let artifact_type = m
        .get("artifactType")
        .and_then(Value::as_str)
        .or_else(|| {
            m.get("config")
                .and_then(|c| c.get("mediaType"))
                .and_then(Value::as_str)
        })
        .map(str::to_owned);
    let annotations = m
        .get("annotations")
        .filter(|a| a.is_object())
        .map(|a| a.to_string());
    Some(Referrer {
        repository: repository.to_owned(),
        digest: digest.to_owned(),
        subject,
        media_type,
        size: bytes.len() as u64,
        artifact_type,
        annotations,
    })
}

/// The first value of `key` in the query, decoded by the one query parser
/// (`form_urlencoded`), except that a literal `+` stays a `+`: media types
/// contain it and clients do not always encode it.
fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    let query = query?.replace('+', "%2B");
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

#[derive(Clone)]
pub struct ReferrersIndex {
    state: State,
    api: RegistryApi,
}

impl ReferrersIndex {
    pub fn new(state: State, api: RegistryApi) -> Self {
        ReferrersIndex { state, api }
    }

    /// A manifest with a subject was stored by the registry.
    pub async fn record_put(&self, r: Referrer) {
        let state = self.state.clone();
        if let Err(e) = blocking(move || state.put_referrer(&r)).await {
            tracing::error!(error = %e, "cannot update the referrers index; run `regate reindex`");
        }
    }

    /// A manifest was deleted by digest.
    pub async fn record_delete(&self, repository: &str, digest: &str) {
        let (state, repo, digest) = (self.state.clone(), repository.to_owned(), digest.to_owned());
        if let Err(e) = blocking(move || state.remove_referrer(&repo, &digest)).await {
            tracing::error!(error = %e, "cannot update the referrers index; run `regate reindex`");
        }
    }

    /// `GET /v2/<name>/referrers/<digest>`.
    pub async fn serve(
        &self,
        repository: &str,
        subject: &str,
        query: Option<&str>,
    ) -> Result<Response<ProxyBody>, RegistryError> {
        let (state, repo, subj) = (
            self.state.clone(),
            repository.to_owned(),
            subject.to_owned(),
        );
        let listed = blocking(move || state.referrers_of(&repo, &subj))
            .await
            .map_err(|e| {
                if e.is_unavailable() {
                    return RegistryError::unavailable(e.to_string());
                }
                RegistryError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    crate::error::ErrorCode::Unknown,
                    e.to_string(),
                )
            })?;
        let checks = futures_util::future::join_all(
            listed
                .iter()
                .map(|r| self.api.resolve(repository, &r.digest)),
        )
        .await;
        let mut present = Vec::new();
        for (r, check) in listed.into_iter().zip(checks) {
            match check {
                Ok(Some(_)) => present.push(r),
                Ok(None) => self.record_delete(repository, &r.digest).await,
                Err(e) => return Err(e.bad_gateway_for("referrers", repository)),
            }
        }
        let filter = query_value(query, "artifactType");
        if let Some(f) = &filter {
            present.retain(|r| r.artifact_type.as_deref() == Some(f.as_str()));
        }
        let manifests: Vec<Value> = present
            .iter()
            .map(|r| {
                let mut d = json!({"mediaType": r.media_type, "digest": r.digest, "size": r.size});
                if let Some(t) = &r.artifact_type {
                    d["artifactType"] = json!(t);
                }
                if let Some(a) = r
                    .annotations
                    .as_deref()
                    .and_then(|a| serde_json::from_str::<Value>(a).ok())
                {
                    d["annotations"] = a;
                }
                d
            })
            .collect();
        let body = serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
        )
        .expect("JSON");
        let mut resp = Response::new(full(body));
        *resp.status_mut() = StatusCode::OK;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(OCI_INDEX));
        if filter.is_some() {
            h.insert(FILTERS_APPLIED, HeaderValue::from_static("artifactType"));
        }
        Ok(resp)
    }

    pub fn state(&self) -> &State {
        &self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_artifacts_with_a_subject_only() {
        let with = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.example.sig"},"subject":{"digest":"sha256:aa"},"annotations":{"k":"v"}}"#;
        let r = describe("repo", "sha256:bb", None, with).unwrap();
        assert_eq!(r.subject, "sha256:aa");
        assert_eq!(
            r.artifact_type.as_deref(),
            Some("application/vnd.example.sig")
        );
        assert_eq!(r.annotations.as_deref(), Some(r#"{"k":"v"}"#));
        assert_eq!(r.size, with.len() as u64);
        let explicit = br#"{"artifactType":"application/x-sbom","config":{"mediaType":"application/vnd.oci.empty.v1+json"},"subject":{"digest":"sha256:aa"}}"#;
        assert_eq!(
            describe("r", "d", None, explicit)
                .unwrap()
                .artifact_type
                .as_deref(),
            Some("application/x-sbom")
        );
        assert!(describe("r", "d", None, br#"{"schemaVersion":2}"#).is_none());
        assert!(describe("r", "d", None, b"not json").is_none());
    }

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            query_value(
                Some("artifactType=application%2Fvnd.x%2Bjson&n=1"),
                "artifactType"
            )
            .as_deref(),
            Some("application/vnd.x+json")
        );
        assert_eq!(query_value(Some("n=1"), "artifactType"), None);
        assert_eq!(
            query_value(
                Some("n=1&artifactType=application/vnd.x+json"),
                "artifactType"
            )
            .as_deref(),
            Some("application/vnd.x+json")
        );
        assert_eq!(
            query_value(Some("artifactType=a%2"), "artifactType").as_deref(),
            Some("a%2")
        );
    }
}
