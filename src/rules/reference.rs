//! A slow, independent restatement of the rule semantics, for property tests
//! and the fuzz targets to compare [`RuleSet`](super::RuleSet) against: the
//! first rule whose account and repository patterns match gives its actions,
//! nothing matching gives nothing; in patterns `*` is any run, `?` one
//! character, and `${account}` the caller's name as literal characters (a
//! name that is not one repository path component matches no such pattern).
//! Matching is a dynamic program over (pattern, subject), unlike the
//! production matcher. Compiled only for tests and `cfg(fuzzing)`.

use std::collections::BTreeMap;

use super::{Action, ActionSet, RuleText, ANONYMOUS};

#[derive(Clone, Copy, PartialEq)]
enum Tok {
    Lit(char),
    Star,
    One,
}

/// `None` when the pattern needs an account and there is none.
fn tokens(pattern: &str, account: Option<&str>) -> Option<Vec<Tok>> {
    let mut out = Vec::new();
    for (i, part) in pattern.split("${account}").enumerate() {
        if i > 0 {
            // Only a name that is one path component stands for `${account}`.
            let a = account.filter(|a| crate::route::valid_path_component(a))?;
            out.extend(a.chars().map(Tok::Lit));
        }
        out.extend(part.chars().map(|c| match c {
            '*' => Tok::Star,
            '?' => Tok::One,
            c => Tok::Lit(c),
        }));
    }
    Some(out)
}

/// `row[j]`: the tokens so far match the first `j` characters.
fn glob(toks: &[Tok], s: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let mut row = vec![false; s.len() + 1];
    row[0] = true;
    for t in toks {
        let mut next = vec![false; s.len() + 1];
        for j in 0..=s.len() {
            next[j] = match t {
                Tok::Star => row[j] || (j > 0 && next[j - 1]),
                Tok::One => j > 0 && row[j - 1],
                Tok::Lit(c) => j > 0 && row[j - 1] && s[j - 1] == *c,
            };
        }
        row = next;
    }
    row[s.len()]
}

fn actions(texts: &[String]) -> ActionSet {
    texts
        .iter()
        .fold(ActionSet::NONE, |acc, a| match a.as_str() {
            "*" => ActionSet::all(),
            t => acc.union(
                Action::parse(t)
                    .map(|a| ActionSet::of(&[a]))
                    .unwrap_or_default(),
            ),
        })
}

/// What `account` may do to `repository` under `rules` (which must compile).
pub fn allowed(
    rules: &[RuleText],
    groups: &BTreeMap<String, Vec<String>>,
    account: Option<&str>,
    repository: &str,
) -> ActionSet {
    for r in rules {
        let who = if r.account == ANONYMOUS {
            account.is_none()
        } else if let Some(g) = r.account.strip_prefix('@') {
            account.is_some_and(|a| groups.get(g).is_some_and(|m| m.iter().any(|x| x == a)))
        } else {
            account.is_some_and(|a| tokens(&r.account, None).is_some_and(|t| glob(&t, a)))
        };
        if who && tokens(&r.repository, account).is_some_and(|t| glob(&t, repository)) {
            return actions(&r.actions);
        }
    }
    ActionSet::NONE
}
