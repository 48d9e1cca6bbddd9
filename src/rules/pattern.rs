//! Glob patterns of the `[[acl]]` rules: `*` matches any run of characters
//! (`/` included), `?` exactly one, and `${account}` (repository patterns
//! only) the caller's account name taken literally, so an account named `*`
//! gains nothing by its name. An account name that is not one repository
//! path component (`alice/x`, `Bob`) never stands for `${account}`: it would
//! reach into another namespace. Pure string matching; calls only the
//! component grammar of [`crate::route`].

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
    /// it never matches when there is no account, or when the account is not
    /// one repository path component).
    pub fn matches(&self, subject: &str, account: Option<&str>) -> bool {
        if self.uses_account() && !account.is_some_and(crate::route::valid_path_component) {
            return false;
        }
        let account = account.unwrap_or("");
        let mut pieces = Vec::with_capacity(self.pieces.len() + account.len());
        for p in &self.pieces {
            match p {
                Piece::Account => pieces.extend(account.chars().map(Piece::Literal)),
                p => pieces.push(p.clone()),
            }
        }
        let subject: Vec<char> = subject.chars().collect();
        glob(&pieces, &subject)
    }
}

/// Matches `s` against `pieces` (no [`Piece::Account`] left) in
/// O(pieces x subject) at worst: on a mismatch only the last `*` seen is
/// retried one character further (a `*` further left can never do better),
/// so patterns with many stars cannot make a request take exponential time.
fn glob(pieces: &[Piece], s: &[char]) -> bool {
    let (mut p, mut i) = (0, 0);
    // The piece after the last `*` seen, and where in `s` that `*` stops now.
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        match pieces.get(p) {
            Some(Piece::Star) => {
                p += 1;
                star = Some((p, i));
            }
            Some(Piece::One) => {
                p += 1;
                i += 1;
            }
            Some(Piece::Literal(c)) if *c == s[i] => {
                p += 1;
                i += 1;
            }
            _ => match star {
                Some((after, stop)) => {
                    star = Some((after, stop + 1));
                    p = after;
                    i = stop + 1;
                }
                None => return false,
            },
        }
    }
    pieces[p..].iter().all(|x| *x == Piece::Star)
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
    fn an_account_that_is_not_one_path_component_gets_no_account_rule() {
        let pat = p("${account}/*");
        // `alice/x` would otherwise own `alice/x/*`, inside alice's namespace.
        assert!(!pat.matches("alice/x/app", Some("alice/x")));
        for account in ["Alice", "a@b", "", "-a", "a//b"] {
            assert!(
                !pat.matches(&format!("{account}/app"), Some(account)),
                "{account}"
            );
        }
        assert!(pat.matches("ci-bot/app", Some("ci-bot")));
        // Patterns without `${account}` still match any account name.
        assert!(p("apps/*").matches("apps/web", Some("alice/x")));
    }

    #[test]
    fn many_stars_take_linear_time() {
        // Backtracking over every star is C(255, 7) steps here: effectively forever.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let pat = p("*a*a*a*a*a*a*a*b");
            let _ = tx.send(pat.matches(&"a".repeat(255), None));
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(5));
        assert_eq!(got, Ok(false), "the matcher took more than 5 s");
        assert!(p("*a*a*b").matches("xaxxaab", None));
        assert!(p("a*?*c").matches("abbc", None));
        assert!(!p("a*?*c").matches("ac", None));
        assert!(p("**").matches("", None));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(Pattern::compile("", true).is_err());
        assert!(Pattern::compile("${user}/*", true).is_err());
        assert!(Pattern::compile("${account", true).is_err());
        assert!(Pattern::compile("${account}", false).is_err());
    }
}
