//! The catalog and tag lists, page by page: `n` and `last`, following the
//! `Link: <...>; rel="next"` header (relative, as 2.8 sends it, or absolute).
//! A registry that ignores `n` and sends everything at once (2.8's tag list)
//! is read in one page.

use reqwest::StatusCode;

use super::fetch::Fetcher;
use super::FsckError;
use crate::client::error_text;

const CATALOG_PAGE: usize = 100;
const TAGS_PAGE: usize = 1000;
/// A guard against a registry that links a page to itself forever.
const MAX_PAGES: usize = 100_000;

/// Every repository of the catalog.
pub(crate) async fn catalog(f: &Fetcher<'_>) -> Result<Vec<String>, FsckError> {
    let n = f.page_size.unwrap_or(CATALOG_PAGE);
    let first = format!("/v2/_catalog?n={n}");
    let names = pages(f, first, "registry:catalog:*", "repositories")
        .await?
        .map_err(|detail| FsckError::Catalog {
            url: format!("{}/v2/_catalog", f.base()),
            detail,
        })?;
    Ok(names)
}

/// Every tag of `repo`; a repository the registry does not know (404, as
/// 2.8 answers for one whose tags are all gone) has none.
pub(crate) async fn tags(
    f: &Fetcher<'_>,
    repo: &str,
) -> Result<Result<Vec<String>, String>, FsckError> {
    let n = f.page_size.unwrap_or(TAGS_PAGE);
    let first = format!("/v2/{repo}/tags/list?n={n}");
    pages(f, first, &format!("repository:{repo}:pull"), "tags").await
}

/// Follows `Link` from `first`, collecting the string array `key` of each
/// page. `Ok(Err(text))` is a registry answer that is not a listing.
async fn pages(
    f: &Fetcher<'_>,
    first: String,
    scope: &str,
    key: &str,
) -> Result<Result<Vec<String>, String>, FsckError> {
    let mut out = Vec::new();
    let mut next = Some(first);
    let mut seen = std::collections::HashSet::new();
    while let Some(path) = next.take() {
        if !seen.insert(path.clone()) || seen.len() > MAX_PAGES {
            break;
        }
        let resp = f.listing(&path, scope).await?;
        if resp.status() == StatusCode::NOT_FOUND && key == "tags" {
            return Ok(Ok(out));
        }
        if !resp.status().is_success() {
            return Ok(Err(format!("GET {path}: {}", error_text(resp).await)));
        }
        next = resp
            .headers()
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(next_link);
        let v: serde_json::Value = match resp.json().await {
            Ok(v) => v,
            Err(e) => return Ok(Err(format!("GET {path}: not a JSON listing ({e})"))),
        };
        out.extend(
            v[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_owned)),
        );
    }
    Ok(Ok(out))
}

/// The path and query of a `Link` header's `rel="next"` target.
pub(crate) fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        let url = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        if !is_next {
            return None;
        }
        let path = match url.split_once("://") {
            Some((_, rest)) => &rest[rest.find('/')?..],
            None => url,
        };
        path.starts_with("/v2/").then(|| path.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::next_link;

    #[test]
    fn link_headers() {
        assert_eq!(
            next_link(r#"</v2/_catalog?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/_catalog?last=b&n=2")
        );
        assert_eq!(
            next_link(r#"<https://r.example:5443/v2/a/tags/list?n=1&last=v1>; rel="next""#)
                .as_deref(),
            Some("/v2/a/tags/list?n=1&last=v1")
        );
        assert_eq!(
            next_link(r#"</v2/x?n=1>; rel="prev", </v2/y?n=1>; rel=next"#).as_deref(),
            Some("/v2/y?n=1")
        );
        assert_eq!(next_link(r#"</v2/x>; rel="prev""#), None);
        assert_eq!(next_link(r#"<https://elsewhere/other>; rel="next""#), None);
    }
}
