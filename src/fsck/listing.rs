//! The catalog and tag lists, page by page: `n` and `last`, following the
//! `Link: <...>; rel="next"` header ([`crate::pages`]). A registry that
//! ignores `n` and sends everything at once (2.8's tag list) is read in one
//! page.

use reqwest::StatusCode;

use super::fetch::Fetcher;
use super::FsckError;
use crate::client::error_text;
use crate::pages::Pages;

const CATALOG_PAGE: usize = 100;
const TAGS_PAGE: usize = 1000;

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
    let mut pages = Pages::starting_at(first);
    while let Some(path) = pages.next_path() {
        let resp = f.listing(&path, scope).await?;
        if resp.status() == StatusCode::NOT_FOUND && key == "tags" {
            return Ok(Ok(out));
        }
        if !resp.status().is_success() {
            return Ok(Err(format!("GET {path}: {}", error_text(resp).await)));
        }
        pages.follow(resp.headers());
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
