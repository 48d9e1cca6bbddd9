//! Rule decisions as a table, on the example ACL of issue 3 plus a group.

use std::collections::BTreeMap;

use rstest::rstest;

use super::*;

fn example() -> RuleSet {
    let rule = |account: &str, repository: &str, actions: &[&str]| RuleText {
        account: account.into(),
        repository: repository.into(),
        actions: actions.iter().map(|s| s.to_string()).collect(),
    };
    let mut groups = BTreeMap::new();
    groups.insert("auditors".to_string(), vec!["carol".to_string()]);
    RuleSet::compile(
        &[
            rule("admin", "*", &["pull", "push", "delete", "admin"]),
            rule("ci", "apps/*", &["pull", "push"]),
            rule("@auditors", "*", &["pull"]),
            rule("*", "${account}/*", &["pull", "push", "delete"]),
            rule("anonymous", "public/*", &["pull"]),
        ],
        &groups,
    )
    .unwrap()
}

const PULL: &[Action] = &[Action::Pull];
const PUSH: &[Action] = &[Action::Pull, Action::Push];
const DELETE: &[Action] = &[Action::Delete];
const ADMIN: &[Action] = &[Action::Admin];

#[rstest]
#[case::admin_may_do_anything(Some("admin"), "any/repo", ADMIN, true)]
#[case::admin_may_delete(Some("admin"), "public/x", DELETE, true)]
#[case::ci_pushes_to_apps(Some("ci"), "apps/web", PUSH, true)]
#[case::ci_pushes_deep_into_apps(Some("ci"), "apps/team/web", PUSH, true)]
#[case::ci_cannot_delete_in_apps(Some("ci"), "apps/web", DELETE, false)]
#[case::ci_cannot_push_outside_apps(Some("ci"), "other/web", PUSH, false)]
#[case::ci_cannot_push_to_apps_lookalike(Some("ci"), "appsx/web", PUSH, false)]
#[case::ci_has_its_own_namespace(Some("ci"), "ci/tool", PUSH, true)]
#[case::user_pushes_to_own_namespace(Some("alice"), "alice/app", PUSH, true)]
#[case::user_deletes_in_own_namespace(Some("alice"), "alice/app", DELETE, true)]
#[case::user_cannot_push_to_another_namespace(Some("alice"), "bob/app", PUSH, false)]
#[case::user_cannot_pull_another_namespace(Some("alice"), "bob/app", PULL, false)]
#[case::prefix_of_name_is_not_own_namespace(Some("ali"), "alice/app", PULL, false)]
#[case::user_is_not_admin_of_own_namespace(Some("alice"), "alice/app", ADMIN, false)]
#[case::authenticated_user_does_not_inherit_anonymous(Some("alice"), "public/x", PULL, false)]
#[case::group_member_pulls_everything(Some("carol"), "bob/app", PULL, true)]
#[case::group_member_cannot_push(Some("carol"), "bob/app", PUSH, false)]
#[case::group_rule_wins_over_own_namespace(Some("carol"), "carol/app", PUSH, false)]
#[case::anonymous_pulls_public(None, "public/tool", PULL, true)]
#[case::anonymous_cannot_push_public(None, "public/tool", PUSH, false)]
#[case::anonymous_pulls_nothing_else(None, "apps/web", PULL, false)]
#[case::anonymous_has_no_namespace(None, "anonymous/x", PULL, false)]
#[case::nothing_matches_means_deny(Some("mallory"), "public/tool", PULL, false)]
fn decision(
    #[case] account: Option<&str>,
    #[case] repository: &str,
    #[case] needed: &[Action],
    #[case] allowed: bool,
) {
    assert_eq!(
        example().permits(account, repository, ActionSet::of(needed)),
        allowed,
        "{account:?} {repository} {needed:?}"
    );
}

#[test]
fn first_match_wins_even_when_a_later_rule_gives_more() {
    let rules = RuleSet::compile(
        &[
            RuleText {
                account: "*".into(),
                repository: "shared/*".into(),
                actions: vec!["pull".into()],
            },
            RuleText {
                account: "dev".into(),
                repository: "shared/*".into(),
                actions: vec!["*".into()],
            },
        ],
        &BTreeMap::new(),
    )
    .unwrap();
    assert_eq!(
        rules.allowed(Some("dev"), "shared/x"),
        ActionSet::of(&[Action::Pull])
    );
}

#[test]
fn empty_rules_deny_everything() {
    let rules = RuleSet::default();
    assert!(rules.allowed(Some("admin"), "x").is_empty());
    assert!(rules.allowed(None, "public/x").is_empty());
}

#[test]
fn every_problem_names_its_key() {
    let err = RuleSet::compile(
        &[
            RuleText {
                account: "@nobody".into(),
                repository: "${user}/*".into(),
                actions: vec!["pull".into(), "write".into()],
            },
            RuleText {
                account: "x".into(),
                repository: "y".into(),
                actions: vec![],
            },
        ],
        &BTreeMap::new(),
    )
    .unwrap_err();
    let keys: Vec<_> = err.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "acl[0].account",
            "acl[0].repository",
            "acl[0].actions",
            "acl[1].actions"
        ]
    );
}

pub(crate) mod properties {
    //! The compiled rules against [`reference`](crate::rules::reference), on a
    //! small alphabet so that patterns and names often meet. The strategies
    //! serve the token grant's properties too (`auth::token`'s tests).

    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use crate::rules::{reference, RuleSet, RuleText};

    fn account_pattern() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("anonymous".to_string()),
            Just("@team".to_string()),
            "[ab*?]{1,3}",
        ]
    }

    fn repository_pattern() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                "[ab/]",
                Just("*".to_string()),
                Just("?".to_string()),
                Just("${account}".to_string())
            ],
            1..6,
        )
        .prop_map(|v| v.concat())
    }

    pub(crate) fn action() -> impl Strategy<Value = String> {
        prop_oneof!["pull", "push", "delete", "admin", "\\*"]
    }

    pub(crate) fn rule() -> impl Strategy<Value = RuleText> {
        (
            account_pattern(),
            repository_pattern(),
            proptest::collection::vec(action(), 1..3),
        )
            .prop_map(|(account, repository, actions)| RuleText {
                account,
                repository,
                actions,
            })
    }

    pub(crate) fn groups() -> BTreeMap<String, Vec<String>> {
        BTreeMap::from([("team".to_string(), vec!["a".to_string(), "ab".to_string()])])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn decisions_equal_the_reference(
            rules in proptest::collection::vec(rule(), 0..5),
            queries in proptest::collection::vec((proptest::option::of("[ab]{1,2}"), "[ab/]{0,6}"), 1..8),
        ) {
            let set = RuleSet::compile(&rules, &groups()).unwrap();
            for (account, repo) in &queries {
                let got = set.allowed(account.as_deref(), repo);
                prop_assert_eq!(got, reference::allowed(&rules, &groups(), account.as_deref(), repo));
                if rules.is_empty() {
                    prop_assert!(got.is_empty(), "deny by default");
                }
            }
        }
    }
}
