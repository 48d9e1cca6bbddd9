//! Turns the raw file into [`Settings`], applying defaults and collecting every
//! problem (with its key) instead of stopping at the first. Each section is
//! checked by its own function (`Check::server`, `upstream`, `state`, `log`
//! here; `auth`, `gc`, `storage`, `retention` in their files); `validate`
//! only calls them in order (the order their problems are listed in) and
//! assembles the result.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::defaults as d;
use super::problem::Problem;
use super::raw::{RawConfig, RawLog, RawServer, RawState, RawUpstream};
use super::*;

struct Check {
    problems: Vec<Problem>,
}

impl Check {
    fn addr(
        &mut self,
        key: &str,
        value: Option<&str>,
        default: Option<&str>,
    ) -> Option<SocketAddr> {
        let v = value.or(default)?;
        match v.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problems.push(Problem::new(
                    key,
                    format!("{v:?} is not an address; write IP:PORT, e.g. \"127.0.0.1:5443\" or \"[::]:5443\""),
                ));
                None
            }
        }
    }

    /// A duration key of at least a second (`config::duration` syntax).
    fn secs(
        &mut self,
        key: &str,
        value: Option<super::duration::RawDuration>,
        default: u64,
    ) -> Duration {
        super::duration::read(
            key,
            value.as_ref(),
            Duration::from_secs(default),
            Duration::from_secs(1),
            &mut self.problems,
        )
    }
}

impl Check {
    /// `[server]`; `None` when its listen address is bad (a problem says so).
    fn server(&mut self, s: RawServer) -> Option<ServerSettings> {
        let listen = self.addr("server.listen", s.listen.as_deref(), Some(d::LISTEN));
        let admin_listen = self.addr(
            "server.admin_listen",
            s.admin_listen.as_deref(),
            Some(d::ADMIN_LISTEN),
        );
        let plain_listen = self.addr("server.plain_listen", s.plain_listen.as_deref(), None);
        let tls_cert = PathBuf::from(s.tls_cert.as_deref().unwrap_or(d::TLS_CERT));
        let tls_key = PathBuf::from(s.tls_key.as_deref().unwrap_or(d::TLS_KEY));
        let dev_certs = s.dev_certs.unwrap_or(d::DEV_CERTS);
        if !dev_certs {
            for (key, path) in [("server.tls_cert", &tls_cert), ("server.tls_key", &tls_key)] {
                if !path.is_file() {
                    self.problems.push(Problem::new(
                        key,
                        format!(
                            "file {} not found; create a certificate with `regate cert --dir {} --host <name>`, point {key} at yours, or set server.dev_certs = true",
                            path.display(),
                            path.parent().map(|p| p.display().to_string()).filter(|p| !p.is_empty()).unwrap_or_else(|| ".".into())
                        ),
                    ));
                }
            }
        }
        let public_url = s
            .public_url
            .as_deref()
            .and_then(|u| match parse_public_url(u) {
                Ok(p) => Some(p),
                Err(m) => {
                    self.problems
                        .push(Problem::new("server.public_url", format!("{u:?} {m}")));
                    None
                }
            });
        let trusted_proxies = crate::forwarded::TrustedProxies::parse(
            s.trusted_proxies.as_deref().unwrap_or_default(),
        )
        .unwrap_or_else(|bad| {
            self.problems.extend(
                bad.into_iter()
                    .map(|m| Problem::new("server.trusted_proxies", m)),
            );
            Default::default()
        });
        let handshake_timeout = self.secs(
            "server.handshake_timeout",
            s.handshake_timeout,
            d::HANDSHAKE_TIMEOUT_SECS,
        );
        let header_read_timeout = self.secs(
            "server.header_read_timeout",
            s.header_read_timeout,
            d::HEADER_READ_TIMEOUT_SECS,
        );
        let max_header_bytes = s.max_header_bytes.unwrap_or(d::MAX_HEADER_BYTES);
        if !(1024..=super::HARD_MAX_HEAD_BYTES as u64 / 2).contains(&max_header_bytes) {
            self.problems.push(Problem::new(
                "server.max_header_bytes",
                format!(
                    "must be between 1024 and {} (bytes)",
                    super::HARD_MAX_HEAD_BYTES / 2
                ),
            ));
        }
        let max_connections = s.max_connections.unwrap_or(d::MAX_CONNECTIONS);
        if !(1..=1_000_000).contains(&max_connections) {
            self.problems.push(Problem::new(
                "server.max_connections",
                "must be between 1 and 1000000 (connections)",
            ));
        }
        let idle_timeout = self.secs("server.idle_timeout", s.idle_timeout, d::IDLE_TIMEOUT_SECS);
        let shutdown_timeout = self.secs(
            "server.shutdown_timeout",
            s.shutdown_timeout,
            d::SHUTDOWN_TIMEOUT_SECS,
        );
        Some(ServerSettings {
            listen: listen?,
            tls_cert,
            tls_key,
            dev_certs,
            admin_listen,
            plain_listen,
            public_url,
            trusted_proxies,
            handshake_timeout,
            header_read_timeout,
            max_header_bytes: max_header_bytes as usize,
            max_connections: max_connections as usize,
            idle_timeout,
            shutdown_timeout,
        })
    }

