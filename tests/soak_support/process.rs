//! The regate binary under test, killable and restartable on the same
//! ports: the first start binds port 0, later starts reuse the ports it got.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::common::regate::RegateProcess;

pub struct Regate {
    dir: PathBuf,
    /// The config with fixed ports (after the first start).
    config: Mutex<String>,
    process: Mutex<Option<RegateProcess>>,
    pub url: String,
    pub host: String,
    pub admin_url: String,
    pub log_path: PathBuf,
}

/// `config` with its `listen`, `plain_listen` and `admin_listen` lines set to
/// the addresses a running regate bound.
fn pin_ports(config: &str, p: &RegateProcess) -> String {
    let addr = |u: &Option<String>| {
        u.as_deref()
            .unwrap()
            .trim_start_matches("http://")
            .to_owned()
    };
    config
        .lines()
        .map(|l| {
            if l.starts_with("listen =") {
                format!("listen = {:?}", p.host)
            } else if l.starts_with("plain_listen =") {
                format!("plain_listen = {:?}", addr(&p.plain_url))
            } else if l.starts_with("admin_listen =") {
                format!("admin_listen = {:?}", addr(&p.admin_url))
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Regate {
    /// Starts regate (blocking) with `config`.
    pub fn start(dir: &Path, config: &str) -> Regate {
        let p = RegateProcess::spawn(dir, config, &[]);
        let pinned = pin_ports(config, &p);
        Regate {
            dir: dir.to_owned(),
            config: Mutex::new(pinned),
            url: p.url.clone(),
            host: p.host.clone(),
            admin_url: p.admin_url.clone().unwrap(),
            log_path: p.log_path.clone(),
            process: Mutex::new(Some(p)),
        }
    }

    /// SIGKILL (blocking until it is reaped).
    pub fn kill(&self) {
        if let Some(mut p) = self.process.lock().unwrap().take() {
            p.kill();
        }
    }

    /// Starts it again on the same ports and waits until it is ready
    /// (blocking); `edit` may change the config first.
    pub fn restart(&self, edit: impl FnOnce(&str) -> String) {
        let mut config = self.config.lock().unwrap();
        *config = edit(&config);
        let p = RegateProcess::spawn(&self.dir, &config, &[]);
        assert_eq!(p.host, self.host, "restarted on other ports");
        *self.process.lock().unwrap() = Some(p);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}
