//! A PostgreSQL server of the test's own, for regate replicas that share
//! their state: Debian's `initdb` and `postgres` on a temp dir, 127.0.0.1 and
//! a free port, run as `nobody` when the suite runs as root (PostgreSQL
//! refuses to run as root; CI runs as root). Password authentication over
//! TCP, as a real deployment has it. It can be stopped, killed and started
//! again on the same port and data, for the tests of an outage. Dropping the
//! handle stops the server. [`Postgres::start_tls`] gives one with TLS on
//! (`ssl = on`, a certificate of the test's own) for the `sslmode` tests.
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The superuser the tests connect as, and its password.
pub const USER: &str = "regate";
pub const PASSWORD: &str = "test-password";

pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    /// `ssl = on` with `server.crt`/`server.key` in the data directory.
    tls: bool,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

/// The `extra` config text (see `regate::config_toml`) of a replica on the
/// database `url`: the `[state] url` (the fixture's text ends in its
/// `[state]` section), then `more` sections.
pub fn replica_extra(url: &str, more: &str) -> String {
    format!("url = {url:?}\n{more}")
}

/// The directory of Debian's PostgreSQL server programs (the newest major
/// version installed); fails loudly when the server is not installed.
pub fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "the PostgreSQL server is not installed (no /usr/lib/postgresql/*/bin/initdb); the replica tests need it. Run `scripts/install-deps --test` (it installs Debian's `postgresql`) or `.ci/run`"
        )
    })
}

/// `nobody`'s uid and gid when running as root: PostgreSQL's programs run
/// as that user.
fn unprivileged() -> Option<(u32, u32)> {
    nix::unistd::geteuid().is_root().then_some((65534, 65534))
}

impl Postgres {
    /// A fresh cluster, started and accepting connections.
    pub fn start() -> Postgres {
        Self::start_with(None)
    }

    /// A fresh cluster with TLS on, presenting certificate `cert` (PEM, with
    /// its key `key`); it also accepts plain connections.
    pub fn start_tls(cert: &Path, key: &Path) -> Postgres {
        Self::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(&Path, &Path)>) -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let socket_dir = dir.path().join("socket");
        let log = dir.path().join("postgres.log");
        let pwfile = dir.path().join("pwfile");
        std::fs::create_dir(&socket_dir).unwrap();
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if let Some((uid, gid)) = unprivileged() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            for p in [dir.path(), &socket_dir, &pwfile] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
            }
        }
        let mut initdb = command(&bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "-E", "UTF8", "--locale=C", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()));
        let out = initdb.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some((cert, key)) = tls {
            // The server wants its key private to its own user.
            use std::os::unix::fs::PermissionsExt;
            for (from, name, mode) in [(cert, "server.crt", 0o644), (key, "server.key", 0o600)] {
                let to = data.join(name);
                std::fs::copy(from, &to).unwrap();
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
                if let Some((uid, gid)) = unprivileged() {
                    std::os::unix::fs::chown(&to, Some(uid), Some(gid)).unwrap();
                }
            }
        }
        let mut pg = Postgres {
            port: 0,
            bin,
            data,
            socket_dir,
            log,
            tls: tls.is_some(),
            child: None,
            _dir: dir,
        };
        // The server binds the port itself: retry with another port if one
        // was taken between choosing and binding it.
        for _ in 0..5 {
            pg.port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if pg.start_again_within(Duration::from_secs(30)) {
                return pg;
            }
        }
        panic!("postgres did not start; its log: {}", pg.log_text());
    }

    /// The URL of database `db` for regate's `[state] url`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates an empty database and gives its URL.
    pub fn create_database(&self, db: &str) -> String {
        self.sql("postgres", &format!("CREATE DATABASE \"{db}\""));
        self.url(db)
    }

    /// Runs SQL through `psql` as the superuser; its output (unaligned,
    /// tuples only). Panics when psql fails.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                USER,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-d", db, "-c", sql])
            .env("PGPASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Stops the server the way an operator's restart does (fast shutdown:
    /// sessions are ended, nothing committed is lost).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGINT is PostgreSQL's fast shutdown.
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            // The postmaster's children notice its death and exit; wait for
            // them to leave so the port and shared memory are free again.
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Starts the stopped server again, same port and data.
    pub fn start_again(&mut self) {
        assert!(
            self.start_again_within(Duration::from_secs(30)),
            "postgres did not start again; its log: {}",
            self.log_text()
        );
    }

    fn start_again_within(&mut self, limit: Duration) -> bool {
        assert!(self.child.is_none(), "postgres is already running");
        let log = std::fs::File::create(&self.log).unwrap();
        if let Some((uid, gid)) = unprivileged() {
            std::os::unix::fs::chown(&self.log, Some(uid), Some(gid)).unwrap();
        }
        let mut cmd = command(&self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(&self.data)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.socket_dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            // Speed over durability: these servers live for one test.
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200"])
            .args(if self.tls {
                &[
                    "-c",
                    "ssl=on",
                    "-c",
                    "ssl_cert_file=server.crt",
                    "-c",
                    "ssl_key_file=server.key",
                ][..]
            } else {
                &[]
            })
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut child = cmd.spawn().expect("start postgres");
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A PostgreSQL program, as `nobody` when running as root, with a clean
/// environment.
fn command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LANG", "C")
        .stdin(Stdio::null());
    if let Some((uid, gid)) = unprivileged() {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
