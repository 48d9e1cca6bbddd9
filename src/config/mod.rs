//! Configuration: the TOML file, its environment overrides, defaults and
//! validation into typed [`Settings`].
//!
//! Owns every key name and every default (in [`defaults`]). Loading happens in
//! three steps: parse the file into `raw` structs (every unknown or mistyped
//! key is an error, all reported at once by `schema`),
//! apply `REGATE_<SECTION>__<KEY>` overrides, then validate everything at once
//! so an operator sees every problem, each naming the file, the key and what
//! to do. Relative paths are relative to the working directory.

pub mod auth;
pub mod duration;
mod env_override;
pub mod gc;
mod notes;
mod problem;
mod raw;
mod renamed;
pub mod retention;
mod schema;
mod state_url;
pub mod storage;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use auth::{AuditSettings, AuthMode, AuthSettings, TokenSettings};
pub use problem::Problem;
pub use state_url::{RootCert, SslMode, StateTls, StateUrl};

/// The bound of hyper's head buffer, which the server sets to twice
/// `server.max_header_bytes`: so that key may be at most half of this.
pub const HARD_MAX_HEAD_BYTES: usize = 1024 * 1024;

/// The environment variable that overrides `key` (`server.listen` ->
/// `REGATE_SERVER__LISTEN`), for messages that tell an operator where to look.
pub fn env_var(key: &str) -> String {
    format!(
        "{}{}",
        env_override::PREFIX,
        key.to_ascii_uppercase().replace('.', "__")
    )
}

/// Every default value, in one place.
pub mod defaults {
    pub const CONFIG_FILE: &str = "config/regate.toml";
    pub const LISTEN: &str = "127.0.0.1:5443";
    pub const ADMIN_LISTEN: &str = "127.0.0.1:5444";
    pub const TLS_CERT: &str = "certs/server.crt";
    pub const TLS_KEY: &str = "certs/server.key";
    pub const DEV_CERTS: bool = false;
    pub const HANDSHAKE_TIMEOUT_SECS: u64 = 10;
    pub const HEADER_READ_TIMEOUT_SECS: u64 = 30;
    pub const MAX_HEADER_BYTES: u64 = 32 * 1024;
    pub const MAX_CONNECTIONS: u64 = 4096;
    /// Connections the admin listener serves at once (its own budget, so
    /// probes and metrics answer while the registry listeners are full).
    pub const ADMIN_MAX_CONNECTIONS: usize = 64;
    pub const IDLE_TIMEOUT_SECS: u64 = 120;
    pub const SHUTDOWN_TIMEOUT_SECS: u64 = 30;
    pub const UPSTREAM_CONNECT_TIMEOUT_SECS: u64 = 5;
    pub const UPSTREAM_RESPONSE_TIMEOUT_SECS: u64 = 300;
    pub const UPSTREAM_IDLE_TIMEOUT_SECS: u64 = 120;
    pub const MANAGED_BINARY: &str = "docker-registry";
    pub const MANAGED_DATA_DIR: &str = "data/registry";
    pub const STATE_DIR: &str = "data/state";
    pub const LOG_LEVEL: &str = "info";
    pub const PROTECT_SHARED_DIGESTS: bool = false;
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the configuration came from (a path, or a label for tests).
    pub source: String,
    pub server: ServerSettings,
    pub upstream: UpstreamSettings,
    pub state: StateSettings,
    pub log: LogSettings,
    pub delete: DeleteSettings,
    pub gc: gc::GcSettings,
    pub storage: storage::StorageSettings,
    pub auth: AuthSettings,
    pub audit: AuditSettings,
    /// `[[retention]]`, in file order.
    pub retention: Vec<retention::RetentionRule>,
    /// `[[protect]]`, in file order.
    pub protect: Vec<retention::ProtectRule>,
    pub retention_schedule: retention::RetentionSchedule,
    /// Deprecated keys in use (each with its new name): logged as warnings
    /// at start, printed by `check-config`.
    pub warnings: Vec<Problem>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// The TLS listener for registry clients.
    pub listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Create a local CA and a server certificate if the files are missing.
    pub dev_certs: bool,
    /// Plain HTTP: health, readiness, metrics and the admin API.
    pub admin_listen: Option<SocketAddr>,
    /// Optional plain-HTTP registry listener, for use behind a TLS-terminating balancer.
    pub plain_listen: Option<SocketAddr>,
    /// The URL clients use to reach regate, when it differs from their `Host`.
    pub public_url: Option<PublicUrl>,
    /// Load balancers whose forwarding headers name the client and its scheme.
    pub trusted_proxies: crate::forwarded::TrustedProxies,
    pub handshake_timeout: Duration,
    /// How long a client may take to send a request's headers (and, on a
    /// new connection, its first bytes).
    pub header_read_timeout: Duration,
    /// The largest request head (target and headers) answered with
    /// anything but 431.
    pub max_header_bytes: usize,
    /// Client connections the registry listeners (TLS and plain together)
    /// hold at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub shutdown_timeout: Duration,
}

/// `scheme://host[:port]` with no path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    pub scheme: String,
    pub authority: String,
}

