//! `GET /v2/<name>/tags/list` as the OCI spec wants it: tags in lexical
//! order, `n` and `last` honoured, a `Link` header to the next page. 2.8
//! returns every tag unsorted and ignores both parameters, so regate fetches
//! the whole list and pages it itself.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{full, ProxyBody};
use crate::error::{ErrorCode, RegistryError};
use crate::registry_api::RegistryApi;
use crate::route::RepoName;

/// `n` and `last` from a query string.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Page {
    pub n: Option<usize>,
    pub last: Option<String>,
}

impl Page {
    pub fn from_query(query: Option<&str>) -> Result<Page, RegistryError> {
        let mut page = Page::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*k {
                "n" => {
                    page.n = Some(v.parse().map_err(|_| {
                        RegistryError::new(
                            StatusCode::BAD_REQUEST,
                            ErrorCode::PaginationNumberInvalid,
                            format!("n={v:?} is not a number"),
                        )
                    })?)
                }
                "last" => page.last = Some(v.into_owned()),
                _ => {}
            }
        }
        Ok(page)
    }

    /// Sorts `tags` and returns this page and whether more follow.
    pub fn apply(&self, mut tags: Vec<String>) -> (Vec<String>, bool) {
        tags.sort();
        tags.dedup();
        let start = match &self.last {
            Some(last) => tags.partition_point(|t| t.as_str() <= last.as_str()),
            None => 0,
        };
        let rest = &tags[start..];
        let take = self.n.unwrap_or(rest.len()).min(rest.len());
        (rest[..take].to_vec(), take < rest.len())
    }
}

pub async fn serve(
    api: &RegistryApi,
    name: &RepoName,
    query: Option<&str>,
) -> Result<Response<ProxyBody>, RegistryError> {
    let page = Page::from_query(query)?;
    let tags = match api.tags(name.as_str()).await {
        Ok(Ok(tags)) => tags,
        Ok(Err((status, body))) => {
            // The registry's own error (NAME_UNKNOWN, ...), as it sent it.
            let mut resp = Response::new(full(body));
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            return Ok(resp);
        }
        Err(e) => return Err(e.bad_gateway_for("tags_list", name.as_str())),
    };
    let (tags, more) = page.apply(tags);
    let body = serde_json::to_vec(&serde_json::json!({"name": name.as_str(), "tags": tags}))
        .expect("JSON of strings");
    let mut resp = Response::new(full(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let (true, Some(last), Some(n)) = (more, tags.last(), page.n) {
        let link = format!("</v2/{name}/tags/list?n={n}&last={last}>; rel=\"next\"");
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.insert(header::LINK, v);
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pages_in_lexical_order() {
        let all = tags(&["v2", "latest", "v10", "a", "v1"]);
        let p = Page {
            n: Some(2),
            last: None,
        };
        assert_eq!(p.apply(all.clone()), (tags(&["a", "latest"]), true));
        let p = Page {
            n: Some(2),
            last: Some("latest".into()),
        };
        assert_eq!(p.apply(all.clone()), (tags(&["v1", "v10"]), true));
        let p = Page {
            n: Some(2),
            last: Some("v10".into()),
        };
        assert_eq!(p.apply(all.clone()), (tags(&["v2"]), false));
        let p = Page {
            n: None,
            last: Some("v2".into()),
        };
        assert_eq!(p.apply(all.clone()), (vec![], false));
        let p = Page {
            n: Some(0),
            last: None,
        };
        assert_eq!(p.apply(all), (vec![], true));
    }

    #[test]
    fn query_parsing() {
        assert_eq!(
            Page::from_query(Some("n=3&last=x")).unwrap(),
            Page {
                n: Some(3),
                last: Some("x".into())
            }
        );
        assert_eq!(Page::from_query(None).unwrap(), Page::default());
        assert_eq!(
            Page::from_query(Some("last=v1%2E0&n=%32&")).unwrap(),
            Page {
                n: Some(2),
                last: Some("v1.0".into())
            }
        );
        assert_eq!(
            Page::from_query(Some("n=abc")).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }
}
