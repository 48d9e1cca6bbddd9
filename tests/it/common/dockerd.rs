//! Debian's docker engine as a client of regate: a dockerd of the test's own
//! (data root, exec root, pidfile and API socket in a short folder under
//! /tmp; `--iptables=false --bridge=none --storage-driver=vfs`) on a
//! containerd the test starts (so it never attaches to a system one), the
//! `docker` CLI with a config dir per user, and the certs.d entry that makes
//! dockerd trust regate's CA. Everything is stopped or removed on drop.
//!
//! dockerd treats 127.0.0.0/8 as an insecure registry: it still speaks TLS
//! there, but skips the certificate check. The tests stay on loopback all the
//! same (this workplace's network rules keep test traffic there), so the
//! certs.d entry is written as a user would and the CA check itself is
//! proven by the containerd tests, where ctr verifies it on loopback too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::containerd::{short_tempdir, stop_child, Containerd, CLIENT_LIMIT, PROXY_VARS};

/// dockerd 20.10 reads a registry's CA from here (no flag moves it).
pub const CERTS_D: &str = "/etc/docker/certs.d";

pub struct Dockerd {
    /// `unix:///tmp/.../d.sock`
    pub host: String,
    pub log: PathBuf,
    child: Child,
    dir: tempfile::TempDir,
    // Dropped after dockerd (fields drop in order).
    _containerd: Containerd,
}

impl Dockerd {
    pub fn start() -> Self {
        super::require_tool("dockerd");
        super::require_tool("docker");
        let containerd = Containerd::start();
        let dir = short_tempdir("rg-dk");
        let d = dir.path();
        let socket = d.join("d.sock");
        let log = d.join("dockerd.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new("dockerd");
        cmd.args(["--iptables=false", "--ip-masq=false", "--bridge=none"])
            .args(["--storage-driver=vfs"])
            .arg("--containerd")
            .arg(&containerd.socket)
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            // An empty daemon config: the machine's /etc/docker/daemon.json is not read.
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        std::fs::write(d.join("daemon.json"), "{}").unwrap();
        for v in PROXY_VARS {
            cmd.env_remove(v);
        }
        let child = cmd.spawn().expect("start dockerd");
        let mut daemon = Dockerd {
            host: format!("unix://{}", socket.display()),
            log,
            child,
            dir,
            _containerd: containerd,
        };
        daemon.wait_ready();
        daemon
    }

    fn wait_ready(&mut self) {
        let probe = self.cli("probe");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if probe.run(&["version"], None).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "dockerd exited at start ({status}):\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer on {} within 60 s:\n{}",
                self.host,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The docker CLI on this daemon with a config dir (credentials) named
    /// `user`: each name is a separate login.
    pub fn cli(&self, user: &str) -> DockerCli {
        let config = self.dir.path().join(format!("cli-{user}"));
        std::fs::create_dir_all(&config).unwrap();
        if !config.join("config.json").exists() {
            std::fs::write(config.join("config.json"), r#"{"auths":{}}"#).unwrap();
        }
        DockerCli {
            host: self.host.clone(),
            config,
            work: self.dir.path().to_owned(),
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(15));
    }
}

pub struct DockerCli {
    host: String,
    config: PathBuf,
    work: PathBuf,
}

impl DockerCli {
    /// Runs `docker <args>`; Ok(output) when it succeeds, Err(output) otherwise.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut cmd = Command::new("docker");
        cmd.args(args)
            .env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", &self.config)
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        super::run_tool_within(cmd, stdin, CLIENT_LIMIT)
    }

    pub fn login(&self, host: &str, user: &str, pw: &str) -> Result<String, String> {
        self.run(&["login", "-u", user, "--password-stdin", host], Some(pw))
    }

    /// A one-file image made with `docker import`, as `name`.
    pub fn import(&self, name: &str, content: &str) {
        let src = tempfile::tempdir_in(&self.work).unwrap();
        std::fs::write(src.path().join("hello.txt"), content).unwrap();
        let tar = self
            .work
            .join(format!("{}.tar", name.replace(['/', ':'], "_")));
        let ok = Command::new("tar")
            .arg("-C")
            .arg(src.path())
            .arg("-cf")
            .arg(&tar)
            .arg("hello.txt")
            .status()
            .unwrap()
            .success();
        assert!(ok, "tar");
        self.run(&["import", tar.to_str().unwrap(), name], None)
            .unwrap_or_else(|e| panic!("docker import {name}: {e}"));
    }

    /// Pushes `reference`; the manifest digest docker reports.
    pub fn push(&self, reference: &str) -> Result<String, String> {
        let out = self.run(&["push", reference], None)?;
        // "<tag>: digest: sha256:<hex> size: <n>"
        out.split_whitespace()
            .skip_while(|w| *w != "digest:")
            .nth(1)
            .map(str::to_owned)
            .ok_or_else(|| format!("no digest in the push output:\n{out}"))
    }

    pub fn pull(&self, reference: &str) -> Result<String, String> {
        self.run(&["pull", reference], None)
    }

    /// Removes every image of the daemon: the store is clean.
    pub fn remove_all_images(&self) {
        let ids = self.run(&["images", "-aq"], None).unwrap();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rmi", "--force"];
            args.extend(&ids);
            self.run(&args, None)
                .unwrap_or_else(|e| panic!("docker rmi: {e}"));
        }
        let left = self.run(&["images", "-aq"], None).unwrap();
        assert!(left.trim().is_empty(), "images left after rmi: {left}");
    }

    /// `RepoDigests` of a local image.
    pub fn repo_digests(&self, reference: &str) -> Vec<String> {
        let out = self
            .run(
                &[
                    "image",
                    "inspect",
                    "--format",
                    "{{json .RepoDigests}}",
                    reference,
                ],
                None,
            )
            .unwrap_or_else(|e| panic!("docker image inspect {reference}: {e}"));
        serde_json::from_str(out.trim()).unwrap()
    }
}

/// regate's CA in `/etc/docker/certs.d/<host:port>/ca.crt` (dockerd reads it
/// on every connection), removed on drop. `host:port` is unique to a test.
pub struct DockerTrust {
    dir: PathBuf,
}

impl DockerTrust {
    pub fn install(host: &str, ca: &Path) -> Self {
        let dir = Path::new(CERTS_D).join(host);
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::copy(ca, dir.join("ca.crt")).map(drop))
            .unwrap_or_else(|e| {
                panic!(
                    "cannot write {}/ca.crt ({e}): the docker tests run as root, as dockerd does",
                    dir.display()
                )
            });
        DockerTrust { dir }
    }
}

impl Drop for DockerTrust {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