    /// `[upstream]` and `[upstream.managed]` (its credentials go to `[auth]`).
    fn upstream(&mut self, u: RawUpstream) -> UpstreamSettings {
        let url = u.url.as_deref().and_then(|v| match UpstreamUrl::parse(v) {
            Ok(url) => Some(url),
            Err(m) => {
                self.problems
                    .push(Problem::new("upstream.url", format!("{v:?} {m}")));
                None
            }
        });
        let managed = u.managed.map(|m| ManagedSettings {
            binary: m.binary.unwrap_or_else(|| d::MANAGED_BINARY.into()),
            data_dir: PathBuf::from(m.data_dir.unwrap_or_else(|| d::MANAGED_DATA_DIR.into())),
        });
        if u.url.is_none() && managed.is_none() {
            self.problems.push(Problem::new(
                "upstream.url",
                "missing; set it to your registry (e.g. \"http://127.0.0.1:5000\") or add an [upstream.managed] section so regate runs one",
            ));
        }
        if let (Some(_), Some(url)) = (&managed, &url) {
            if !matches!(
                url.authority.host(),
                "127.0.0.1" | "localhost" | "[::1]" | "::1"
            ) {
                self.problems.push(Problem::new(
                    "upstream.url",
                    format!("with [upstream.managed] the registry listens on loopback only; use 127.0.0.1 (got {})", url.authority),
                ));
            }
        }
        if let Some(m) = &managed {
            if m.binary.trim().is_empty() {
                self.problems
                    .push(Problem::new("upstream.managed.binary", "must not be empty"));
            } else if super::resolve_binary(&m.binary).is_none() {
                self.problems.push(Problem::new(
                    "upstream.managed.binary",
                    format!("{:?}: {}", m.binary, super::missing_binary(&m.binary)),
                ));
            }
        }
        let connect_timeout = self.secs(
            "upstream.connect_timeout",
            u.connect_timeout,
            d::UPSTREAM_CONNECT_TIMEOUT_SECS,
        );
        let response_timeout = self.secs(
            "upstream.response_timeout",
            u.response_timeout,
            d::UPSTREAM_RESPONSE_TIMEOUT_SECS,
        );
        let up_idle = self.secs(
            "upstream.idle_timeout",
            u.idle_timeout,
            d::UPSTREAM_IDLE_TIMEOUT_SECS,
        );
        UpstreamSettings {
            url,
            managed,
            connect_timeout,
            response_timeout,
            idle_timeout: up_idle,
        }
    }

    /// `[state]`.
    fn state(&mut self, raw: RawState) -> StateSettings {
        let state_url = raw.url.as_deref().and_then(|v| match StateUrl::parse(v) {
            Ok(u) => Some(u),
            Err(m) => {
                self.problems.push(Problem::new("state.url", m));
                None
            }
        });
        StateSettings {
            dir: PathBuf::from(raw.dir.unwrap_or_else(|| d::STATE_DIR.into())),
            url: state_url,
        }
    }

    /// `[log]`.
    fn log(&mut self, raw: RawLog) -> LogSettings {
        let level = raw.level.unwrap_or_else(|| d::LOG_LEVEL.into());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            self.problems.push(Problem::new(
                "log.level",
                format!(
                    "{level:?} is not a level or filter; use error, warn, info, debug or trace"
                ),
            ));
        }
        let json = match raw.format.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                self.problems.push(Problem::new(
                    "log.format",
                    format!("{other:?} is not a format; use \"text\" or \"json\""),
                ));
                false
            }
        };
        LogSettings { level, json }
    }
}

