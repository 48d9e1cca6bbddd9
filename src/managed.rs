//! The managed registry: regate runs `docker-registry serve` itself.
//!
//! Owns the registry's generated config (filesystem storage under `data_dir`,
//! deletes enabled, a fixed `http.secret`, a loopback address, no in-memory
//! blob descriptor cache), the child process (started with no `REGISTRY_*`
//! variable but the ones regate means), waiting until `/v2/` answers,
//! restarting it when it dies, and stopping it on shutdown. The config holds
//! the `http.secret`, so it is written 0600 like the secret file; the
//! child's log lines are passed through with upload `_state` values and
//! other credential-shaped values redacted ([`redact`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{missing_binary, resolve_binary, ManagedSettings, UpstreamUrl};
use crate::metrics::Metrics;
use crate::proxy::UpstreamClient;

#[derive(Debug, thiserror::Error)]
pub enum ManagedError {
    #[error("upstream.managed.binary = {binary:?}: {}", missing_binary(.binary))]
    BinaryNotFound { binary: String },
    #[error("upstream.managed.data_dir = {dir}: {source}")]
    DataDir { dir: String, source: std::io::Error },
    #[error("cannot start {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("the managed registry did not become ready on {url} within {secs}s: {last}. Its configuration, written by regate, is {config}; `{binary} serve {config}` shows why")]
    NotReady {
        url: String,
        secs: u64,
        last: String,
        binary: String,
        config: String,
    },
}

fn free_loopback_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The registry configuration regate writes for the child.
pub fn registry_config(storage: &Path, addr: &str, secret: &str) -> String {
    // Values are paths and hex produced here; quote them as YAML strings.
    format!(
        "version: 0.1\n\
         log:\n  level: info\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {storage:?}\n  delete:\n    enabled: true\n\
         http:\n  addr: {addr:?}\n  secret: {secret:?}\n",
        storage = storage.display().to_string(),
    )
}

/// Paths of the managed registry's files.
#[derive(Debug, Clone)]
pub struct ManagedPaths {
    pub config: PathBuf,
    pub storage: PathBuf,
}

pub struct ManagedRegistry {
    url: UpstreamUrl,
    paths: ManagedPaths,
    stop: watch::Sender<bool>,
    supervisor: JoinHandle<()>,
}

