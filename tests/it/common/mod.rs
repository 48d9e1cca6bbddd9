//! The test fixture: a real `docker-registry` and regate on ephemeral ports
//! with a generated CA, real clients (skopeo; dockerd and containerd of the
//! test's own), and images built in memory.
//! Every handle stops what it started when dropped.
#![allow(dead_code, unused_imports)]

pub mod auth;
pub mod client_checks;
pub mod containerd;
pub mod dockerd;
pub mod gc;
pub mod hostile;
pub mod images;
pub mod native_delete;
pub mod postgres;
pub mod raw_http;
pub mod regate;
pub mod registry;
pub mod relay;
pub mod skopeo;
pub mod storage;

pub use images::{Blob, Image};
pub use regate::Regate;
pub use registry::Registry;

/// Fails loudly when a tool the suite needs is missing: never a silent skip.
pub fn require_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` is not installed; the suite needs it. Run `scripts/install-deps --test` (it installs every tool the tests use) or `.ci/run`"
    );
}

/// Runs a prepared command, feeding `stdin` (none: an empty input); its exit
/// code, stdout and stderr.
pub fn run_captured(mut cmd: std::process::Command, stdin: Option<&str>) -> (i32, String, String) {
    use std::process::Stdio;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if let Some(input) = stdin {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a prepared command, feeding `stdin`; its stdout and stderr together,
/// as Ok when it exits 0 and Err otherwise.
pub fn run_tool(cmd: std::process::Command, stdin: Option<&str>) -> Result<String, String> {
    let (code, out, err) = run_captured(cmd, stdin);
    let text = format!("{out}{err}");
    if code == 0 {
        Ok(text)
    } else {
        Err(text)
    }
}

/// `run_tool` for a client that talks to a daemon and could hang: killed
/// (and reported as failed) when it runs longer than `limit`.
pub fn run_tool_within(
    mut cmd: std::process::Command,
    stdin: Option<&str>,
    limit: std::time::Duration,
) -> Result<String, String> {
    use std::io::{Read as _, Seek as _, Write as _};
    use std::process::Stdio;
    // Files, not pipes: nothing to drain while waiting.
    let mut out = tempfile::tempfile().unwrap();
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(out.try_clone().unwrap())
    .stderr(out.try_clone().unwrap());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).unwrap();
    }
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut bytes = Vec::new();
    out.rewind().unwrap();
    out.read_to_end(&mut bytes).unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    match status {
        Some(s) if s.success() => Ok(text),
        Some(_) => Err(text),
        None => Err(format!("{text}\n(killed after {limit:?}: {cmd:?})")),
    }
}
