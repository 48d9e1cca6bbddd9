//! The actions a request needs, from its method and its parsed [`Route`]:
//! GET/HEAD pull; POST/PUT/PATCH pull and push; DELETE delete. `GET /v2/`
//! needs any valid credentials and `_catalog` an authenticated account; so do
//! OPTIONS and unserved methods on regate's own endpoints (answered 200 with
//! `Allow`, or 405). A cross-repository mount ([`mount_source`]) is not a
//! need: it is done when the caller may also pull `from`, and dropped
//! otherwise (the upload goes on as a plain one). Calls only the route grammar.

use http::Method;

use super::{Action, ActionSet};
use crate::route::{RepoName, Route};

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
pub fn required(method: &Method, route: &Route) -> Need {
    // regate's own endpoints answer OPTIONS and methods they do not serve
    // (405 with `Allow`) without touching a repository: no right is needed.
    if let Some(served) = route.own_methods() {
        if *method == Method::OPTIONS || !served.contains(&method.as_str()) {
            return Need::Authenticated;
        }
    }
    let name = match route {
        Route::Base => return Need::Authenticated,
        Route::Catalog => return Need::Catalog,
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
            return Need::Repositories(vec![(name.clone(), ActionSet::of(&[Action::Delete]))])
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
    Need::Repositories(vec![(name.clone(), actions)])
}

impl Need {
    /// The need with pull on a mount's source added: what a client should
    /// ask a token for (a mount it may not do is dropped, not refused).
    pub fn with_mount(&self, mount: &Mount) -> Need {
        match (self, mount) {
            (Need::Repositories(list), Mount::From(from)) => {
                let mut list = list.clone();
                list.push((from.clone(), ActionSet::of(&[Action::Pull])));
                Need::Repositories(list)
            }
            _ => self.clone(),
        }
    }
}

/// What a request says about a cross-repository mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// Not a mount: no `mount` with a `from` in the query of an upload POST.
    None,
    /// `?mount=<digest>&from=<name>`: done if the caller may pull `from`.
    From(RepoName),
    /// A mount regate will not pass on (two `from`s, a `from` that is no
    /// repository name): the upload goes on without it.
    Unusable,
}

/// The mount a request asks for, from its query.
pub fn mount_source(method: &Method, route: &Route, query: Option<&str>) -> Mount {
    let (Route::UploadStart { .. }, &Method::POST, Some(q)) = (route, method, query) else {
        return Mount::None;
    };
    let mut mount = false;
    let mut from = Vec::new();
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        match &*k {
            "mount" => mount = true,
            "from" => from.push(v.into_owned()),
            _ => {}
        }
    }
    match (mount, from.as_slice()) {
        (false, _) | (true, []) => Mount::None,
        (true, [one]) => RepoName::parse(one).map_or(Mount::Unusable, Mount::From),
        // Two `from`s: which one would the registry use?
        (true, _) => Mount::Unusable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(method: Method, path: &str) -> Need {
        required(&method, &Route::parse(path).unwrap())
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
                need(m.clone(), "/v2/a/b/manifests/v1"),
                Need::Repositories(vec![(repo("a/b"), want)]),
                "{m}"
            );
        }
        assert_eq!(need(Method::GET, "/v2/"), Need::Authenticated);
        assert_eq!(need(Method::GET, "/v2/_catalog"), Need::Catalog);
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
            (Method::HEAD, "/v2/a/b/_regate/deleted", Need::Authenticated),
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
            assert_eq!(need(m.clone(), path), want, "{m} {path}");
        }
    }

    #[test]
    fn removing_many_tags_needs_delete_only() {
        assert_eq!(
            need(Method::POST, "/v2/a/b/_regate/delete"),
            Need::Repositories(vec![(repo("a/b"), ActionSet::of(&[Action::Delete]))])
        );
    }

    #[test]
    fn a_mount_names_its_source_or_is_unusable() {
        let upload = Route::parse("/v2/apps/x/blobs/uploads/").unwrap();
        let m = |q| mount_source(&Method::POST, &upload, Some(q));
        assert_eq!(
            m("mount=sha256%3Aabc&from=secret%2Fy"),
            Mount::From(repo("secret/y"))
        );
        // `from` without `mount` is ignored by the registry, and here.
        assert_eq!(m("from=a"), Mount::None);
        assert_eq!(m("mount=x&from=..%2Fetc"), Mount::Unusable);
        assert_eq!(m("mount=x&from=a&from=b"), Mount::Unusable);
        // Only the POST that starts an upload mounts.
        assert_eq!(
            mount_source(&Method::PUT, &upload, Some("mount=x&from=a")),
            Mount::None
        );
        let manifest = Route::parse("/v2/apps/x/manifests/v1").unwrap();
        assert_eq!(
            mount_source(&Method::POST, &manifest, Some("mount=x&from=a")),
            Mount::None
        );
        // The mount is no part of the need.
        assert_eq!(
            need(Method::POST, "/v2/apps/x/blobs/uploads/"),
            Need::Repositories(vec![(
                repo("apps/x"),
                ActionSet::of(&[Action::Pull, Action::Push])
            )])
        );
    }
}
