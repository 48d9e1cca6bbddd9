//! A containerd of the test's own (root, state, sockets and plugin dir in a
//! short temporary folder under /tmp, never the system's), the `ctr` client
//! against it, and the hosts dir that makes ctr trust regate's CA. dockerd
//! runs on such a containerd too (tests/it/common/dockerd.rs). Stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Proxy variables of the caller: a daemon must reach regate directly.
pub const PROXY_VARS: [&str; 8] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
];

/// The longest a ctr or docker call may take (a tiny image; a hung client
/// must fail the test, not stall the suite).
pub const CLIENT_LIMIT: Duration = Duration::from_secs(120);

/// A short temporary folder under /tmp: unix socket paths must stay under
/// 108 bytes, and `$TMPDIR` may be long.
pub fn short_tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap()
}

/// Asks a child started by the test to stop (SIGTERM), waits up to `grace`,
/// then kills it.
pub fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub struct Containerd {
    /// The grpc socket: `ctr --address` and `dockerd --containerd`.
    pub socket: PathBuf,
    pub log: PathBuf,
    child: Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    pub fn start() -> Self {
        super::require_tool("containerd");
        super::require_tool("ctr");
        let dir = short_tempdir("rg-ct");
        let d = dir.path();
        let socket = d.join("c.sock");
        let config = d.join("config.toml");
        // CRI is not needed (and wants much more); `opt` would default to /opt/containerd.
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = {:?}\nstate = {:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = {:?}\n[ttrpc]\n  address = {:?}\n[debug]\n  address = \"\"\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = {:?}\n",
                d.join("root").display().to_string(),
                d.join("state").display().to_string(),
                socket.display().to_string(),
                d.join("t.sock").display().to_string(),
                d.join("opt").display().to_string(),
            ),
        )
        .unwrap();
        let log = d.join("containerd.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new("containerd");
        cmd.arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for v in PROXY_VARS {
            cmd.env_remove(v);
        }
        let child = cmd.spawn().expect("start containerd");
        let mut c = Containerd {
            socket,
            log,
            child,
            dir,
        };
        c.wait_ready();
        c
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.socket.exists() {
                let mut cmd = Command::new("ctr");
                cmd.arg("--address").arg(&self.socket).arg("version");
                if super::run_tool_within(cmd, None, Duration::from_secs(10)).is_ok() {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "containerd exited at start ({status}):\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer on {} within 30 s:\n{}",
                self.socket.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ctr` in namespace `namespace` of this containerd.
    pub fn ctr(&self, namespace: &str, hosts_dir: &Path) -> Ctr {
        Ctr {
            socket: self.socket.clone(),
            namespace: namespace.to_owned(),
            hosts_dir: hosts_dir.to_owned(),
        }
    }

    /// A folder of this containerd's for the test's files.
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(10));
    }
}

/// Writes ctr's hosts dir for `host` (`ip:port`) trusting `ca`:
/// `DIR/<host>/hosts.toml` with a top-level `server` and `ca`, and a
/// `[host."https://..."]` table (without it ctr falls back to `http://`).
pub fn write_hosts_dir(dir: &Path, host: &str, ca: &Path) {
    let d = dir.join(host);
    std::fs::create_dir_all(&d).unwrap();
    let ca = ca.display().to_string();
    std::fs::write(
        d.join("hosts.toml"),
        format!(
            "server = \"https://{host}\"\nca = {ca:?}\n\n[host.\"https://{host}\"]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n  ca = {ca:?}\n"
        ),
    )
    .unwrap();
}

/// `ctr --address S --namespace N ...`, with the native snapshotter (no
/// overlay mounts) and `--hosts-dir` on every registry command.
pub struct Ctr {
    socket: PathBuf,
    namespace: String,
    hosts_dir: PathBuf,
}

impl Ctr {
    /// Runs `ctr <args>`; Ok(output) when it succeeds, Err(output) otherwise.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args)
            .env("CONTAINERD_SNAPSHOTTER", "native");
        for v in PROXY_VARS {
            cmd.env_remove(v);
        }
        super::run_tool_within(cmd, None, CLIENT_LIMIT)
    }

    /// `ctr images <verb> --hosts-dir D [--user user:pw] <rest>`.
    fn registry_call(
        &self,
        verb: &str,
        user: Option<&str>,
        rest: &[&str],
    ) -> Result<String, String> {
        let hosts = self.hosts_dir.display().to_string();
        let mut args = vec!["images", verb, "--hosts-dir", &hosts];
        if let Some(u) = user {
            args.extend(["--user", u]);
        }
        args.extend(rest);
        self.run(&args)
    }

    /// Pushes the local image `reference` to its registry; `user` is `name:password`.
    pub fn push(&self, reference: &str, user: Option<&str>) -> Result<String, String> {
        self.registry_call("push", user, &[reference])
    }

    pub fn pull(&self, reference: &str, user: Option<&str>) -> Result<String, String> {
        self.registry_call("pull", user, &[reference])
    }

    /// Imports `image` as `<base>:<tag>` (an OCI archive made with tar).
    pub fn import(&self, image: &super::Image, base: &str, tag: &str) {
        let layout = tempfile::tempdir().unwrap();
        image.write_oci_layout(layout.path(), tag);
        let tar = layout.path().join("image.tar");
        let ok = Command::new("tar")
            .arg("-C")
            .arg(layout.path())
            .args(["-cf"])
            .arg(&tar)
            .args(["oci-layout", "index.json", "blobs"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "tar of the OCI layout");
        let tar = tar.display().to_string();
        self.run(&["images", "import", "--base-name", base, &tar])
            .unwrap_or_else(|e| panic!("ctr images import {base}:{tag}: {e}"));
    }

    pub fn tag(&self, from: &str, to: &str) {
        self.run(&["images", "tag", from, to])
            .unwrap_or_else(|e| panic!("ctr images tag {from} {to}: {e}"));
    }

    /// The manifest digest of the local image `reference`.
    pub fn digest_of(&self, reference: &str) -> String {
        let out = self
            .run(&["images", "ls"])
            .unwrap_or_else(|e| panic!("ctr images ls: {e}"));
        // REF TYPE DIGEST SIZE PLATFORMS LABELS
        out.lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let name = f.next()?;
                let digest = f.nth(1)?;
                (name == reference).then(|| digest.to_owned())
            })
            .next()
            .unwrap_or_else(|| panic!("{reference} is not in ctr's image list:\n{out}"))
    }
}