impl ManagedRegistry {
    pub async fn start(
        settings: &ManagedSettings,
        url: Option<&UpstreamUrl>,
        client: &UpstreamClient,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ManagedError> {
        let binary =
            resolve_binary(&settings.binary).ok_or_else(|| ManagedError::BinaryNotFound {
                binary: settings.binary.clone(),
            })?;
        let dir_err = |source| ManagedError::DataDir {
            dir: settings.data_dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(settings.data_dir.join("storage")).map_err(dir_err)?;
        let data_dir = settings.data_dir.canonicalize().map_err(dir_err)?;
        let secret = load_or_create_secret(&data_dir.join("http.secret")).map_err(dir_err)?;
        let paths = ManagedPaths {
            config: data_dir.join("registry.yml"),
            storage: data_dir.join("storage"),
        };

        let fixed_port = url.map(|u| u.authority.clone());
        let attempts = if fixed_port.is_some() { 1 } else { 3 };
        let mut last_err = None;
        for _ in 0..attempts {
            let authority: http::uri::Authority = match &fixed_port {
                Some(a) => a.clone(),
                None => {
                    let port = free_loopback_port().map_err(dir_err)?;
                    format!("127.0.0.1:{port}")
                        .parse()
                        .expect("valid authority")
                }
            };
            write_private(
                &paths.config,
                registry_config(&paths.storage, authority.as_str(), &secret).as_bytes(),
            )
            .map_err(dir_err)?;
            let url = UpstreamUrl { authority };
            let mut child = spawn(&binary, &paths.config)?;
            match wait_ready(
                &url,
                client,
                &mut child,
                Duration::from_secs(15),
                (&binary, &paths.config),
            )
            .await
            {
                Ok(()) => {
                    tracing::info!(url = %url.origin(), storage = %paths.storage.display(), "managed registry is ready");
                    let (stop, stop_rx) = watch::channel(false);
                    let supervisor = tokio::spawn(supervise(
                        binary,
                        paths.config.clone(),
                        url.clone(),
                        client.clone(),
                        child,
                        stop_rx,
                        metrics,
                    ));
                    return Ok(ManagedRegistry {
                        url,
                        paths,
                        stop,
                        supervisor,
                    });
                }
                Err(e) => {
                    let _ = child.kill().await;
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    pub fn url(&self) -> &UpstreamUrl {
        &self.url
    }

    pub fn paths(&self) -> &ManagedPaths {
        &self.paths
    }

    /// Stops the registry: SIGTERM, then SIGKILL after ten seconds.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.supervisor.await;
    }
}

fn load_or_create_secret(path: &Path) -> std::io::Result<String> {
    if let Ok(s) = std::fs::read_to_string(path) {
        if !s.trim().is_empty() {
            return Ok(s.trim().to_owned());
        }
    }
    let secret = hex::encode(rand::random::<[u8; 32]>());
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(secret.as_bytes())?;
    Ok(secret)
}

/// Writes `bytes` to `path`, readable by regate's user only (0600), also
/// when the file already existed with a wider mode.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)
}

/// Query and form keys whose values are credentials (lowercase).
const SECRET_KEYS: [&str; 9] = [
    "_state",
    "password",
    "passwd",
    "secret",
    "token",
    "access_token",
    "refresh_token",
    "client_secret",
    "authorization",
];

/// A line of the registry's log with credential-shaped values replaced by
/// `REDACTED`: the value after `KEY=` or `KEY: ` (quoted or not) for every key in
/// [`SECRET_KEYS`] (case-insensitive; `_state` appears in upload URLs on
/// every upload error at `info`), up to the next `&`, `"`, `'`, `,`, `;` or
/// whitespace (after `Basic `/`Bearer `, the credential itself).
pub fn redact(line: &str) -> std::borrow::Cow<'_, str> {
    let lower = line.to_ascii_lowercase();
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    for key in SECRET_KEYS {
        let mut from = 0;
        while let Some(i) = lower[from..].find(key).map(|i| i + from) {
            from = i + key.len();
            // Whole keys only: `x_state=` or `mytoken=` are other keys.
            let before = lower[..i].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &lower[from..];
            let sep = if rest.starts_with('=') {
                1
            } else if rest.starts_with(": ") {
                2
            } else if rest.starts_with(':') {
                1
            } else {
                continue;
            };
            let mut start = from + sep;
            if lower[start..].starts_with(['"', '\'']) {
                start += 1;
            }
            for scheme in ["basic ", "bearer "] {
                if lower[start..].starts_with(scheme) {
                    start += scheme.len();
                }
            }
            let end = lower[start..]
                .find(|c: char| matches!(c, '&' | '"' | '\'' | ',' | ';') || c.is_whitespace())
                .map_or(lower.len(), |e| e + start);
            if end > start {
                cuts.push((start, end));
            }
        }
    }
    if cuts.is_empty() {
        return std::borrow::Cow::Borrowed(line);
    }
    cuts.sort_unstable();
    let mut out = String::with_capacity(line.len());
    let mut at = 0;
    for (start, end) in cuts {
        if start < at {
            continue;
        }
        out.push_str(&line[at..start]);
        out.push_str("REDACTED");
        at = end;
    }
    out.push_str(&line[at..]);
    std::borrow::Cow::Owned(out)
}

fn spawn(binary: &Path, config: &Path) -> Result<Child, ManagedError> {
    let mut cmd = Command::new(binary);
    cmd.arg("serve").arg(config);
    // The registry reads every REGISTRY_* variable as a config override; a
    // stray one (skopeo's REGISTRY_AUTH_FILE) breaks it. Start it clean.
    cmd.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| ManagedError::Spawn {
        binary: binary.display().to_string(),
        source,
    })?;
    for out in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let line = redact(&line);
                if is_problem(&line) {
                    tracing::warn!(target: "regate::registry", "{line}");
                } else {
                    tracing::debug!(target: "regate::registry", "{line}");
                }
            }
        });
    }
    Ok(child)
}

/// A registry log line worth a WARN: an error, but not the routine misses
/// (a client asking for a blob or manifest that is not there, as every push
/// does before uploading).
fn is_problem(line: &str) -> bool {
    let routine = ["blob unknown", "manifest unknown", "name unknown"]
        .iter()
        .any(|code| line.contains(&format!("err.code=\"{code}\"")));
    !routine
        && (line.contains("level=error")
            || line.contains("level=fatal")
            || line.contains("level=panic"))
}