/// Every section by its own check, in the order their problems are listed.
pub(super) fn validate(raw: RawConfig, _source: &str) -> Result<Settings, Vec<Problem>> {
    let mut c = Check {
        problems: Vec::new(),
    };
    let server = c.server(raw.server);
    let mut u = raw.upstream;
    let auth = super::auth::validate(
        raw.auth,
        raw.acl,
        u.username.take(),
        u.password_file.take(),
        &mut c.problems,
    );
    let audit = AuditSettings {
        file: raw.audit.file.map(PathBuf::from),
    };
    let upstream = c.upstream(u);
    let state = c.state(raw.state);
    let log = c.log(raw.log);
    let gc = super::gc::validate(raw.gc, upstream.managed.is_some(), &mut c.problems);
    let storage = super::storage::validate(
        raw.storage,
        gc.storage_root.as_deref(),
        upstream
            .managed
            .as_ref()
            .map(|m| m.data_dir.join("storage")),
        &mut c.problems,
    );
    let retention = super::retention::validate_retention(raw.retention, &mut c.problems);
    let protect = super::retention::validate_protect(raw.protect, &mut c.problems);
    let retention_schedule = super::retention::validate_schedule(
        raw.retention_schedule,
        !retention.is_empty(),
        gc.schedule.is_some(),
        &mut c.problems,
    );

    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    Ok(Settings {
        source: String::new(),
        server: server.expect("a bad listen address is a problem"),
        upstream,
        state,
        log,
        delete: DeleteSettings {
            protect_shared_digests: raw
                .delete
                .protect_shared_digests
                .unwrap_or(d::PROTECT_SHARED_DIGESTS),
        },
        gc,
        storage,
        auth,
        audit,
        retention,
        protect,
        retention_schedule,
        warnings: Vec::new(),
    })
}

fn parse_public_url(s: &str) -> Result<PublicUrl, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("is not a URL ({e})"))?;
    let scheme = match uri.scheme_str() {
        Some(x @ ("http" | "https")) => x.to_owned(),
        _ => return Err("must start with https:// (or http://)".into()),
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("must have no path: regate serves /v2/ at the root".into());
    }
    let authority = uri.authority().ok_or("has no host")?.to_string();
    Ok(PublicUrl { scheme, authority })
}

#[cfg(test)]
mod tests {
    use super::super::{ConfigError, Settings};

    fn load(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_toml(text, "test.toml", std::iter::empty())
    }

    #[test]
    fn minimal_external_upstream() {
        let s = load("[server]\ndev_certs = true\n[upstream]\nurl = \"http://127.0.0.1:5000\"\n")
            .unwrap();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:5443");
        assert_eq!(s.upstream.url.unwrap().origin(), "http://127.0.0.1:5000");
    }

