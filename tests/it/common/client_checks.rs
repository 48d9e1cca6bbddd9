//! What the client end-to-end tests (tests/it/docker.rs, tests/it/containerd.rs)
//! check beside the client: the auth mode, manifests as regate serves them,
//! and `curl -X DELETE` of a tag with the credentials of the mode. Calls block
//! (the client tests run on a blocking thread), reaching the async client
//! through the runtime's handle.

use std::path::PathBuf;
use std::process::Command;

use tokio::runtime::Handle;

use super::auth::{basic_header, fetch_token, password, AuthFiles};
use super::images::ACCEPT_ALL;

pub const SERVICE: &str = "registry.test";

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    None,
    Basic,
    Token,
}

/// What the blocking scenario needs of the running regate.
pub struct Site {
    pub mode: Mode,
    /// `IP:PORT` of regate's TLS listener.
    pub host: String,
    pub url: String,
    pub ca: PathBuf,
    pub client: reqwest::Client,
    pub rt: Handle,
}

impl Site {
    /// The Authorization header `user` sends for `scope` (None: anonymous).
    pub fn auth(&self, user: Option<&str>, scope: &str) -> Option<String> {
        let user = user?;
        match self.mode {
            Mode::None => None,
            Mode::Basic => Some(basic_header(user, &password(user))),
            // A token from /auth/token, as a client would fetch it.
            Mode::Token => self.rt.block_on(async {
                let pw = password(user);
                let r = fetch_token(
                    &self.client,
                    &self.url,
                    Some((user, &pw)),
                    SERVICE,
                    &[scope],
                )
                .await;
                assert_eq!(r.status(), 200, "token for {user} {scope}");
                let v: serde_json::Value = r.json().await.unwrap();
                Some(format!("Bearer {}", v["token"].as_str().unwrap()))
            }),
        }
    }

    /// Status, `Docker-Content-Digest` and body of a GET of `repo:reference` as `user`.
    pub fn get_manifest(
        &self,
        user: Option<&str>,
        repo: &str,
        reference: &str,
    ) -> (u16, String, String) {
        let auth = self.auth(user, &format!("repository:{repo}:pull"));
        self.rt.block_on(async {
            let mut req = self
                .client
                .get(format!("{}/v2/{repo}/manifests/{reference}", self.url))
                .header("accept", ACCEPT_ALL);
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let digest = r
                .headers()
                .get("docker-content-digest")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, digest, r.text().await.unwrap())
        })
    }

    /// `curl -X DELETE .../v2/<repo>/manifests/<tag>` as `user`, as the
    /// README tells users to; the HTTP status.
    pub fn curl_delete(&self, user: &str, repo: &str, tag: &str) -> String {
        super::require_tool("curl");
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "60",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("--cacert")
        .arg(&self.ca)
        .args(["-X", "DELETE"]);
        // `curl -u` in token mode too: regate takes Basic credentials on
        // the API in every mode.
        if self.mode != Mode::None {
            cmd.args(["-u", &format!("{user}:{}", password(user))]);
        }
        cmd.arg(format!("{}/v2/{repo}/manifests/{tag}", self.url));
        super::run_tool(cmd, None).unwrap_or_else(|e| panic!("curl -X DELETE: {e}"))
    }
}

impl Mode {
    /// The `[auth]` and `[[acl]]` sections of this mode (the example rules).
    pub fn config(self, files: &AuthFiles) -> String {
        match self {
            Mode::None => String::new(),
            Mode::Basic => files.basic_toml(""),
            Mode::Token => files.token_toml(""),
        }
    }

    /// `user:password` for clients that take it so (None when auth is off).
    pub fn user_pass(self, user: &str) -> Option<String> {
        (self != Mode::None).then(|| format!("{user}:{}", password(user)))
    }
}

impl Site {
    pub fn new(mode: Mode, regate: &super::Regate) -> Self {
        Site {
            mode,
            host: regate.host.clone(),
            url: regate.url.clone(),
            ca: regate.certs.files.ca_cert.clone(),
            client: regate.client(),
            rt: Handle::current(),
        }
    }
}

/// Runs a blocking scenario off the runtime's threads (regate runs on them),
/// passing its panic on as it is.
pub async fn run_blocking(scenario: impl FnOnce() + Send + 'static) {
    if let Err(e) = tokio::task::spawn_blocking(scenario).await {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The mounts into `alice/app` that regate passed on to the registry (of the
/// request lines a `Relay` saw), as their `from` repositories.
pub fn mounts_from(requests: &[String]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| r.starts_with("POST /v2/alice/app/blobs/uploads/") && r.contains("mount="))
        .map(|r| {
            let query = r.split_once('?').map(|(_, q)| q).unwrap_or_default();
            form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "from")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
        .collect()
}
