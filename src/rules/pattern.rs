//! Glob patterns of the `[[acl]]` rules: `*` matches any run of characters
//! (`/` included), `?` exactly one, and `${account}` (repository patterns
//! only) the caller's account name taken literally, so an account named `*`
//! gains nothing by its name. Pure string matching; calls nothing.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(char),
    Star,
    One,
    Account,
}

/// A compiled pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    pieces: Vec<Piece>,
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl Pattern {
    /// Compiles `text`; `${account}` is accepted only when `allow_account`.
    pub fn compile(text: &str, allow_account: bool) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix("${") {
                let (var, tail) = after
                    .split_once('}')
                    .ok_or_else(|| format!("{text:?}: unclosed `${{`"))?;
                if var != "account" {
                    return Err(format!(
                        "{text:?}: unknown variable `${{{var}}}`; only `${{account}}` exists"
                    ));
                }
                if !allow_account {
                    return Err(format!(
                        "{text:?}: `${{account}}` is only meaningful in a repository pattern"
                    ));
                }
                pieces.push(Piece::Account);
                rest = tail;
                continue;
            }
            pieces.push(match c {
                '*' => Piece::Star,
                '?' => Piece::One,
                c => Piece::Literal(c),
            });
            rest = &rest[c.len_utf8()..];
        }
        Ok(Pattern {
            text: text.to_owned(),
            pieces,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern contains `${account}`.
    pub fn uses_account(&self) -> bool {
        self.pieces.contains(&Piece::Account)
    }

    /// Matches `subject`; `account` replaces `${account}` (a pattern that uses
    /// it never matches when there is no account).
    pub fn matches(&self, subject: &str, account: Option<&str>) -> bool {
        if self.uses_account() && account.is_none() {
            return false;
        }
        let subject: Vec<char> = subject.chars().collect();
        let account: Vec<char> = account.unwrap_or("").chars().collect();
        match_from(&self.pieces, &subject, &account)
    }
}

fn match_from(pieces: &[Piece], s: &[char], account: &[char]) -> bool {
    match pieces.split_first() {
        None => s.is_empty(),
        Some((Piece::Literal(c), rest)) => {
            s.first() == Some(c) && match_from(rest, &s[1..], account)
        }
        Some((Piece::One, rest)) => !s.is_empty() && match_from(rest, &s[1..], account),
        Some((Piece::Account, rest)) => {
            s.starts_with(account) && match_from(rest, &s[account.len()..], account)
        }
        Some((Piece::Star, rest)) => (0..=s.len()).any(|i| match_from(rest, &s[i..], account)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: &str) -> Pattern {
        Pattern::compile(t, true).unwrap()
    }

    #[test]
    fn star_crosses_slashes_and_literals_are_exact() {
        assert!(p("apps/*").matches("apps/web", None));
        assert!(p("apps/*").matches("apps/team/web", None));
        assert!(!p("apps/*").matches("apps", None));
        assert!(!p("apps/*").matches("appsx/web", None));
        assert!(p("*").matches("anything/at/all", None));
        assert!(p("ci-?").matches("ci-1", None));
        assert!(!p("ci-?").matches("ci-12", None));
    }

    #[test]
    fn account_is_substituted_literally() {
        let pat = p("${account}/*");
        assert!(pat.matches("alice/app", Some("alice")));
        assert!(!pat.matches("bob/app", Some("alice")));
        assert!(!pat.matches("alice-evil/app", Some("alice")));
        // An account whose name looks like a glob matches only itself.
        assert!(!pat.matches("bob/app", Some("*")));
        assert!(!pat.matches("alice/app", None));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(Pattern::compile("", true).is_err());
        assert!(Pattern::compile("${user}/*", true).is_err());
        assert!(Pattern::compile("${account", true).is_err());
        assert!(Pattern::compile("${account}", false).is_err());
    }
}
