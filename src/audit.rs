//! The audit log: one JSON line per security-relevant event (authentication
//! failures, denied requests, rate limiting, deletes), to `[audit] file` when
//! configured and always to tracing (target `regate::audit`).
//!
//! Owns [`Audit`] and [`Event`]. An event carries the time, the client
//! address, the account and what was asked; it has no field that could hold
//! a password or a token, so none can be logged by mistake. The file is
//! written by a thread of its own, so a request never waits on the disk;
//! when its queue is full a line is written by the request itself, late
//! rather than lost. Calls the filesystem and tracing only.

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
    file: Option<AuditFile>,
}

/// The audit file and the thread that writes it, so a request never waits
/// on the disk (a flood of failed logins writes a line each).
struct AuditFile {
    lines: std::sync::mpsc::SyncSender<String>,
    /// Shared with the writer; used directly only when its queue is full,
    /// so a line is late rather than lost.
    file: std::sync::Arc<Mutex<std::fs::File>>,
}

/// Lines queued for the writer thread before a request writes its own.
const QUEUE: usize = 4096;

impl Audit {
    /// Opens `file` for appending (created owner-only), or logs to tracing only.
    pub fn open(file: Option<&Path>) -> std::io::Result<Audit> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = match file {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                let f = std::sync::Arc::new(Mutex::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .mode(0o600)
                        .open(p)?,
                ));
                let (lines, queue) = std::sync::mpsc::sync_channel::<String>(QUEUE);
                let writer = std::sync::Arc::clone(&f);
                std::thread::Builder::new()
                    .name("regate-audit".into())
                    .spawn(move || {
                        // Ends when the Audit is dropped, after the last line.
                        for line in queue {
                            write_line(&writer, &line);
                        }
                    })?;
                Some(AuditFile { lines, file: f })
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
        if let Some(a) = &self.file {
            if let Err(e) = a.lines.try_send(format!("{line}\n")) {
                let line = match e {
                    std::sync::mpsc::TrySendError::Full(l)
                    | std::sync::mpsc::TrySendError::Disconnected(l) => l,
                };
                write_line(&a.file, &line);
            }
        }
    }
}

fn write_line(file: &Mutex<std::fs::File>, line: &str) {
    let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = f.write_all(line.as_bytes()) {
        tracing::error!("cannot write the audit log: {e}");
    }
}
