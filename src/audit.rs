//! The audit log: one JSON line per security-relevant event (authentication
//! failures, denied requests, rate limiting, deletes), to `[audit] file` when
//! configured and always to tracing (target `regate::audit`).
//!
//! Owns [`Audit`] and [`Event`]. An event carries the time, the client
//! address, the account and what was asked; it has no field that could hold
//! a password or a token, so none can be logged by mistake. Calls the
//! filesystem and tracing only.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

/// One thing that happened.
#[derive(Debug, Clone, Serialize)]
pub struct Event<'a> {
    /// `auth_failure`, `denied`, `rate_limited`, `delete`, `token_refused`.
    pub event: &'static str,
    pub client: IpAddr,
    /// The account claimed or authenticated; `None` for anonymous.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

impl<'a> Event<'a> {
    pub fn new(event: &'static str, client: IpAddr) -> Self {
        Event {
            event,
            client,
            account: None,
            method: None,
            repository: None,
            reference: None,
            digest: None,
            status: None,
            reason: None,
        }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    event: &'a Event<'a>,
}

pub struct Audit {
    file: Option<Mutex<std::fs::File>>,
}

impl Audit {
    /// Opens `file` for appending (created owner-only), or logs to tracing only.
    pub fn open(file: Option<&Path>) -> std::io::Result<Audit> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = match file {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                Some(Mutex::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .mode(0o600)
                        .open(p)?,
                ))
            }
            None => None,
        };
        Ok(Audit { file })
    }

    pub fn record(&self, event: &Event<'_>) {
        let time = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let line = serde_json::to_string(&Line { time, event }).unwrap_or_default();
        tracing::info!(target: "regate::audit", "{line}");
        if let Some(f) = &self.file {
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = f.write_all(format!("{line}\n").as_bytes()) {
                tracing::error!("cannot write the audit log: {e}");
            }
        }
    }
}
