//! The scope grammar of Docker token auth: `type[(class)]:name:action[,action]`,
//! several separated by spaces; `name` may itself contain `:` (a registry
//! host with a port), so the type is up to the first `:` and the actions are
//! after the last. Owns [`Scope`] and the `access` claim entry
//! [`AccessEntry`]. Pure parsing.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One requested scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub kind: String,
    pub class: Option<String>,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope {0:?}: use type:name:actions, e.g. repository:team/app:pull,push")]
pub struct ScopeError(pub String);

impl Scope {
    pub fn parse(s: &str) -> Result<Scope, ScopeError> {
        let err = || ScopeError(s.chars().take(200).collect());
        let (kind_class, rest) = s.split_once(':').ok_or_else(err)?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(err)?;
        let (kind, class) = match kind_class.split_once('(') {
            Some((k, c)) => {
                let c = c.strip_suffix(')').ok_or_else(err)?;
                if c.is_empty() || c.contains(['(', ')']) {
                    return Err(err());
                }
                (k, Some(c.to_owned()))
            }
            None => (kind_class, None),
        };
        let word = |w: &str| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        };
        if !word(kind)
            || name.is_empty()
            || name.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(err());
        }
        let actions: Vec<String> = if actions.is_empty() {
            Vec::new()
        } else {
            actions.split(',').map(str::to_owned).collect()
        };
        if actions.iter().any(|a| !(a == "*" || word(a))) {
            return Err(err());
        }
        Ok(Scope {
            kind: kind.to_owned(),
            class,
            name: name.to_owned(),
            actions,
        })
    }

    /// Every scope in `params` (each may hold several, space separated).
    pub fn parse_all<'a>(
        params: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<Scope>, ScopeError> {
        params
            .into_iter()
            .flat_map(str::split_whitespace)
            .map(Scope::parse)
            .collect()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.kind)?;
        if let Some(c) = &self.class {
            write!(f, "({c})")?;
        }
        write!(f, ":{}:{}", self.name, self.actions.join(","))
    }
}

/// One entry of the `access` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub actions: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_forms_clients_send() {
        let s = Scope::parse("repository:team/app:pull,push").unwrap();
        assert_eq!(
            (s.kind.as_str(), s.name.as_str()),
            ("repository", "team/app")
        );
        assert_eq!(s.actions, ["pull", "push"]);
        let s = Scope::parse("repository(plugin):host:5000/x:pull").unwrap();
        assert_eq!(s.class.as_deref(), Some("plugin"));
        assert_eq!(s.name, "host:5000/x");
        let s = Scope::parse("registry:catalog:*").unwrap();
        assert_eq!(s.actions, ["*"]);
        assert!(Scope::parse("repository:x:").unwrap().actions.is_empty());
        let all = Scope::parse_all(["repository:a:pull repository:b:push", "registry:catalog:*"])
            .unwrap();
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "repository",
            "repository:x",
            ":x:pull",
            "repository::pull",
            "repo(:x:pull",
            "repository:x:pu ll",
            "repository:x:,",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad:?}");
        }
    }

    fn word() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9_.-]{0,8}"
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(
            kind in word(),
            class in proptest::option::of(word()),
            name in "[a-z0-9][a-z0-9/._:-]{0,30}",
            actions in proptest::collection::vec(prop_oneof![word(), Just("*".to_string())], 0..4),
        ) {
            let s = Scope { kind, class, name, actions };
            prop_assert_eq!(Scope::parse(&s.to_string()).unwrap(), s);
        }

        #[test]
        fn never_panics(s in "\\PC{0,60}") {
            let _ = Scope::parse(&s);
            let _ = Scope::parse_all([s.as_str()]);
        }
    }
}
