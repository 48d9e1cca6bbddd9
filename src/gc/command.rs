//! Running the GC command: spawned in its own process group with its output
//! going to a log file (not a pipe), so it survives a regate that dies, and a
//! restarted regate can follow it by pid and read what it printed.
//!
//! Owns spawning, following the log file line by line (each line goes to the
//! log, target `regate::gc`), the timeout (SIGTERM to the group, SIGKILL ten
//! seconds later), and telling whether a recorded pid is still that command.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot start the GC command {program:?}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("GC log file {path}: {source}")]
    Log {
        path: String,
        source: std::io::Error,
    },
    #[error("waiting for the GC command: {0}")]
    Wait(std::io::Error),
}

/// The argv for a run: `--dry-run` goes right after `garbage-collect` (or at
/// the end when the argv has no such word).
pub fn argv_for(argv: &[String], dry_run: bool) -> Vec<String> {
    let mut v = argv.to_vec();
    if dry_run {
        match v.iter().position(|a| a == "garbage-collect") {
            Some(i) => v.insert(i + 1, "--dry-run".into()),
            None => v.push("--dry-run".into()),
        }
    }
    v
}

/// A GC command started by this regate.
pub struct Spawned {
    child: Child,
    pub pid: u32,
    pub pid_start: Option<String>,
    pub log_path: PathBuf,
}

/// Starts `argv` with stdout and stderr appended to `log_path`. With
/// `clean_env` the command sees only `PATH` (the registry reads every
/// `REGISTRY_*` variable as configuration). With `die_with_regate` (a
/// cluster, where another replica may reopen the gate once this one is gone)
/// the kernel kills the command (SIGKILL) when regate dies, instead of
/// leaving it for a restart to follow.
pub fn spawn(
    argv: &[String],
    clean_env: bool,
    log_path: &Path,
    die_with_regate: bool,
) -> Result<Spawned, CommandError> {
    let log_err = |source| CommandError::Log {
        path: log_path.display().to_string(),
        source,
    };
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir).map_err(log_err)?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(log_err)?;
    let err = out.try_clone().map_err(log_err)?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    if clean_env {
        cmd.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
    } else {
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("REGISTRY_") {
                cmd.env_remove(k);
            }
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0)
        .kill_on_drop(false);
    if die_with_regate {
        die_with_parent(&mut cmd);
    }
    let child = cmd.spawn().map_err(|source| CommandError::Spawn {
        program: argv[0].clone(),
        source,
    })?;
    let pid = child.id().unwrap_or(0);
    Ok(Spawned {
        child,
        pid,
        pid_start: process_start(pid),
        log_path: log_path.to_owned(),
    })
}

/// Sets the parent-death signal (SIGKILL) in the child before it runs the
/// command. The signal follows the thread that forks: the GC runs on a
/// runtime worker thread, which lives as long as regate.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec and only makes the
    // async-signal-safe calls prctl(2) and getppid(2), allocating nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // regate died before the prctl: do not start the command at all.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Follows a log file from the start, handing over whole lines.
pub struct LogTail {
    file: File,
    partial: Vec<u8>,
}

impl LogTail {
    pub fn open(path: &Path) -> Result<Self, CommandError> {
        let file = File::open(path).map_err(|source| CommandError::Log {
            path: path.display().to_string(),
            source,
        })?;
        Ok(LogTail {
            file,
            partial: Vec::new(),
        })
    }

    /// Reads what was appended; `flush` also hands over a last unterminated line.
    pub fn poll(&mut self, flush: bool, on_line: &mut impl FnMut(&str)) {
        let mut buf = Vec::new();
        let _ = self.file.read_to_end(&mut buf);
        self.partial.extend_from_slice(&buf);
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            on_line(String::from_utf8_lossy(&line[..line.len() - 1]).trim_end());
        }
        if flush && !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            on_line(String::from_utf8_lossy(&line).trim_end());
        }
    }
}

/// How a wait ended.
pub enum Waited {
    Exited(ExitStatus),
    TimedOut,
}

