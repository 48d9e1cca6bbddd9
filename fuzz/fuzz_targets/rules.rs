//! Fuzzes the `[[acl]]` rules: rules compiled from arbitrary text, then asked
//! about arbitrary accounts, repositories and actions. Never panics, and every
//! decision equals an independent model of the documented semantics (first
//! matching rule wins, nothing matches: nothing allowed; `*` any run, `?` one
//! character, `${account}` the caller's name taken literally; see
//! `regate::rules::reference`). A token grant
//! never exceeds what was asked nor what the rules allow.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use regate::auth::token::{covers, grant, Scope};
use regate::route::RepoName;
use regate::rules::{reference, Action, ActionSet, Need, RuleSet, RuleText};

#[derive(Arbitrary, Debug)]
enum ActionText {
    Pull,
    Push,
    Delete,
    Admin,
    Star,
    Other(String),
}

impl ActionText {
    fn text(&self) -> String {
        match self {
            ActionText::Pull => "pull".into(),
            ActionText::Push => "push".into(),
            ActionText::Delete => "delete".into(),
            ActionText::Admin => "admin".into(),
            ActionText::Star => "*".into(),
            ActionText::Other(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Rule {
    account: String,
    repository: String,
    actions: Vec<ActionText>,
}

#[derive(Arbitrary, Debug)]
struct Query {
    account: Option<String>,
    repository: String,
    needed: u8,
}

#[derive(Arbitrary, Debug)]
struct Input {
    rules: Vec<Rule>,
    groups: Vec<(String, Vec<String>)>,
    queries: Vec<Query>,
    scopes: Vec<String>,
}

fn limited(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fuzz_target!(|input: Input| {
    // Names are at most 255 bytes in requests; patterns are short in configs.
    if input.rules.len() > 16
        || input
            .rules
            .iter()
            .any(|r| r.repository.len() > 64 || r.account.len() > 64)
        || input.queries.len() > 16
    {
        return;
    }
    let groups: BTreeMap<String, Vec<String>> = input.groups.iter().cloned().collect();
    let texts: Vec<RuleText> = input
        .rules
        .iter()
        .map(|r| RuleText {
            account: r.account.clone(),
            repository: r.repository.clone(),
            actions: r.actions.iter().map(ActionText::text).collect(),
        })
        .collect();
    let Ok(rules) = RuleSet::compile(&texts, &groups) else {
        return;
    };
    let all: Vec<Action> = Action::ALL.to_vec();
    for q in &input.queries {
        let repo = limited(&q.repository, 255);
        let account = q.account.as_deref().map(|a| limited(a, 64));
        let allowed = rules.allowed(account, repo);
        assert_eq!(
            allowed,
            reference::allowed(&texts, &groups, account, repo),
            "{account:?} {repo:?}"
        );
        let needed: ActionSet = all
            .iter()
            .enumerate()
            .filter(|(i, _)| q.needed & (1 << i) != 0)
            .map(|(_, a)| *a)
            .collect();
        assert_eq!(rules.permits(account, repo, needed), allowed.covers(needed));
    }
    // Token grants: within what was asked and what the rules allow.
    let Ok(scopes) = Scope::parse_all(input.scopes.iter().map(String::as_str)) else {
        return;
    };
    for q in &input.queries {
        let account = q.account.as_deref().map(|a| limited(a, 64));
        let granted = grant(&rules, account, &scopes);
        for e in &granted {
            let got: ActionSet = e.actions.iter().filter_map(|a| Action::parse(a)).collect();
            match e.kind.as_str() {
                "repository" => {
                    assert!(RepoName::parse(&e.name).is_ok());
                    assert!(rules.allowed(account, &e.name).covers(got), "{e:?}");
                    let asked = scopes
                        .iter()
                        .filter(|s| s.kind == "repository" && s.name == e.name)
                        .fold(ActionSet::NONE, |acc, s| {
                            if s.actions.iter().any(|a| a == "*") {
                                ActionSet::all()
                            } else {
                                acc.union(
                                    s.actions.iter().filter_map(|a| Action::parse(a)).collect(),
                                )
                            }
                        });
                    assert!(asked.covers(got), "{e:?} not asked");
                    assert!(!e.actions.iter().any(|a| a == "*"));
                }
                "registry" => assert!(account.is_some() && e.name == "catalog"),
                other => panic!("granted an entry of type {other:?}"),
            }
            if let (Ok(name), "repository") = (RepoName::parse(&e.name), e.kind.as_str()) {
                let need = Need::Repositories(vec![(name, got)]);
                assert!(covers(&granted, &need));
            }
        }
    }
});
