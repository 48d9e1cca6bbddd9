//! The test fixture: a real `docker-registry` and regate on ephemeral ports
//! with a generated CA, real clients (skopeo), and images built in memory.
//! Every handle stops what it started when dropped.
#![allow(dead_code, unused_imports)]

pub mod auth;
pub mod gc;
pub mod hostile;
pub mod images;
pub mod native_delete;
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
        "`{name}` is not installed; the suite needs it. Run `.ci/run` (it installs docker-registry and skopeo) or `apt-get install -y docker-registry skopeo`"
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
