//! Grants and scope coverage.

use super::*;
use crate::route::RepoName;
use std::collections::BTreeMap;

fn rules() -> RuleSet {
    let r = |account: &str, repository: &str, actions: &[&str]| crate::rules::RuleText {
        account: account.into(),
        repository: repository.into(),
        actions: actions.iter().map(|s| s.to_string()).collect(),
    };
    RuleSet::compile(
        &[
            r("ci", "apps/*", &["pull", "push"]),
            r("anonymous", "public/*", &["pull"]),
        ],
        &BTreeMap::new(),
    )
    .unwrap()
}

#[test]
fn grant_is_the_intersection_of_asked_and_allowed() {
    let scopes = Scope::parse_all([
        "repository:apps/web:pull,push,delete repository:other/x:pull registry:catalog:*",
    ])
    .unwrap();
    let got = grant(&rules(), Some("ci"), &scopes);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].name, "apps/web");
    assert_eq!(got[0].actions, ["pull", "push"]);
    assert_eq!(
        (got[1].kind.as_str(), got[1].name.as_str()),
        ("registry", "catalog")
    );
    // Anonymous: no catalog, public pull only, and nothing at all is still a grant.
    let anon = grant(
        &rules(),
        None,
        &Scope::parse_all(["repository:public/a:* registry:catalog:*"]).unwrap(),
    );
    assert_eq!(anon.len(), 1);
    assert_eq!(anon[0].actions, ["pull"]);
    assert!(grant(&rules(), None, &[]).is_empty());
}

#[test]
fn coverage_is_per_repository() {
    let access = vec![AccessEntry {
        kind: "repository".into(),
        name: "a".into(),
        actions: vec!["pull".into()],
    }];
    let need = |n: &str, a: &[Action]| {
        Need::Repositories(vec![(RepoName::parse(n).unwrap(), ActionSet::of(a))])
    };
    assert!(covers(&access, &need("a", &[Action::Pull])));
    assert!(!covers(&access, &need("a", &[Action::Pull, Action::Push])));
    assert!(!covers(&access, &need("b", &[Action::Pull])));
    assert!(!covers(&access, &Need::Catalog));
    assert!(covers(&access, &Need::Authenticated));
}
