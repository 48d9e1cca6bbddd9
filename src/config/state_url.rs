//! `[state] url`: the PostgreSQL database regate keeps its state in when
//! several replicas share it (libpq URL conventions:
//! `postgres://user:password@host:port/db?sslmode=disable`).
//!
//! Owns the parse and the check of that one value, and its redacted form:
//! the URL carries a password, so [`StateUrl`] prints (Display and Debug) with
//! the password replaced by `***`, and every message about it uses that form.

use std::fmt;
use std::str::FromStr;

/// A checked `state.url`; the password never leaves through Display or Debug.
#[derive(Clone)]
pub struct StateUrl {
    text: String,
    config: postgres::Config,
}

impl StateUrl {
    /// Parses and checks `text`: scheme postgres/postgresql, a host, a
    /// database; `sslmode` disable or prefer (regate does not link a TLS
    /// stack for PostgreSQL, so `require` is refused rather than ignored).
    pub fn parse(text: &str) -> Result<StateUrl, String> {
        let redacted = redact(text);
        let scheme_ok = text.starts_with("postgres://") || text.starts_with("postgresql://");
        if !scheme_ok {
            return Err(format!(
                "{redacted:?} is not a PostgreSQL URL; write postgres://USER:PASSWORD@HOST:PORT/DATABASE"
            ));
        }
        let config = postgres::Config::from_str(text).map_err(|e| {
            format!("{redacted:?} cannot be read ({e}); write postgres://USER:PASSWORD@HOST:PORT/DATABASE")
        })?;
        if config.get_hosts().is_empty() {
            return Err(format!(
                "{redacted:?} names no host; write postgres://USER:PASSWORD@HOST:PORT/DATABASE"
            ));
        }
        if config.get_dbname().is_none_or(str::is_empty) {
            return Err(format!(
                "{redacted:?} names no database; add it after the host: postgres://USER:PASSWORD@HOST:PORT/DATABASE"
            ));
        }
        if config.get_user().is_none_or(str::is_empty) {
            return Err(format!(
                "{redacted:?} names no user; write postgres://USER:PASSWORD@HOST:PORT/DATABASE"
            ));
        }
        if config.get_ssl_mode() == postgres::config::SslMode::Require {
            return Err(format!(
                "{redacted:?}: sslmode=require is not supported (regate connects to PostgreSQL without TLS); use sslmode=disable on a trusted network or a local TLS tunnel (stunnel, a sidecar proxy)"
            ));
        }
        Ok(StateUrl {
            text: text.to_owned(),
            config,
        })
    }

    /// The connection settings, password included: for the state engine only.
    pub fn config(&self) -> &postgres::Config {
        &self.config
    }
}

impl fmt::Display for StateUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.text))
    }
}

impl fmt::Debug for StateUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StateUrl({:?})", redact(&self.text))
    }
}

/// `text` with the password of its user part and any `password=` parameter
/// replaced by `***`.
pub fn redact(text: &str) -> String {
    let (head, query) = match text.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (text, None),
    };
    let mut out = match head.split_once("://") {
        Some((scheme, rest)) => {
            // The user part ends at the last '@' before the path.
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, hosts)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{hosts}"),
                    None => format!("{userinfo}@{hosts}"),
                },
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => head.to_owned(),
    };
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        let u =
            StateUrl::parse("postgres://regate:s3cr%40t@db.example:5433/regate?sslmode=disable")
                .unwrap();
        for shown in [u.to_string(), format!("{u:?}")] {
            assert!(!shown.contains("s3cr"), "{shown}");
            assert!(
                shown.contains("regate:***@db.example:5433/regate"),
                "{shown}"
            );
        }
        assert_eq!(
            redact("postgresql://u@h/d?password=x&sslmode=prefer"),
            "postgresql://u@h/d?password=***&sslmode=prefer"
        );
    }

    #[test]
    fn what_is_refused_is_named() {
        for (url, says) in [
            ("mysql://u:p@h/d", "not a PostgreSQL URL"),
            ("postgres://u:p@h:5432/", "names no database"),
            ("postgres://u:p@h/d?sslmode=require", "sslmode=require"),
            ("postgres://u:p@h/d?nonsense=1", "cannot be read"),
        ] {
            let e = StateUrl::parse(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains(":p@"), "{url}: {e}");
        }
    }
}
