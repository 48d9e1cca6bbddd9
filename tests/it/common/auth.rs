//! Auth helpers: htpasswd files with cheap bcrypt hashes, the example ACL of
//! issue 3, config sections for basic and token mode, skopeo with
//! credentials, and token fetching.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;

/// The example rules of issue 3, as the acceptance checks use them.
pub const EXAMPLE_ACL: &str = r#"
[[acl]]
account = "admin"
repository = "*"
actions = ["pull", "push", "delete", "admin"]
[[acl]]
account = "ci"
repository = "apps/*"
actions = ["pull", "push"]
[[acl]]
account = "*"
repository = "${account}/*"
actions = ["pull", "push", "delete"]
[[acl]]
account = "anonymous"
repository = "public/*"
actions = ["pull"]
"#;

/// The users every auth test knows; the password is `<user>-pw`.
pub const USERS: [&str; 4] = ["admin", "ci", "alice", "bob"];

pub fn password(user: &str) -> String {
    format!("{user}-pw")
}

/// Writes an htpasswd file (bcrypt cost 4, as `$2y$` like `htpasswd -B`).
pub fn write_htpasswd(path: &Path, users: &[&str]) {
    let mut text = String::from("# test users\n");
    for u in users {
        let h = bcrypt::hash(password(u), 4)
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        text.push_str(&format!("{u}:{h}\n"));
    }
    std::fs::write(path, text).unwrap();
}

/// Files an auth test needs, in one temporary folder.
pub struct AuthFiles {
    pub dir: tempfile::TempDir,
    pub htpasswd: PathBuf,
    pub audit: PathBuf,
    pub signing_key: PathBuf,
}

impl AuthFiles {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = dir.path().join("htpasswd");
        write_htpasswd(&htpasswd, &USERS);
        let signing_key = dir.path().join("token.key");
        regate::auth::token::keys::generate(
            regate::auth::token::keys::KeyKind::Es256,
            &signing_key,
        )
        .unwrap();
        AuthFiles {
            audit: dir.path().join("audit.log"),
            htpasswd,
            signing_key,
            dir,
        }
    }

    /// `[auth] mode = "basic"` with the example ACL; `extra` goes into `[auth]`.
    pub fn basic_toml(&self, extra: &str) -> String {
        format!(
            "[auth]\nmode = \"basic\"\nhtpasswd = {:?}\n{extra}\n[audit]\nfile = {:?}\n{EXAMPLE_ACL}",
            self.htpasswd.display().to_string(),
            self.audit.display().to_string()
        )
    }

    /// `[auth] mode = "token"` with the example ACL.
    pub fn token_toml(&self, extra_token: &str) -> String {
        format!(
            "[auth]\nmode = \"token\"\nhtpasswd = {:?}\n[auth.token]\nissuer = \"regate-test\"\nservice = \"registry.test\"\nsigning_key = {:?}\n{extra_token}\n[audit]\nfile = {:?}\n{EXAMPLE_ACL}",
            self.htpasswd.display().to_string(),
            self.signing_key.display().to_string(),
            self.audit.display().to_string()
        )
    }

    /// The audit log's lines, once its writer thread has caught up (the
    /// file stops growing).
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        let read = || std::fs::read_to_string(&self.audit).unwrap_or_default();
        let mut text = read();
        for _ in 0..40 {
            std::thread::sleep(std::time::Duration::from_millis(25));
            let again = read();
            if again == text {
                break;
            }
            text = again;
        }
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Waits until a running regate has looked at its htpasswd file again (once
/// a second at most), so an edit made before this call is in force.
pub async fn htpasswd_seen() {
    tokio::time::sleep(
        regate::auth::htpasswd::RECHECK_EVERY + std::time::Duration::from_millis(100),
    )
    .await;
}

pub fn basic_header(user: &str, pw: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

/// Runs skopeo (without REGISTRY_AUTH_FILE), optionally feeding stdin.
pub fn skopeo_with(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    super::require_tool("skopeo");
    let mut cmd = Command::new("skopeo");
    cmd.arg("--insecure-policy")
        .args(args)
        .env_remove("REGISTRY_AUTH_FILE");
    super::run_tool(cmd, stdin)
}

/// Runs a blocking skopeo call off the async threads.
pub async fn skopeo_async(args: Vec<String>, stdin: Option<String>) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        skopeo_with(&a, stdin.as_deref())
    })
    .await
    .unwrap()
}

/// Copies an OCI layout of `image` to `docker://host/repo:tag` with `creds`.
pub async fn push_with_skopeo(
    image: &super::Image,
    work: &Path,
    trust: &Path,
    dest: &str,
    creds: Option<&str>,
) -> Result<String, String> {
    let src = work.join(format!(
        "layout-{}",
        image.digest.trim_start_matches("sha256:")
    ));
    if !src.exists() {
        image.write_oci_layout(&src, "t");
    }
    let mut args = vec![
        "copy".to_string(),
        "--retry-times".into(),
        "0".into(),
        "--dest-cert-dir".into(),
        trust.display().to_string(),
    ];
    if let Some(c) = creds {
        args.push("--dest-creds".into());
        args.push(c.into());
    }
    args.push(format!("oci:{}:t", src.display()));
    args.push(dest.into());
    skopeo_async(args, None).await
}

/// A token from `/auth/token` (GET form); `None` credentials: anonymous.
pub async fn fetch_token(
    client: &reqwest::Client,
    base: &str,
    creds: Option<(&str, &str)>,
    service: &str,
    scopes: &[&str],
) -> reqwest::Response {
    let mut url = format!("{base}/auth/token?service={service}");
    for s in scopes {
        url.push_str("&scope=");
        url.extend(form_urlencoded::byte_serialize(s.as_bytes()));
    }
    let mut req = client.get(url);
    if let Some((u, p)) = creds {
        req = req.basic_auth(u, Some(p));
    }
    req.send().await.unwrap()
}

/// The claims of a JWT, unverified (to look at what was granted).
pub fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// A real registry that demands its own Basic credentials (its `auth.htpasswd`).
pub struct GuardedRegistry {
    pub url: String,
    /// Its config file (for `garbage-collect`) and storage root.
    pub config: PathBuf,
    pub storage: PathBuf,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl GuardedRegistry {
    /// `users` are written with `password(user)`.
    pub fn start(users: &[&str]) -> Self {
        super::require_tool("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = dir.path().join("htpasswd");
        write_htpasswd(&htpasswd, users);
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {:?}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: test-secret\nauth:\n  htpasswd:\n    realm: upstream\n    path: {:?}\n",
                storage.display().to_string(),
                htpasswd.display().to_string()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // Up when it answers at all (401 without credentials).
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "guarded registry did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        GuardedRegistry {
            url,
            config,
            storage,
            child,
            _dir: dir,
        }
    }
}

impl Drop for GuardedRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