    #[test]
    fn reports_every_problem_with_its_key() {
        let err = load(
            "[server]\nlisten = \"nonsense\"\ntls_cert = \"/nope/server.crt\"\ntls_key = \"/nope/server.key\"\npublic_url = \"ftp://x\"\n[upstream]\nurl = \"https://r:5000\"\n",
        )
        .unwrap_err();
        let keys: Vec<_> = err.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "server.listen",
                "server.tls_cert",
                "server.tls_key",
                "server.public_url",
                "upstream.url"
            ]
        );
        let text = err.to_string();
        assert!(text.starts_with("test.toml: 5 problems"), "{text}");
        assert!(text.contains("regate cert --dir /nope"), "{text}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load("[server]\nlisten_addr = \"x\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("listen_addr"), "{text}");
        assert!(text.contains("line 2"), "{text}");
    }

    #[test]
    fn environment_overrides_win() {
        let env = vec![
            (
                "REGATE_UPSTREAM__URL".to_string(),
                "http://127.0.0.1:6000".to_string(),
            ),
            ("REGATE_SERVER__DEV_CERTS".to_string(), "true".to_string()),
        ];
        let s = Settings::from_toml(
            "[upstream]\nurl = \"http://127.0.0.1:5000\"\n",
            "t",
            env.into_iter(),
        )
        .unwrap();
        assert_eq!(s.upstream.url.unwrap().origin(), "http://127.0.0.1:6000");
    }

    #[test]
    fn head_limits_have_defaults_and_bounds() {
        let base = "[upstream]\nurl = \"http://127.0.0.1:5000\"\n[server]\ndev_certs = true\n";
        let s = load(base).unwrap();
        assert_eq!(s.server.max_header_bytes, 32 * 1024);
        assert_eq!(s.server.header_read_timeout.as_secs(), 30);
        assert_eq!(s.server.max_connections, 4096);
        let s = load(&format!(
            "{base}max_header_bytes = 8192\nheader_read_timeout = \"5s\"\nmax_connections = 10\n"
        ))
        .unwrap();
        assert_eq!(s.server.max_connections, 10);
        assert_eq!(s.server.max_header_bytes, 8192);
        assert_eq!(s.server.header_read_timeout.as_secs(), 5);
        for bad in [
            "max_header_bytes = 10",
            "max_header_bytes = 10000000",
            "header_read_timeout = 0",
            "max_connections = 0",
        ] {
            let err = load(&format!("{base}{bad}\n")).unwrap_err();
            let key = bad.split(' ').next().unwrap();
            assert!(err.to_string().contains(&format!("server.{key}")), "{err}");
        }
    }

    #[test]
    fn every_duration_key_takes_one_syntax_in_the_file_and_the_environment() {
        let text = "[server]\ndev_certs = true\nidle_timeout = \"15m\"\nshutdown_timeout = 90\n[upstream]\nurl = \"http://127.0.0.1:5000\"\nresponse_timeout = \"12h\"\n[auth]\ncache_ttl = \"0s\"\n[auth.token]\nrefresh_ttl = \"30d\"\nttl = \"1h 30m\"\n[gc]\ndrain_timeout = 20\n";
        let env = vec![
            ("REGATE_GC__TIMEOUT".to_string(), "2h".to_string()),
            ("REGATE_AUTH__TOKEN__LEEWAY".to_string(), "90".to_string()),
        ];
        let s = Settings::from_toml(text, "t", env.into_iter()).unwrap();
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert_eq!(s.server.idle_timeout.as_secs(), 900);
        assert_eq!(s.server.shutdown_timeout.as_secs(), 90);
        assert_eq!(s.upstream.response_timeout.as_secs(), 12 * 3600);
        assert_eq!(s.auth.cache_ttl.as_secs(), 0);
        assert_eq!(s.auth.token.refresh_ttl.as_secs(), 30 * 86400);
        assert_eq!(s.auth.token.ttl.as_secs(), 5400);
        assert_eq!(s.auth.token.leeway.as_secs(), 90);
        assert_eq!(s.gc.drain_timeout.as_secs(), 20);
        assert_eq!(s.gc.timeout.as_secs(), 7200);

        let err = Settings::from_toml(
            "[server]\ndev_certs = true\nidle_timeout = \"soon\"\n[upstream]\nurl = \"http://127.0.0.1:5000\"\n",
            "t",
            vec![("REGATE_AUTH__TOKEN__TTL".to_string(), "5 fortnights".to_string())].into_iter(),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("server.idle_timeout: \"soon\" is not a duration"),
            "{text}"
        );
        assert!(text.contains("auth.token.ttl: \"5 fortnights\""), "{text}");
        assert!(text.contains("\"15m\""), "{text}");
    }

    #[test]
    fn old_secs_names_are_read_with_a_warning() {
        let base = "[upstream]\nurl = \"http://127.0.0.1:5000\"\n[server]\ndev_certs = true\n";
        let s = load(&format!(
            "{base}idle_timeout_secs = 5\n[auth]\ncache_ttl_secs = 7\n"
        ))
        .unwrap();
        assert_eq!(s.server.idle_timeout.as_secs(), 5);
        assert_eq!(s.auth.cache_ttl.as_secs(), 7);
        let keys: Vec<_> = s.warnings.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(keys, ["server.idle_timeout_secs", "auth.cache_ttl_secs"]);
        assert!(s.warnings[0].message.contains("server.idle_timeout"));
        // An old name from the environment overrides the file's new one.
        let s = Settings::from_toml(
            &format!("{base}idle_timeout = 9\n"),
            "t",
            vec![(
                "REGATE_SERVER__IDLE_TIMEOUT_SECS".to_string(),
                "4".to_string(),
            )]
            .into_iter(),
        )
        .unwrap();
        assert_eq!(s.server.idle_timeout.as_secs(), 4);
        assert_eq!(s.warnings.len(), 1);
        // Both names in the file: an error naming the old one.
        let err = load(&format!("{base}idle_timeout = 9\nidle_timeout_secs = 4\n")).unwrap_err();
        assert!(
            err.to_string().contains("server.idle_timeout_secs"),
            "{err}"
        );
        // An old name and another mistake: the mistake is still reported.
        let err = load(&format!("{base}idle_timeout_secs = 4\nlisten_addr = 1\n")).unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");
    }

    #[test]
    fn missing_upstream_says_what_to_do() {
        let err = load("[server]\ndev_certs = true\n").unwrap_err();
        assert!(err.to_string().contains("[upstream.managed]"));
    }
}