impl PublicUrl {
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// The registry's origin (`http://host:port`). In managed mode without a
    /// configured URL it is chosen at start-up.
    pub url: Option<UpstreamUrl>,
    pub managed: Option<ManagedSettings>,
    pub connect_timeout: Duration,
    /// How long to wait for response headers once the request was sent.
    pub response_timeout: Duration,
    /// How long a body may stall, either way.
    pub idle_timeout: Duration,
}

/// An upstream origin: `http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub authority: http::uri::Authority,
}

impl UpstreamUrl {
    pub fn origin(&self) -> String {
        format!("http://{}", self.authority)
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let uri: http::Uri = s.parse().map_err(|e| format!("not a URL ({e})"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err("https upstreams are not supported yet; run the registry on loopback with plain HTTP".into())
            }
            _ => return Err("must start with http://".into()),
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err("must be an origin only (http://host:port), without a path".into());
        }
        let authority = uri.authority().cloned().ok_or("has no host")?;
        Ok(UpstreamUrl { authority })
    }
}

#[derive(Debug, Clone)]
pub struct ManagedSettings {
    pub binary: String,
    pub data_dir: PathBuf,
}

/// What to say when [`resolve_binary`] finds nothing: a path that is not
/// there, or a name not on PATH, and what to do.
pub fn missing_binary(binary: &str) -> String {
    let what = if binary.contains('/') {
        "no such file".to_owned()
    } else {
        "not found on PATH".to_owned()
    };
    format!("{what}. Install it (Debian/Ubuntu: `apt-get install docker-registry`), set upstream.managed.binary to its path, or remove [upstream.managed] and point upstream.url at an existing registry")
}

/// Finds `binary` (`upstream.managed.binary`) as a path or on PATH: checked
/// by validation, and again by `managed` when it starts the registry.
pub fn resolve_binary(binary: &str) -> Option<PathBuf> {
    if binary.contains('/') {
        let p = PathBuf::from(binary);
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file())
}

#[derive(Debug, Clone)]
pub struct StateSettings {
    pub dir: PathBuf,
    /// PostgreSQL shared by several replicas; `None`: SQLite in `dir`.
    pub url: Option<StateUrl>,
}

#[derive(Debug, Clone)]
pub struct DeleteSettings {
    pub protect_shared_digests: bool,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub level: String,
    pub json: bool,
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the configuration ({source}); pass --config FILE or create it (an example is config/regate.toml)")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {}", format_problems(.problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Read { source, .. } => vec![Problem::new("(file)", source.to_string())],
            ConfigError::Invalid { problems, .. } => problems.clone(),
        }
    }
}

fn format_problems(problems: &[Problem]) -> String {
    let mut s = format!(
        "{} problem{} in the configuration:",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        s.push_str(&format!("\n  - {}: {}", p.key, p.message));
    }
    s
}

impl Settings {
    /// Loads `path`, applying overrides from the process environment.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::from_toml(&text, &file, std::env::vars())
    }

    /// Parses configuration text; `source` names it in errors.
    pub fn from_toml(
        text: &str,
        source: &str,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let invalid = |problems| ConfigError::Invalid {
            file: source.to_owned(),
            problems,
        };
        // First parse the text alone, so errors carry the file's line numbers
        // (unless it uses old key names: then the renamed document is checked).
        let mut doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| invalid(vec![Problem::from_toml(&e)]))?;
        let (mut warnings, renamed_problems) = renamed::apply(&mut doc, false);
        if !renamed_problems.is_empty() {
            return Err(invalid(renamed_problems));
        }
        // Then its shape: every unknown key and wrongly typed value at once
        // (lines are found for keys written with their current names).
        let shape = schema::problems(&doc, text);
        if !shape.is_empty() {
            return Err(invalid(shape));
        }
        let applied = env_override::apply(&mut doc, env)
            .map_err(|m| invalid(vec![Problem::new("(environment)", m)]))?;
        // An old name set from the environment overrides the file's new one.
        warnings.extend(renamed::apply(&mut doc, true).0);
        let shape = schema::problems(&doc, "");
        if !shape.is_empty() {
            let from_env = |key: &str| {
                applied
                    .iter()
                    .find(|a| a.key == key)
                    .map(|a| format!(" (set by the environment variable {})", a.var))
                    .unwrap_or_default()
            };
            return Err(invalid(
                shape
                    .into_iter()
                    .map(|p| {
                        Problem::new(p.key.clone(), format!("{}{}", p.message, from_env(&p.key)))
                    })
                    .collect(),
            ));
        }
        let raw: raw::RawConfig =
            toml::Value::Table(doc)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    let vars: Vec<_> = applied
                        .iter()
                        .map(|a| format!("{} ({})", a.var, a.key))
                        .collect();
                    invalid(vec![Problem::new(
                        "(environment)",
                        format!("{} (after applying {})", e.message(), vars.join(", ")),
                    )])
                })?;
        validate::validate(raw, source)
            .map(|mut s| {
                s.source = source.to_owned();
                s.warnings = warnings;
                s
            })
            .map_err(invalid)
    }
}
