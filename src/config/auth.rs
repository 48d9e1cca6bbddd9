//! The auth part of the configuration: `[auth]`, `[auth.token]`,
//! `[auth.groups]`, the ordered `[[acl]]` rules, `[audit]`, and the upstream
//! credentials (`[upstream] username`, `password_file`).
//!
//! Owns these raw structs, their defaults and their validation into
//! [`AuthSettings`] and [`AuditSettings`]; the rules are compiled here (by
//! [`crate::rules`]) so a bad rule is a configuration problem naming its key.
//! Files named by these keys (htpasswd, keys) are read at start-up by the
//! auth module, not here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration::{self, RawDuration};
use super::problem::Problem;
use crate::rules::{RuleSet, RuleText};

/// Defaults of the auth keys.
pub mod defaults {
    pub const REALM: &str = "regate";
    pub const CACHE_TTL_SECS: u64 = 300;
    pub const MAX_FAILED_LOGINS: u32 = 10;
    pub const FAILED_LOGIN_WINDOW_SECS: u64 = 60;
    pub const TOKEN_ISSUER: &str = "regate";
    pub const TOKEN_SERVICE: &str = "regate";
    pub const TOKEN_SIGNING_KEY: &str = "config/token.key";
    pub const TOKEN_TTL_SECS: u64 = 300;
    pub const TOKEN_LEEWAY_SECS: u64 = 60;
    pub const REFRESH_TTL_SECS: u64 = 30 * 24 * 3600;
    /// The longest lifetime of an accepted access token (`exp - iat`, `exp - now`).
    pub const TOKEN_MAX_LIFETIME_SECS: u64 = 24 * 3600;
    pub const TRUST_EXTERNAL_ACCESS: bool = false;
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// `none`, `basic` or `token`.
    pub mode: Option<String>,
    pub htpasswd: Option<String>,
    /// The realm of Basic challenges.
    pub realm: Option<String>,
    pub cache_ttl: Option<RawDuration>,
    pub max_failed_logins: Option<u32>,
    pub failed_login_window: Option<RawDuration>,
    pub groups: Option<BTreeMap<String, Vec<String>>>,
    pub token: Option<RawToken>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    pub issuer: Option<String>,
    pub service: Option<String>,
    pub signing_key: Option<String>,
    /// Lifetime of issued tokens.
    pub ttl: Option<RawDuration>,
    /// Allowed clock skew for exp/nbf.
    pub leeway: Option<RawDuration>,
    /// Lifetime of refresh tokens.
    pub refresh_ttl: Option<RawDuration>,
    /// An external issuer whose tokens are also accepted.
    pub external_issuer: Option<String>,
    /// PEM public keys of the external issuer.
    pub external_keys: Option<Vec<String>>,
    /// A JWKS file of the external issuer.
    pub external_jwks: Option<String>,
    /// Take the external issuer's `access` as it is, without intersecting
    /// it with what `[[acl]]` grants the token's `sub`.
    pub trust_external_access: Option<bool>,
    /// Access tokens living longer than this (`exp - iat` or `exp - now`)
    /// are refused.
    pub max_lifetime: Option<RawDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAclRule {
    pub account: String,
    pub repository: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub file: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    None,
    Basic,
    Token,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::None => "none",
            AuthMode::Basic => "basic",
            AuthMode::Token => "token",
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub mode: AuthMode,
    pub htpasswd: Option<PathBuf>,
    pub realm: String,
    pub cache_ttl: Duration,
    pub max_failed_logins: u32,
    pub failed_login_window: Duration,
    pub rules: RuleSet,
    pub token: TokenSettings,
    pub upstream_username: Option<String>,
    pub upstream_password_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub issuer: String,
    pub service: String,
    pub signing_key: PathBuf,
    pub ttl: Duration,
    pub leeway: Duration,
    pub refresh_ttl: Duration,
    pub external_issuer: Option<String>,
    pub external_keys: Vec<PathBuf>,
    pub external_jwks: Option<PathBuf>,
    /// The external issuer's `access` is used as it is (no intersection with
    /// the rules for its `sub`).
    pub trust_external_access: bool,
    pub max_lifetime: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct AuditSettings {
    pub file: Option<PathBuf>,
}

/// Validates the auth sections, adding every problem to `problems`.
pub(super) fn validate(
    raw: RawAuth,
    acl: Vec<RawAclRule>,
    upstream_username: Option<String>,
    upstream_password_file: Option<String>,
    problems: &mut Vec<Problem>,
) -> AuthSettings {
    use defaults as d;
    let mode = match raw.mode.as_deref() {
        None | Some("none") => AuthMode::None,
        Some("basic") => AuthMode::Basic,
        Some("token") => AuthMode::Token,
        Some(other) => {
            problems.push(Problem::new(
                "auth.mode",
                format!("{other:?} is not a mode; use \"none\", \"basic\" or \"token\""),
            ));
            AuthMode::None
        }
    };
    let htpasswd = raw.htpasswd.map(PathBuf::from);
    if mode == AuthMode::Basic && htpasswd.is_none() {
        problems.push(Problem::new(
            "auth.htpasswd",
            "missing; basic mode needs an htpasswd file (create one with `regate passwd add USER --file config/htpasswd`)",
        ));
    }
    if let Some(p) = &htpasswd {
        if mode != AuthMode::None && !p.is_file() {
            problems.push(Problem::new(
                "auth.htpasswd",
                format!(
                    "file {} not found; create it with `regate passwd add USER --file {}`",
                    p.display(),
                    p.display()
                ),
            ));
        }
    }
    let secs = |problems: &mut Vec<Problem>, key: &str, v: Option<RawDuration>, default: u64| {
        duration::read(
            key,
            v.as_ref(),
            Duration::from_secs(default),
            Duration::from_secs(1),
            problems,
        )
    };
    let cache_ttl = duration::read(
        "auth.cache_ttl",
        raw.cache_ttl.as_ref(),
        Duration::from_secs(d::CACHE_TTL_SECS),
        Duration::ZERO,
        problems,
    );
    let max_failed_logins = raw.max_failed_logins.unwrap_or(d::MAX_FAILED_LOGINS);
    if max_failed_logins == 0 {
        problems.push(Problem::new("auth.max_failed_logins", "must be at least 1"));
    }
    let failed_login_window = secs(
        problems,
        "auth.failed_login_window",
        raw.failed_login_window,
        d::FAILED_LOGIN_WINDOW_SECS,
    );

    let groups = raw.groups.unwrap_or_default();
    let texts: Vec<RuleText> = acl
        .into_iter()
        .map(|r| RuleText {
            account: r.account,
            repository: r.repository,
            actions: r.actions,
        })
        .collect();
    let rules = match RuleSet::compile(&texts, &groups) {
        Ok(r) => r,
        Err(ps) => {
            problems.extend(ps.into_iter().map(|(k, m)| Problem::new(k, m)));
            RuleSet::default()
        }
    };
    if mode != AuthMode::None && texts.is_empty() {
        problems.push(Problem::new(
            "acl",
            "no [[acl]] rules: with auth on, everything would be denied; add rules (first match wins)",
        ));
    }

    let t = raw.token.unwrap_or_default();
    let ttl = secs(problems, "auth.token.ttl", t.ttl, d::TOKEN_TTL_SECS);
    if ttl < Duration::from_secs(60) {
        problems.push(Problem::new(
            "auth.token.ttl",
            "must be at least 60 (seconds); clients expect tokens to live a minute",
        ));
    }
    let max_lifetime = duration::read(
        "auth.token.max_lifetime",
        t.max_lifetime.as_ref(),
        Duration::from_secs(d::TOKEN_MAX_LIFETIME_SECS),
        Duration::from_secs(60),
        problems,
    );
    if ttl > max_lifetime {
        problems.push(Problem::new(
            "auth.token.ttl",
            format!(
                "{} seconds is longer than auth.token.max_lifetime ({} seconds); regate would refuse its own tokens",
                ttl.as_secs(),
                max_lifetime.as_secs()
            ),
        ));
    }
    let token = TokenSettings {
        issuer: t.issuer.unwrap_or_else(|| d::TOKEN_ISSUER.into()),
        service: t.service.unwrap_or_else(|| d::TOKEN_SERVICE.into()),
        signing_key: PathBuf::from(t.signing_key.unwrap_or_else(|| d::TOKEN_SIGNING_KEY.into())),
        ttl,
        leeway: duration::read(
            "auth.token.leeway",
            t.leeway.as_ref(),
            Duration::from_secs(d::TOKEN_LEEWAY_SECS),
            Duration::ZERO,
            problems,
        ),
        refresh_ttl: secs(
            problems,
            "auth.token.refresh_ttl",
            t.refresh_ttl,
            d::REFRESH_TTL_SECS,
        ),
        external_issuer: t.external_issuer,
        external_keys: t
            .external_keys
            .unwrap_or_default()
            .into_iter()
            .map(PathBuf::from)
            .collect(),
        external_jwks: t.external_jwks.map(PathBuf::from),
        trust_external_access: t.trust_external_access.unwrap_or(d::TRUST_EXTERNAL_ACCESS),
        max_lifetime,
    };
    if mode == AuthMode::Token {
        for (key, v) in [
            ("auth.token.issuer", &token.issuer),
            ("auth.token.service", &token.service),
        ] {
            if v.trim().is_empty() {
                problems.push(Problem::new(key, "must not be empty"));
            }
        }
        if !token.signing_key.is_file() {
            problems.push(Problem::new(
                "auth.token.signing_key",
                format!(
                    "file {} not found; create one with `regate keygen --out {}`",
                    token.signing_key.display(),
                    token.signing_key.display()
                ),
            ));
        }
        if htpasswd.is_none() && token.external_issuer.is_none() {
            problems.push(Problem::new(
                "auth.htpasswd",
                "missing; token mode checks every login (at /auth/token, and Basic credentials) against an htpasswd file, so without one (and without auth.token.external_issuer) nobody can log in; create one with `regate passwd add USER --file config/htpasswd`",
            ));
        }
        let has_keys = !token.external_keys.is_empty() || token.external_jwks.is_some();
        if token.external_issuer.is_some() != has_keys {
            problems.push(Problem::new(
                "auth.token.external_issuer",
                "set external_issuer together with external_keys or external_jwks",
            ));
        }
        if token.external_issuer.as_deref() == Some(token.issuer.as_str()) {
            problems.push(Problem::new(
                "auth.token.external_issuer",
                "must differ from auth.token.issuer",
            ));
        }
    }
    if upstream_username.is_some() != upstream_password_file.is_some() {
        problems.push(Problem::new(
            "upstream.password_file",
            "set upstream.username and upstream.password_file together",
        ));
    }
    AuthSettings {
        mode,
        htpasswd,
        realm: raw.realm.unwrap_or_else(|| d::REALM.into()),
        cache_ttl,
        max_failed_logins: max_failed_logins.max(1),
        failed_login_window,
        rules,
        token,
        upstream_username,
        upstream_password_file: upstream_password_file.map(PathBuf::from),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Settings;
    use super::AuthMode;

    const BASE: &str = "[server]\ndev_certs = true\n[upstream]\nurl = \"http://127.0.0.1:5000\"\n";

    #[test]
    fn default_mode_is_none() {
        let s = Settings::from_toml(BASE, "t", std::iter::empty()).unwrap();
        assert_eq!(s.auth.mode, AuthMode::None);
        assert!(s.audit.file.is_none());
    }

    #[test]
    fn bad_auth_keys_are_named() {
        let text = format!(
            "{BASE}[auth]\nmode = \"token\"\n[auth.token]\nttl = 10\nsigning_key = \"/nope/key.pem\"\n[[acl]]\naccount = \"@ops\"\nrepository = \"*\"\nactions = [\"pull\", \"fly\"]\n"
        );
        let err = Settings::from_toml(&text, "t", std::iter::empty()).unwrap_err();
        let keys: Vec<_> = err.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "acl[0].account",
                "acl[0].actions",
                "auth.token.ttl",
                "auth.token.signing_key",
                "auth.htpasswd"
            ]
        );
    }

    #[test]
    fn token_mode_needs_htpasswd_unless_an_external_issuer_signs_the_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("token.key");
        // Validation checks that the key file exists; `auth` reads the key.
        std::fs::write(&key, "a key file").unwrap();
        let acl = "[[acl]]\naccount = \"*\"\nrepository = \"*\"\nactions = [\"pull\"]\n";
        let text = format!(
            "{BASE}[auth]\nmode = \"token\"\n[auth.token]\nsigning_key = {:?}\n{acl}",
            key.display().to_string()
        );
        let err = Settings::from_toml(&text, "t", std::iter::empty()).unwrap_err();
        let problems = err.problems();
        assert_eq!(problems.len(), 1, "{err}");
        assert_eq!(problems[0].key, "auth.htpasswd");
        assert!(problems[0].message.contains("token mode"), "{err}");

        let text = format!(
            "{BASE}[auth]\nmode = \"token\"\n[auth.token]\nsigning_key = {:?}\nexternal_issuer = \"gitlab\"\nexternal_keys = [{:?}]\n{acl}",
            key.display().to_string(),
            key.display().to_string()
        );
        let keys: Vec<_> = match Settings::from_toml(&text, "t", std::iter::empty()) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems().into_iter().map(|p| p.key).collect(),
        };
        assert!(!keys.contains(&"auth.htpasswd".to_string()), "{keys:?}");
    }

    #[test]
    fn token_lifetime_and_external_trust_have_defaults_and_checks() {
        let key = tempfile::NamedTempFile::new().unwrap();
        let htpasswd = tempfile::NamedTempFile::new().unwrap();
        let base = format!(
            "{BASE}[auth]\nmode = \"token\"\nhtpasswd = {:?}\n[auth.token]\nsigning_key = {:?}\n",
            htpasswd.path().display().to_string(),
            key.path().display().to_string()
        );
        let acl = "[[acl]]\naccount = \"*\"\nrepository = \"*\"\nactions = [\"pull\"]\n";
        let s = Settings::from_toml(&format!("{base}{acl}"), "t", std::iter::empty()).unwrap();
        assert_eq!(s.auth.token.max_lifetime.as_secs(), 24 * 3600);
        assert!(!s.auth.token.trust_external_access);
        let s = Settings::from_toml(
            &format!("{base}max_lifetime = \"2h\"\ntrust_external_access = true\n{acl}"),
            "t",
            std::iter::empty(),
        )
        .unwrap();
        assert_eq!(s.auth.token.max_lifetime.as_secs(), 7200);
        assert!(s.auth.token.trust_external_access);
        for (bad, key) in [
            ("max_lifetime = \"30s\"", "auth.token.max_lifetime"),
            ("max_lifetime = \"a day\"", "auth.token.max_lifetime"),
            ("max_lifetime = \"5m\"\nttl = 600", "auth.token.ttl"),
        ] {
            let err = Settings::from_toml(&format!("{base}{bad}\n{acl}"), "t", std::iter::empty())
                .unwrap_err();
            let keys: Vec<_> = err.problems().into_iter().map(|p| p.key).collect();
            assert_eq!(keys, [key], "{bad}: {err}");
        }
    }

    #[test]
    fn basic_mode_needs_htpasswd_and_rules() {
        let text = format!("{BASE}[auth]\nmode = \"basic\"\n");
        let err = Settings::from_toml(&text, "t", std::iter::empty()).unwrap_err();
        let keys: Vec<_> = err.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["auth.htpasswd", "acl"]);
    }
}