/// `run` is the binary and its config, for the message of a failure.
async fn wait_ready(
    url: &UpstreamUrl,
    client: &UpstreamClient,
    child: &mut Child,
    within: Duration,
    run: (&Path, &Path),
) -> Result<(), ManagedError> {
    let deadline = Instant::now() + within;
    let origin = url.origin();
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(not_ready(
                url,
                within,
                format!("the registry exited ({status})"),
                run,
            ));
        }
        match client.probe(&origin, Duration::from_secs(1)).await {
            Ok(status) if status.is_success() => return Ok(()),
            Ok(status) => last = format!("answered {status}"),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(not_ready(url, within, last, run))
}

fn not_ready(
    url: &UpstreamUrl,
    within: Duration,
    last: String,
    (binary, config): (&Path, &Path),
) -> ManagedError {
    ManagedError::NotReady {
        url: url.origin(),
        secs: within.as_secs(),
        last,
        binary: binary.display().to_string(),
        config: config.display().to_string(),
    }
}

async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

/// Restarts the registry when it exits, until told to stop.
async fn supervise(
    binary: PathBuf,
    config: PathBuf,
    url: UpstreamUrl,
    client: UpstreamClient,
    mut child: Child,
    mut stop: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        tokio::select! {
            status = child.wait() => {
                tracing::error!(status = ?status.ok(), "the managed registry exited; restarting it in {backoff:?}");
                metrics.managed_restart();
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = crate::stop_signal::stopped(&mut stop) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                match spawn(&binary, &config) {
                    Ok(mut c) => {
                        let run = (binary.as_path(), config.as_path());
                        if wait_ready(&url, &client, &mut c, Duration::from_secs(15), run)
                            .await
                            .is_ok()
                        {
                            tracing::info!(url = %url.origin(), "managed registry restarted");
                            backoff = Duration::from_millis(500);
                        }
                        child = c;
                    }
                    Err(e) => tracing::error!(error = %e, "cannot restart the managed registry"),
                }
            }
            _ = crate::stop_signal::stopped(&mut stop) => {
                terminate(&mut child).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{is_problem, redact};

    #[test]
    fn upload_state_and_credentials_are_redacted_from_registry_lines() {
        let line = r#"time="2026-12-04T18:00:00Z" level=error msg="response completed with error" err.code="digest invalid" http.request.method=PUT http.request.uri="/v2/a/b/blobs/uploads/5e1c?_state=AbC%2Bd%3D%3D&digest=sha256%3A00" vars.name="a/b""#;
        let out = redact(line);
        assert!(!out.contains("AbC%2Bd"), "{out}");
        assert!(
            out.contains("uploads/5e1c?_state=REDACTED&digest=sha256%3A00\""),
            "{out}"
        );
        let out = redact(
            r#"msg="x" http.request.header.authorization="Basic YWxpY2U6cHc=" password=hunter2 token: abc.def"#,
        );
        assert!(!out.contains("YWxpY2U6cHc"), "{out}");
        assert!(!out.contains("hunter2"), "{out}");
        assert!(!out.contains("abc.def"), "{out}");
        // Other keys that merely end the same way, and lines without secrets, stay.
        for plain in [
            r#"level=info msg="listening on 127.0.0.1:5000""#,
            "my_state=1 mytoken=2 tokens=3",
        ] {
            assert_eq!(redact(plain), plain);
        }
    }

    #[test]
    fn routine_misses_are_not_problems() {
        // As registry 2.8 writes them (fields abridged).
        let miss = r#"time="2026-12-04T18:00:00Z" level=error msg="response completed with error" err.code="blob unknown" err.message="blob unknown to registry" http.request.method=HEAD"#;
        let manifest = miss.replace("blob unknown", "manifest unknown");
        let broken = r#"time="2026-12-04T18:00:00Z" level=error msg="response completed with error" err.code=unknown err.message="filesystem: permission denied""#;
        assert!(!is_problem(miss));
        assert!(!is_problem(&manifest));
        assert!(is_problem(broken));
        assert!(!is_problem(
            r#"level=info msg="listening on 127.0.0.1:5000""#
        ));
    }
}
