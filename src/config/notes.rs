//! What a valid configuration means where it is easy to get wrong, said
//! in plain words by `regate check-config` (and logged at start-up): how
//! tokens of an external issuer are trusted, which URLs clients are
//! sent to behind a load balancer, and how the PostgreSQL server of
//! `state.url` is authenticated. Reads [`Settings`]; decides nothing.

use super::{AuthMode, Settings};

impl Settings {
    /// One sentence per point worth knowing about this configuration.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let t = &self.auth.token;
        if let (AuthMode::Token, Some(issuer)) = (self.auth.mode, &t.external_issuer) {
            notes.push(if t.trust_external_access {
                format!("auth.token.trust_external_access = true: tokens of {issuer:?} grant exactly their `access` claim; [[acl]] does not limit them")
            } else {
                format!("tokens of {issuer:?} grant at most what [[acl]] gives their `sub` (their `access` claim intersected with the rules); set auth.token.trust_external_access = true if that issuer alone decides")
            });
        }
        if self.auth.mode == AuthMode::Token {
            notes.push(format!(
                "access tokens living longer than {} seconds (auth.token.max_lifetime, `exp - iat` or `exp - now`) are refused",
                t.max_lifetime.as_secs()
            ));
        }
        let s = &self.server;
        if !s.trusted_proxies.is_empty() {
            notes.push(format!(
                "from {} (server.trusted_proxies) the client address is taken from Forwarded / X-Forwarded-For (the rightmost hop that is not one of them) and the scheme from X-Forwarded-Proto; those proxies must set or append these headers",
                s.trusted_proxies.describe()
            ));
        }
        if let (Some(plain), None) = (s.plain_listen, &s.public_url) {
            if s.trusted_proxies.is_empty() {
                notes.push(format!(
                    "server.plain_listen ({plain}) answers with http:// token realms and upload URLs; behind a TLS-terminating balancer set server.public_url (e.g. \"https://registry.example.com\") or server.trusted_proxies so clients are not sent to plain HTTP"
                ));
            }
        }
        if let Some(url) = &self.state.url {
            notes.push(format!("state.url: {}", url.tls().describe()));
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::super::Settings;

    fn notes(server: &str) -> Vec<String> {
        let text = format!(
            "[server]\ndev_certs = true\n{server}\n[upstream]\nurl = \"http://127.0.0.1:5000\"\n"
        );
        Settings::from_toml(&text, "t", std::iter::empty())
            .unwrap()
            .notes()
    }

    #[test]
    fn a_plain_listener_without_public_url_or_trusted_proxies_is_pointed_out() {
        assert!(notes("").is_empty());
        let plain = "plain_listen = \"127.0.0.1:8080\"";
        let n = notes(plain);
        assert_eq!(n.len(), 1, "{n:?}");
        assert!(n[0].contains("server.public_url"), "{n:?}");
        let n = notes(&format!("{plain}\npublic_url = \"https://r.example\""));
        assert!(n.is_empty(), "{n:?}");
        let n = notes(&format!("{plain}\ntrusted_proxies = [\"10.0.0.0/8\"]"));
        assert_eq!(n.len(), 1, "{n:?}");
        assert!(
            n[0].contains("from 10.0.0.0/8 (server.trusted_proxies)"),
            "{n:?}"
        );
    }

    #[test]
    fn the_trust_model_of_external_tokens_is_said() {
        let key = tempfile::NamedTempFile::new().unwrap();
        let load = |extra: &str| {
            let text = format!(
                "[server]\ndev_certs = true\n[upstream]\nurl = \"http://127.0.0.1:5000\"\n[auth]\nmode = \"token\"\n[auth.token]\nsigning_key = {:?}\nexternal_issuer = \"corp-idp\"\nexternal_keys = [\"idp.pub\"]\n{extra}\n[[acl]]\naccount = \"*\"\nrepository = \"*\"\nactions = [\"pull\"]\n",
                key.path().display().to_string()
            );
            Settings::from_toml(&text, "t", std::iter::empty())
                .unwrap()
                .notes()
                .join("\n")
        };
        let n = load("");
        assert!(
            n.contains("tokens of \"corp-idp\" grant at most what [[acl]] gives their `sub`"),
            "{n}"
        );
        assert!(n.contains("longer than 86400 seconds"), "{n}");
        let n = load("trust_external_access = true");
        assert!(n.contains("[[acl]] does not limit them"), "{n}");
    }

    #[test]
    fn a_bad_trusted_proxy_is_a_problem_naming_the_key() {
        let text = "[server]\ndev_certs = true\ntrusted_proxies = [\"lb.example\"]\n[upstream]\nurl = \"http://127.0.0.1:5000\"\n";
        let err = Settings::from_toml(text, "t", std::iter::empty()).unwrap_err();
        let p = err.problems();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "server.trusted_proxies");
        assert!(p[0].message.contains("\"lb.example\""), "{}", p[0].message);
    }
}
