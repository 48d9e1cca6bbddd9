//! regate itself, in-process (`Regate::start`) or as the real binary
//! (`RegateProcess`, for crash and memory tests), with a generated CA.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use regate::certs::CertFiles;
use regate::config::Settings;
use regate::server::RunningServer;

/// Certificates for 127.0.0.1 and localhost, and a directory holding only the
/// CA (what skopeo's --cert-dir wants).
pub struct TestCerts {
    pub files: CertFiles,
    pub trust_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCerts {
    pub fn new() -> Self {
        Self::for_hosts(&["127.0.0.1", "localhost"])
    }

    /// A certificate naming `hosts` (names or IP addresses).
    pub fn for_hosts(hosts: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let files = regate::certs::generate(&dir.path().join("certs"), &hosts).unwrap();
        let trust_dir = dir.path().join("trust");
        std::fs::create_dir_all(&trust_dir).unwrap();
        std::fs::copy(&files.ca_cert, trust_dir.join("ca.crt")).unwrap();
        TestCerts {
            files,
            trust_dir,
            _dir: dir,
        }
    }
}

/// The TOML for a regate in front of `upstream`, on ephemeral ports; `extra`
/// is appended (more sections).
pub fn config_toml(upstream: &str, certs: &TestCerts, state_dir: &Path, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nplain_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ntls_cert = {:?}\ntls_key = {:?}\nshutdown_timeout_secs = 2\n[upstream]\nurl = {:?}\n[state]\ndir = {:?}\n{extra}",
        certs.files.server_cert.display().to_string(),
        certs.files.server_key.display().to_string(),
        upstream,
        state_dir.display().to_string(),
    )
}

/// The variable that runs the suite with fast reads on or off.
pub const FAST_READS_VAR: &str = "REGATE_TEST_FAST_READS";

/// Overrides that follow `REGATE_TEST_FAST_READS` (`on`/`1` or `off`/`0`;
/// unset: the configuration's own default): `on` points `storage.root` at
/// the storage of a registry this process started and turns fast reads on;
/// `off` turns them off, managed mode included. A test that sets
/// `[storage]` itself (in its TOML or its environment) is left alone.
pub fn fast_reads_env(
    upstream: &str,
    extra: &str,
    env: &[(String, String)],
) -> Vec<(String, String)> {
    let own =
        extra.contains("[storage]") || env.iter().any(|(k, _)| k.starts_with("REGATE_STORAGE__"));
    let wanted = std::env::var(FAST_READS_VAR).ok();
    match wanted.as_deref() {
        _ if own => vec![],
        None | Some("") => vec![],
        Some("on" | "1") => match super::registry::storage_of(upstream) {
            Some(root) => vec![
                ("REGATE_STORAGE__ROOT".into(), root.display().to_string()),
                ("REGATE_STORAGE__FAST_READS".into(), "true".into()),
            ],
            None => vec![],
        },
        Some("off" | "0") => vec![("REGATE_STORAGE__FAST_READS".into(), "false".into())],
        Some(other) => panic!("{FAST_READS_VAR}={other:?}: use on, off, 1 or 0"),
    }
}

pub struct Regate {
    pub server: Option<RunningServer>,
    pub certs: TestCerts,
    /// `https://127.0.0.1:PORT`
    pub url: String,
    /// `127.0.0.1:PORT`, as skopeo wants it.
    pub host: String,
    pub plain_url: String,
    pub admin_url: String,
    pub state_dir: tempfile::TempDir,
    upstream: String,
    extra: String,
    env: Vec<(String, String)>,
}

impl Regate {
    /// regate in front of `upstream` with default settings.
    pub async fn start(upstream: &str) -> Self {
        Self::start_with(upstream, "").await
    }

    /// regate with extra TOML sections appended to the test config.
    pub async fn start_with(upstream: &str, extra: &str) -> Self {
        Self::start_in(
            upstream,
            extra,
            TestCerts::new(),
            tempfile::tempdir().unwrap(),
            vec![],
        )
        .await
    }

    /// Like [`Regate::start_with`], with environment overrides (`REGATE_...`).
    pub async fn start_with_env(upstream: &str, extra: &str, env: Vec<(String, String)>) -> Self {
        Self::start_in(
            upstream,
            extra,
            TestCerts::new(),
            tempfile::tempdir().unwrap(),
            env,
        )
        .await
    }

