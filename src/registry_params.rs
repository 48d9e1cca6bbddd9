//! The parameters the registry reads outside the path, and how regate keeps
//! them to what it checked.
//!
//! Registry 2.8 reads `mount`, `from`, `digest` and `_state` with Go's
//! `FormValue`, which also parses an `application/x-www-form-urlencoded` or
//! `multipart/form-data` request body of a POST, PUT or PATCH, and a body
//! value wins over the query's. regate's rules read the query only, so:
//! - [`check_body_type`] refuses a `/v2/` write whose `Content-Type` the
//!   registry could read as a form (or that is not plain ASCII, or sent
//!   twice), and [`neutral_upload_type`] sends upload requests on with
//!   `application/octet-stream`, so whatever Go's parser makes of a type,
//!   no body parameter reaches the registry;
//! - [`without_mount`] takes `mount` and `from` out of a query whose mount
//!   the caller may not use, so the registry opens a plain upload session
//!   (202), as the OCI spec allows when a mount cannot be done. A refusal
//!   there would abort containerd's push, and 201 against 401 would tell the
//!   caller which repositories hold a digest.
//!
//! Pure functions over heads and query strings; calls only the error type.

use http::{header, HeaderMap, HeaderValue, Method, StatusCode};

use crate::error::{ErrorCode, RegistryError};

/// The form types Go's `net/http` parses a body of, lower-case.
const FORM_TYPES: [&str; 2] = ["application/x-www-form-urlencoded", "multipart/"];

/// Refuses a write whose body the registry could read as parameters.
pub fn check_body_type(method: &Method, headers: &HeaderMap) -> Result<(), RegistryError> {
    if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        return Ok(());
    }
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    let Some(first) = types.next() else {
        return Ok(());
    };
    if types.next().is_some() {
        return Err(refused("more than one Content-Type header"));
    }
    // Go lower-cases with Unicode rules (U+0130 becomes `i`): a type with
    // anything but printable ASCII is refused rather than guessed at.
    let Ok(text) = first.to_str() else {
        return Err(refused("a Content-Type that is not plain ASCII"));
    };
    let media = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if FORM_TYPES.iter().any(|f| media.starts_with(f)) {
        return Err(refused(&format!("a form body (Content-Type {media})")));
    }
    Ok(())
}

fn refused(what: &str) -> RegistryError {
    RegistryError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::Unsupported,
        format!(
            "{what}: the registry API takes its parameters in the query, \
             send the body as application/octet-stream"
        ),
    )
}

/// Upload requests go on typed as plain bytes: the registry never reads the
/// type of a blob, and a type it would parse as a form never reaches it.
pub fn neutral_upload_type(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
    }
}

/// `query` without its `mount` and `from` parameters (keys compared after
/// percent-decoding, as Go does); every other parameter byte for byte.
/// `None` when nothing is left.
pub fn without_mount(query: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or("");
            let decoded: String = form_urlencoded::parse(key.as_bytes())
                .map(|(k, _)| k.into_owned())
                .collect();
            // Go skips a pair with a `;`; older Go split on it: drop both ways.
            !(decoded == "mount" || decoded == "from" || pair.contains(';'))
        })
        .filter(|pair| !pair.is_empty())
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(types: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for t in types {
            h.append(header::CONTENT_TYPE, HeaderValue::from_bytes(t).unwrap());
        }
        h
    }

    #[test]
    fn form_bodies_are_refused_on_writes_only() {
        for t in [
            &b"application/x-www-form-urlencoded"[..],
            b"Application/X-WWW-Form-Urlencoded; charset=utf-8",
            b"  multipart/form-data; boundary=x",
            b"MULTIPART/mixed",
            b"appl\xc4\xb0cation/x-www-form-urlencoded",
        ] {
            for m in [Method::POST, Method::PUT, Method::PATCH] {
                let e = check_body_type(&m, &headers(&[t])).unwrap_err();
                assert_eq!(e.status, StatusCode::BAD_REQUEST, "{m} {t:?}");
            }
            assert!(check_body_type(&Method::GET, &headers(&[t])).is_ok());
        }
        assert!(check_body_type(
            &Method::POST,
            &headers(&[b"application/octet-stream", b"text/plain"])
        )
        .is_err());
    }

    #[test]
    fn blob_and_manifest_types_pass() {
        for t in [
            &b"application/octet-stream"[..],
            b"application/vnd.oci.image.manifest.v1+json",
            b"application/vnd.docker.distribution.manifest.v2+json",
        ] {
            assert!(check_body_type(&Method::PUT, &headers(&[t])).is_ok());
        }
        assert!(check_body_type(&Method::PATCH, &HeaderMap::new()).is_ok());
    }

    #[test]
    fn upload_types_become_octet_stream() {
        let mut h = headers(&[b"multipart/form-data"]);
        neutral_upload_type(&mut h);
        assert_eq!(h[header::CONTENT_TYPE], "application/octet-stream");
        let mut none = HeaderMap::new();
        neutral_upload_type(&mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn mount_and_from_leave_the_query() {
        assert_eq!(without_mount("mount=sha256%3Aab&from=a%2Fb"), None);
        assert_eq!(
            without_mount("digest=sha256%3Aab&mount=x&from=y").as_deref(),
            Some("digest=sha256%3Aab")
        );
        // Encoded keys are keys all the same; a `;` pair goes too.
        assert_eq!(
            without_mount("%6Dount=x&fr%6Fm=y&a=1;from=z&b=2").as_deref(),
            Some("b=2")
        );
        assert_eq!(without_mount("from=a&from=b&mount=c"), None);
    }
}
