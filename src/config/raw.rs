//! The configuration file exactly as written: serde structs with
//! `deny_unknown_fields`, every key optional. Defaults and checks live in
//! `validate`, so this file only says which keys exist.

use serde::Deserialize;

use super::duration::RawDuration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub state: RawState,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub delete: RawDelete,
    #[serde(default)]
    pub gc: super::gc::RawGc,
    #[serde(default)]
    pub storage: super::storage::RawStorage,
    #[serde(default)]
    pub auth: super::auth::RawAuth,
    #[serde(default)]
    pub acl: Vec<super::auth::RawAclRule>,
    #[serde(default)]
    pub audit: super::auth::RawAudit,
    #[serde(default)]
    pub retention: Vec<super::retention::RawRetentionRule>,
    #[serde(default)]
    pub protect: Vec<super::retention::RawProtect>,
    #[serde(default)]
    pub retention_schedule: super::retention::RawRetentionSchedule,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// Create a local CA and server certificate when the files are missing.
    pub dev_certs: Option<bool>,
    pub admin_listen: Option<String>,
    pub plain_listen: Option<String>,
    pub public_url: Option<String>,
    /// Peers (addresses or CIDRs) whose `Forwarded`/`X-Forwarded-*` headers
    /// say who the client is and which scheme it used.
    pub trusted_proxies: Option<Vec<String>>,
    pub handshake_timeout: Option<RawDuration>,
    pub header_read_timeout: Option<RawDuration>,
    pub max_header_bytes: Option<u64>,
    pub max_connections: Option<u64>,
    pub idle_timeout: Option<RawDuration>,
    pub shutdown_timeout: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: Option<String>,
    pub connect_timeout: Option<RawDuration>,
    pub response_timeout: Option<RawDuration>,
    pub idle_timeout: Option<RawDuration>,
    pub managed: Option<RawManaged>,
    /// Credentials regate sends upstream (when the registry has its own auth).
    pub username: Option<String>,
    pub password_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawManaged {
    pub binary: Option<String>,
    pub data_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub dir: Option<String>,
    pub url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub level: Option<String>,
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDelete {
    /// Refuse a delete by digest that would also remove tags (409).
    pub protect_shared_digests: Option<bool>,
}