    /// `env`: environment overrides of the config (`REGATE_...`).
    async fn start_in(
        upstream: &str,
        extra: &str,
        certs: TestCerts,
        state_dir: tempfile::TempDir,
        env: Vec<(String, String)>,
    ) -> Self {
        let text = config_toml(upstream, &certs, state_dir.path(), extra);
        let mut env_all = env.clone();
        env_all.extend(fast_reads_env(upstream, extra, &env));
        let settings = Settings::from_toml(&text, "test config", env_all.into_iter())
            .expect("valid test config");
        let server = regate::server::start(settings)
            .await
            .expect("regate starts");
        let host = server.tls_addr.to_string();
        Regate {
            url: format!("https://{host}"),
            host,
            plain_url: format!("http://{}", server.plain_addr.unwrap()),
            admin_url: format!("http://{}", server.admin_addr.unwrap()),
            server: Some(server),
            certs,
            state_dir,
            upstream: upstream.to_owned(),
            extra: extra.to_owned(),
            env,
        }
    }

    /// Stops gracefully and starts again with the same config, certificates
    /// and state directory (on new ports).
    pub async fn restart(mut self) -> Self {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        Self::start_in(
            &self.upstream,
            &self.extra,
            self.certs,
            self.state_dir,
            self.env,
        )
        .await
    }

    /// An HTTP client that trusts only the test CA.
    pub fn client(&self) -> reqwest::Client {
        client_trusting(&self.certs.files.ca_cert)
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

/// A client trusting only `ca` that sends `authorization` with every request.
pub fn client_sending(ca: &Path, authorization: &str) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", authorization.parse().unwrap());
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .default_headers(headers)
        .no_proxy()
        .build()
        .unwrap()
}

pub fn client_trusting(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .no_proxy()
        .build()
        .unwrap()
}

/// The regate binary as a child process.
pub struct RegateProcess {
    pub child: Child,
    pub pid: u32,
    pub url: String,
    pub host: String,
    pub plain_url: Option<String>,
    pub admin_url: Option<String>,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

impl RegateProcess {
    /// Starts `regate serve` with `config_text` (written into `dir`).
    pub fn spawn(dir: &Path, config_text: &str, env: &[(&str, &str)]) -> Self {
        let config_path = dir.join("regate.toml");
        std::fs::write(&config_path, config_text).unwrap();
        let ready = dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log_path = dir.join("regate.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_regate"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .arg("--ready-file")
            .arg(&ready);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // REGATE_TEST_FAST_READS=off turns fast reads off here too (a managed
        // registry's storage is read by default); `on` changes nothing for a
        // child: it reads the storage whenever its configuration names one.
        let own = config_text.contains("[storage]")
            || env.iter().any(|(k, _)| k.starts_with("REGATE_STORAGE__"));
        if !own && matches!(std::env::var(FAST_READS_VAR).as_deref(), Ok("off" | "0")) {
            cmd.env("REGATE_STORAGE__FAST_READS", "false");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the regate binary");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                let host = v["tls"].as_str().unwrap().to_owned();
                return RegateProcess {
                    pid: child.id(),
                    url: format!("https://{host}"),
                    host,
                    plain_url: v["plain"].as_str().map(|a| format!("http://{a}")),
                    admin_url: v["admin"].as_str().map(|a| format!("http://{a}")),
                    child,
                    config_path,
                    log_path,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "regate exited early ({status}):\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "regate did not become ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Peak resident memory so far, in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid, "VmHWM:")
    }

    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid, "VmRSS:")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the binary with `REGATE_TEST_FAULT=<fault>`, sends it
    /// `request` (given its URL), which must fail because the process aborts
    /// midway, and waits for that abort.
    pub async fn crash_during<F, Fut>(dir: &Path, config: &str, fault: &str, request: F)
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<reqwest::Response, reqwest::Error>>,
    {
        let mut crashing = RegateProcess::spawn(dir, config, &[("REGATE_TEST_FAULT", fault)]);
        let r = request(crashing.url.clone()).await;
        assert!(
            r.is_err(),
            "{fault}: the process should have died mid-request, got {:?}",
            r.map(|r| r.status())
        );
        let status = tokio::task::spawn_blocking(move || crashing.child.wait().unwrap())
            .await
            .unwrap();
        assert!(!status.success(), "{fault}: aborted");
    }
}

pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

impl Drop for RegateProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
