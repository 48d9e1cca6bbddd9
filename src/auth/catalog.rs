//! `/v2/_catalog` filtered to the repositories the caller may pull, with
//! pagination that stays correct: regate pages through the upstream catalog
//! itself, keeps what the rules allow, and answers `n` entries with a `Link`
//! to the next page (`last` = the last name returned) only when at least one
//! more allowed name exists. Without `n` a page holds 100 names, as on the
//! registry. Calls the upstream through [`Upstream::forward`], page by page
//! as its `Link` headers lead ([`crate::pages`]).

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use crate::body::ProxyBody;
use crate::error::{ErrorCode, RegistryError};
use crate::pages::Pages;
use crate::proxy::{ClientSide, Upstream};

/// Page size when the client gives no `n`, and the largest accepted.
const DEFAULT_N: usize = 100;
const MAX_N: usize = 1000;
/// Names asked of the upstream per request.
const UPSTREAM_PAGE: usize = 1000;

fn query_params(query: Option<&str>) -> Result<(usize, Option<String>), RegistryError> {
    let mut n = DEFAULT_N;
    let mut last = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*k {
            "n" => {
                n = v.parse::<usize>().map_err(|_| {
                    RegistryError::new(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::Unsupported,
                        "n must be a number",
                    )
                })?;
            }
            "last" => last = Some(v.into_owned()),
            _ => {}
        }
    }
    Ok((n.min(MAX_N), last))
}

/// Answers a catalog request; `may_pull` decides each name.
pub async fn filtered(
    upstream: &Upstream,
    query: Option<&str>,
    prepare: impl Fn(&mut http::HeaderMap),
    side: ClientSide<'_>,
    may_pull: impl Fn(&str) -> bool,
) -> Result<Response<ProxyBody>, RegistryError> {
    let (n, cursor) = query_params(query)?;
    let mut first = format!("/v2/_catalog?n={UPSTREAM_PAGE}");
    if let Some(c) = &cursor {
        first.push_str("&last=");
        first.extend(form_urlencoded::byte_serialize(c.as_bytes()));
    }
    let mut pages = Pages::starting_at(first);
    let mut names: Vec<String> = Vec::new();
    // One more than asked tells whether a next page exists.
    while names.len() <= n {
        let Some(pq) = pages.next_path() else {
            break;
        };
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(pq)
            .header(header::ACCEPT, "application/json")
            .body(crate::body::empty())
            .map_err(|e| RegistryError::bad_gateway(e.to_string()))?;
        prepare(req.headers_mut());
        let side = ClientSide {
            peer: side.peer,
            public: side.public,
            route: side.route,
            metrics: side.metrics,
        };
        let resp = upstream.forward(req, side).await?;
        let status = resp.status();
        pages.follow(resp.headers());
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| RegistryError::bad_gateway(format!("reading the upstream catalog: {e}")))?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(RegistryError::bad_gateway(format!(
                "the upstream catalog answered {status}"
            )));
        }
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            repositories: Vec<String>,
        }
        let page: Page = serde_json::from_slice(&body).map_err(|e| {
            RegistryError::bad_gateway(format!("the upstream catalog is not JSON: {e}"))
        })?;
        let got = page.repositories.len();
        for name in page.repositories {
            if may_pull(&name) {
                names.push(name);
                if names.len() > n {
                    break;
                }
            }
        }
        if got == 0 {
            break;
        }
    }
    let next = names.len() > n;
    names.truncate(n);
    let body = Bytes::from(
        serde_json::to_vec(&serde_json::json!({ "repositories": names })).unwrap_or_default(),
    );
    let mut resp = Response::new(crate::body::full(body.clone()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if let (true, Some(last)) = (next, names.last()) {
        let last: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
        if let Ok(v) =
            HeaderValue::from_str(&format!("</v2/_catalog?last={last}&n={n}>; rel=\"next\""))
        {
            h.insert(header::LINK, v);
        }
    }
    Ok(resp)
}

/// The catalog for `caller`: only what the rules let them pull.
pub async fn serve(
    auth: &super::Auth,
    upstream: &Upstream,
    query: Option<&str>,
    caller: &super::Caller,
    side: ClientSide<'_>,
) -> Result<Response<ProxyBody>, RegistryError> {
    let account = caller.account.as_deref();
    filtered(
        upstream,
        query,
        |h| auth.prepare_upstream(h),
        side,
        |name| {
            auth.rules().permits(
                account,
                name,
                crate::rules::ActionSet::of(&[crate::rules::Action::Pull]),
            )
        },
    )
    .await
}