/// Waits for the command, following its log, killing it after `timeout`.
pub async fn wait(
    mut spawned: Spawned,
    timeout: Duration,
    mut on_line: impl FnMut(&str),
) -> Result<Waited, CommandError> {
    let mut tail = LogTail::open(&spawned.log_path)?;
    let deadline = Instant::now() + timeout;
    loop {
        tokio::select! {
            status = spawned.child.wait() => {
                tail.poll(true, &mut on_line);
                return status.map(Waited::Exited).map_err(CommandError::Wait);
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                tail.poll(false, &mut on_line);
                if Instant::now() >= deadline {
                    terminate_group(&mut spawned.child, spawned.pid).await;
                    tail.poll(true, &mut on_line);
                    return Ok(Waited::TimedOut);
                }
            }
        }
    }
}

async fn terminate_group(child: &mut Child, pid: u32) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let group = Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

/// The start time of `pid` (field 22 of `/proc/<pid>/stat`), which tells a
/// process from a later one that reused its pid.
pub fn process_start(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19).map(str::to_owned)
}

/// Whether `pid` is still the process that started at `start` (and not a zombie).
pub fn alive(pid: u32, start: Option<&str>) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let mut fields = stat[close + 2..].split_whitespace();
    let state = fields.next().unwrap_or("");
    if state == "Z" || state == "X" {
        return false;
    }
    match start {
        Some(s) => fields.nth(18) == Some(s),
        None => true,
    }
}

/// Follows a command that is not this process's child (one started before a
/// restart) until it is gone, handing over its log lines.
pub async fn follow_foreign(
    pid: u32,
    start: Option<String>,
    log_path: &Path,
    mut on_line: impl FnMut(&str),
) {
    let mut tail = LogTail::open(log_path).ok();
    while alive(pid, start.as_deref()) {
        if let Some(t) = tail.as_mut() {
            t.poll(false, &mut on_line);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(t) = tail.as_mut() {
        t.poll(true, &mut on_line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_run_goes_after_the_subcommand() {
        let argv: Vec<String> = [
            "docker",
            "exec",
            "r",
            "registry",
            "garbage-collect",
            "/c.yml",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            argv_for(&argv, true),
            [
                "docker",
                "exec",
                "r",
                "registry",
                "garbage-collect",
                "--dry-run",
                "/c.yml"
            ]
        );
        assert_eq!(argv_for(&argv, false), argv);
        let other = vec!["/usr/local/bin/gc.sh".to_string()];
        assert_eq!(
            argv_for(&other, true),
            ["/usr/local/bin/gc.sh", "--dry-run"]
        );
    }

    #[tokio::test]
    async fn output_is_followed_and_the_timeout_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("run.log");
        let argv: Vec<String> = ["sh", "-c", "echo one; echo two; sleep 30"]
            .map(String::from)
            .to_vec();
        let spawned = spawn(&argv, true, &log, false).unwrap();
        let pid = spawned.pid;
        let start = spawned.pid_start.clone();
        assert!(alive(pid, start.as_deref()));
        let mut lines = Vec::new();
        let r = wait(spawned, Duration::from_millis(500), |l| {
            lines.push(l.to_owned())
        })
        .await
        .unwrap();
        assert!(matches!(r, Waited::TimedOut));
        assert_eq!(lines, ["one", "two"]);
        assert!(!alive(pid, start.as_deref()));
    }

    #[tokio::test]
    async fn exit_status_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let argv: Vec<String> = ["sh", "-c", "echo bad >&2; exit 3"]
            .map(String::from)
            .to_vec();
        let spawned = spawn(&argv, true, &dir.path().join("l"), false).unwrap();
        let mut lines = Vec::new();
        match wait(spawned, Duration::from_secs(10), |l| {
            lines.push(l.to_owned())
        })
        .await
        .unwrap()
        {
            Waited::Exited(s) => assert_eq!(s.code(), Some(3)),
            Waited::TimedOut => panic!("timed out"),
        }
        assert_eq!(lines, ["bad"]);
    }
}
