//! The actions a request needs, from its method, its parsed [`Route`] and (for
//! a cross-repository mount) its query: GET/HEAD pull; POST/PUT/PATCH pull and
//! push; DELETE delete; a mount also needs pull on `from`. `GET /v2/` needs
//! any valid credentials and `_catalog` an authenticated account; so do
//! OPTIONS and unserved methods on regate's own endpoints (answered 200 with
//! `Allow`, or 405). Calls only the route grammar.

use http::Method;

use super::{Action, ActionSet};
use crate::route::{RepoName, Route, RouteError};

/// What a request must be allowed to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// `/v2/`: the version check; anonymous callers get a challenge.
    Authenticated,
    /// `/v2/_catalog` (`registry:catalog:*`); the listing is then filtered.
    Catalog,
    /// Actions on repositories; the request's own repository comes first.
    Repositories(Vec<(RepoName, ActionSet)>),
}

/// The need of one request.
pub fn required(method: &Method, route: &Route, query: Option<&str>) -> Result<Need, RouteError> {
    // regate's own endpoints answer OPTIONS and methods they do not serve
    // (405 with `Allow`) without touching a repository: no right is needed.
    if let Some(served) = route.own_methods() {
        if *method == Method::OPTIONS || !served.contains(&method.as_str()) {
            return Ok(Need::Authenticated);
        }
    }
    let name = match route {
        Route::Base => return Ok(Need::Authenticated),
        Route::Catalog => return Ok(Need::Catalog),
        Route::Manifest { name, .. }
        | Route::Blob { name, .. }
        | Route::UploadStart { name }
        | Route::Upload { name, .. }
        | Route::TagsList { name }
        | Route::Referrers { name, .. }
        | Route::TagReference { name, .. }
        // regate's own: listing deleted tags reads (pull), restoring writes (push).
        | Route::DeletedTags { name }
        | Route::RestoreTag { name, .. } => name,
        // Removing many tags (POST) is a delete.
        Route::DeleteTags { name } => {
            return Ok(Need::Repositories(vec![(
                name.clone(),
                ActionSet::of(&[Action::Delete]),
            )]))
        }
    };
    let actions = match *method {
        Method::GET | Method::HEAD => ActionSet::of(&[Action::Pull]),
        Method::POST | Method::PUT | Method::PATCH => ActionSet::of(&[Action::Pull, Action::Push]),
        Method::DELETE => ActionSet::of(&[Action::Delete]),
        // Nothing else is part of the API: only a caller who may do
        // everything gets it to the registry (which refuses it).
        _ => ActionSet::all(),
    };
    let mut needs = vec![(name.clone(), actions)];
    if matches!(route, Route::UploadStart { .. }) && *method == Method::POST {
        if let Some(from) = mount_source(query)? {
            needs.push((from, ActionSet::of(&[Action::Pull])));
        }
    }
    Ok(Need::Repositories(needs))
}

