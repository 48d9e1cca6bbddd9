//! `WWW-Authenticate` challenges, exactly as registry clients parse them:
//! `Basic realm="..."` and
//! `Bearer realm="<origin>/auth/token",service="...",scope="...",error="..."`.
//! Owns [`Challenge`]; quoting escapes `"` and `\`. Calls nothing.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic {
        realm: String,
    },
    Bearer {
        realm: String,
        service: String,
        /// Space-separated scopes the client should ask for.
        scope: Option<String>,
        /// `invalid_token` or `insufficient_scope`.
        error: Option<&'static str>,
    },
}

fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Challenge::Basic { realm } => write!(f, "Basic realm={}", quoted(realm)),
            Challenge::Bearer {
                realm,
                service,
                scope,
                error,
            } => {
                write!(
                    f,
                    "Bearer realm={},service={}",
                    quoted(realm),
                    quoted(service)
                )?;
                if let Some(s) = scope {
                    write!(f, ",scope={}", quoted(s))?;
                }
                if let Some(e) = error {
                    write!(f, ",error={}", quoted(e))?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_the_spec() {
        let c = Challenge::Bearer {
            realm: "https://r.example/auth/token".into(),
            service: "regate".into(),
            scope: Some("repository:a/b:pull,push".into()),
            error: Some("insufficient_scope"),
        };
        assert_eq!(
            c.to_string(),
            r#"Bearer realm="https://r.example/auth/token",service="regate",scope="repository:a/b:pull,push",error="insufficient_scope""#
        );
        let b = Challenge::Basic {
            realm: "my \"reg\"".into(),
        };
        assert_eq!(b.to_string(), r#"Basic realm="my \"reg\"""#);
    }
}
