//! Who may do what: the ordered `[[acl]]` rules, compiled once.
//!
//! Owns [`Action`], [`ActionSet`], [`RuleSet`] (first matching rule wins,
//! deny by default) and, in [`required`], the actions each request needs.
//! Pure decisions over names: it sees no HTTP, no credentials and no I/O, so
//! the auth layer, the token issuer, the catalog filter and the CLI all ask
//! the same questions the same way.

mod pattern;
#[cfg(any(test, fuzzing))]
pub mod reference;
pub mod required;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub use pattern::Pattern;
pub use required::{mount_source, required, Mount, Need};

/// The account name that means "no credentials".
pub const ANONYMOUS: &str = "anonymous";

/// One thing a caller may do to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Pull,
    Push,
    Delete,
    /// The maintenance and GC API.
    Admin,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Pull, Action::Push, Action::Delete, Action::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of actions.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct ActionSet(u8);

impl ActionSet {
    pub const NONE: ActionSet = ActionSet(0);

    pub fn all() -> ActionSet {
        Action::ALL.into_iter().collect()
    }

    pub fn of(actions: &[Action]) -> ActionSet {
        actions.iter().copied().collect()
    }

    pub fn contains(self, a: Action) -> bool {
        self.0 & a.bit() != 0
    }

    /// Every action of `other` is in `self`.
    pub fn covers(self, other: ActionSet) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn intersect(self, other: ActionSet) -> ActionSet {
        ActionSet(self.0 & other.0)
    }

    pub fn union(self, other: ActionSet) -> ActionSet {
        ActionSet(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }

    /// `pull,push` as in a scope.
    pub fn to_scope_list(self) -> String {
        self.iter()
            .map(Action::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl FromIterator<Action> for ActionSet {
    fn from_iter<I: IntoIterator<Item = Action>>(iter: I) -> Self {
        ActionSet(iter.into_iter().fold(0, |acc, a| acc | a.bit()))
    }
}

impl fmt::Debug for ActionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.to_scope_list())
    }
}

/// Who a rule is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AccountMatcher {
    /// Callers without credentials.
    Anonymous,
    /// Members of a group of the config (`@name`).
    Group {
        name: String,
        members: BTreeSet<String>,
    },
    /// Authenticated accounts whose name matches.
    Name(Pattern),
}

impl AccountMatcher {
    fn matches(&self, account: Option<&str>) -> bool {
        match (self, account) {
            (AccountMatcher::Anonymous, None) => true,
            (AccountMatcher::Anonymous, Some(_)) => false,
            (AccountMatcher::Group { members, .. }, Some(a)) => members.contains(a),
            (AccountMatcher::Name(p), Some(a)) => p.matches(a, None),
            (AccountMatcher::Group { .. } | AccountMatcher::Name(_), None) => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    account: AccountMatcher,
    repository: Pattern,
    actions: ActionSet,
}

/// A rule as written in the config, before compiling.
#[derive(Debug, Clone)]
pub struct RuleText {
    pub account: String,
    pub repository: String,
    pub actions: Vec<String>,
}

/// A problem with one rule: the key (`acl[2].actions`) and the message.
pub type RuleProblem = (String, String);

/// The compiled, ordered rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    /// Compiles `rules` in order; `groups` maps a group name to its members.
    /// Every problem is reported, each with the key at fault.
    pub fn compile(
        rules: &[RuleText],
        groups: &BTreeMap<String, Vec<String>>,
    ) -> Result<RuleSet, Vec<RuleProblem>> {
        let mut problems = Vec::new();
        let mut out = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let key = |k: &str| format!("acl[{i}].{k}");
            let account = if r.account == ANONYMOUS {
                Some(AccountMatcher::Anonymous)
            } else if let Some(g) = r.account.strip_prefix('@') {
                match groups.get(g) {
                    Some(m) => Some(AccountMatcher::Group {
                        name: g.to_owned(),
                        members: m.iter().cloned().collect(),
                    }),
                    None => {
                        problems.push((
                            key("account"),
                            format!("group {g:?} is not defined; add it under [auth.groups]"),
                        ));
                        None
                    }
                }
            } else {
                match Pattern::compile(&r.account, false) {
                    Ok(p) => Some(AccountMatcher::Name(p)),
                    Err(m) => {
                        problems.push((key("account"), m));
                        None
                    }
                }
            };
            let repository = match Pattern::compile(&r.repository, true) {
                Ok(p) => Some(p),
                Err(m) => {
                    problems.push((key("repository"), m));
                    None
                }
            };
            let mut actions = ActionSet::NONE;
            if r.actions.is_empty() {
                problems.push((
                    key("actions"),
                    "must list at least one of pull, push, delete, admin".into(),
                ));
            }
            for a in &r.actions {
                match (a.as_str(), Action::parse(a)) {
                    ("*", _) => actions = ActionSet::all(),
                    (_, Some(a)) => actions = actions.union(ActionSet::of(&[a])),
                    (_, None) => problems.push((
                        key("actions"),
                        format!("{a:?} is not an action; use pull, push, delete, admin or \"*\""),
                    )),
                }
            }
            if let (Some(account), Some(repository)) = (account, repository) {
                out.push(Rule {
                    account,
                    repository,
                    actions,
                });
            }
        }
        if problems.is_empty() {
            Ok(RuleSet { rules: out })
        } else {
            Err(problems)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// What `account` (`None` = anonymous) may do to `repository`: the
    /// actions of the first rule that matches both, or nothing.
    pub fn allowed(&self, account: Option<&str>, repository: &str) -> ActionSet {
        self.rules
            .iter()
            .find(|r| r.account.matches(account) && r.repository.matches(repository, account))
            .map(|r| r.actions)
            .unwrap_or(ActionSet::NONE)
    }

    /// Whether `account` may do every action of `needed` to `repository`.
    pub fn permits(&self, account: Option<&str>, repository: &str, needed: ActionSet) -> bool {
        self.allowed(account, repository).covers(needed)
    }
}

#[cfg(test)]
pub(crate) mod tests;