/// The `from` repository of `?mount=<digest>&from=<name>`, when both are there.
fn mount_source(query: Option<&str>) -> Result<Option<RepoName>, RouteError> {
    let Some(q) = query else { return Ok(None) };
    let mut mount = false;
    let mut from = None;
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        match &*k {
            "mount" => mount = true,
            "from" => {
                if from.is_some() {
                    // Two `from`s: which one would the registry use? Refuse.
                    return Err(RouteError::NameInvalid(v.into_owned()));
                }
                from = Some(v.into_owned());
            }
            _ => {}
        }
    }
    match (mount, from) {
        (true, Some(f)) => RepoName::parse(&f).map(Some),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(method: Method, path: &str, query: Option<&str>) -> Need {
        required(&method, &Route::parse(path).unwrap(), query).unwrap()
    }

    fn repo(n: &str) -> RepoName {
        RepoName::parse(n).unwrap()
    }

    #[test]
    fn methods_map_to_actions() {
        let pull = ActionSet::of(&[Action::Pull]);
        let push = ActionSet::of(&[Action::Pull, Action::Push]);
        let del = ActionSet::of(&[Action::Delete]);
        for (m, want) in [
            (Method::GET, pull),
            (Method::HEAD, pull),
            (Method::PUT, push),
            (Method::POST, push),
            (Method::PATCH, push),
            (Method::DELETE, del),
            (Method::OPTIONS, ActionSet::all()),
        ] {
            assert_eq!(
                need(m.clone(), "/v2/a/b/manifests/v1", None),
                Need::Repositories(vec![(repo("a/b"), want)]),
                "{m}"
            );
        }
        assert_eq!(need(Method::GET, "/v2/", None), Need::Authenticated);
        assert_eq!(need(Method::GET, "/v2/_catalog", None), Need::Catalog);
    }

    #[test]
    fn own_endpoints_need_no_right_for_options_or_methods_they_do_not_serve() {
        let pull = ActionSet::of(&[Action::Pull]);
        let push = ActionSet::of(&[Action::Pull, Action::Push]);
        let del = ActionSet::of(&[Action::Delete]);
        let rights = |a| Need::Repositories(vec![(repo("a/b"), a)]);
        for (m, path, want) in [
            (
                Method::OPTIONS,
                "/v2/a/b/tags/reference/t",
                Need::Authenticated,
            ),
            (Method::DELETE, "/v2/a/b/tags/reference/t", rights(del)),
            (Method::GET, "/v2/a/b/tags/reference/t", Need::Authenticated),
            (Method::PUT, "/v2/a/b/tags/reference/t", Need::Authenticated),
            (Method::GET, "/v2/a/b/_regate/delete", Need::Authenticated),
            (Method::POST, "/v2/a/b/_regate/delete", rights(del)),
            (Method::GET, "/v2/a/b/_regate/deleted", rights(pull)),
            (Method::HEAD, "/v2/a/b/_regate/deleted", rights(pull)),
            (
                Method::DELETE,
                "/v2/a/b/_regate/deleted",
                Need::Authenticated,
            ),
            (Method::POST, "/v2/a/b/_regate/restore/t", rights(push)),
            (
                Method::DELETE,
                "/v2/a/b/_regate/restore/t",
                Need::Authenticated,
            ),
            (Method::GET, "/v2/a/b/tags/list", rights(pull)),
            (Method::PUT, "/v2/a/b/tags/list", Need::Authenticated),
            (Method::OPTIONS, "/v2/a/b/tags/list", Need::Authenticated),
            (
                Method::GET,
                &format!("/v2/a/b/referrers/sha256:{}", "0".repeat(64)),
                rights(pull),
            ),
            (
                Method::DELETE,
                &format!("/v2/a/b/referrers/sha256:{}", "0".repeat(64)),
                Need::Authenticated,
            ),
            // The registry's endpoints: an unknown method needs every right.
            (
                Method::OPTIONS,
                "/v2/a/b/manifests/t",
                rights(ActionSet::all()),
            ),
        ] {
            assert_eq!(need(m.clone(), path, None), want, "{m} {path}");
        }
    }

    #[test]
    fn removing_many_tags_needs_delete_only() {
        assert_eq!(
            need(Method::POST, "/v2/a/b/_regate/delete", None),
            Need::Repositories(vec![(repo("a/b"), ActionSet::of(&[Action::Delete]))])
        );
    }

    #[test]
    fn mount_needs_pull_on_from() {
        let n = need(
            Method::POST,
            "/v2/apps/x/blobs/uploads/",
            Some("mount=sha256%3Aabc&from=secret%2Fy"),
        );
        assert_eq!(
            n,
            Need::Repositories(vec![
                (repo("apps/x"), ActionSet::of(&[Action::Pull, Action::Push])),
                (repo("secret/y"), ActionSet::of(&[Action::Pull])),
            ])
        );
        // `from` without `mount` is ignored by the registry, and here.
        let n = need(Method::POST, "/v2/apps/x/blobs/uploads/", Some("from=a"));
        assert!(matches!(n, Need::Repositories(v) if v.len() == 1));
        let bad = required(
            &Method::POST,
            &Route::parse("/v2/apps/x/blobs/uploads/").unwrap(),
            Some("mount=x&from=..%2Fetc"),
        );
        assert!(bad.is_err());
        let twice = required(
            &Method::POST,
            &Route::parse("/v2/apps/x/blobs/uploads/").unwrap(),
            Some("mount=x&from=a&from=b"),
        );
        assert!(twice.is_err());
    }
}
