//! Debian's docker engine (dockerd 20.10) through regate, as users run it, in
//! each auth mode (none, basic, token) with the example rules: login, push two
//! tags, pull back by digest into a clean store, `curl -X DELETE` one tag,
//! the other still pulls and the deleted one is 404; anonymous pulls of
//! `public/*` (token mode only: after a Basic challenge docker sends nothing
//! without credentials).
//!
//! Each test has its own dockerd and containerd (tests/common/dockerd.rs) and
//! reaches regate on a routable address of this machine, trusting its CA
//! through `/etc/docker/certs.d/<ip:port>/ca.crt` (on 127.0.0.0/8 dockerd
//! would skip the certificate check). The docker and curl calls block, so
//! each scenario runs on a blocking thread and leaves the runtime to regate.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::auth::{basic_header, fetch_token, password, AuthFiles};
use common::dockerd::{routable_ipv4, DockerCli, DockerTrust, Dockerd};
use common::images::ACCEPT_ALL;
use common::{Regate, Registry};
use tokio::runtime::Handle;

const SERVICE: &str = "registry.test";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    None,
    Basic,
    Token,
}

/// What the blocking scenario needs of the running regate.
struct Site {
    mode: Mode,
    /// `IP:PORT` on a routable address.
    host: String,
    url: String,
    ca: PathBuf,
    client: reqwest::Client,
    rt: Handle,
}

impl Site {
    /// The Authorization header `user` sends for `scope` (None: anonymous).
    fn auth(&self, user: Option<&str>, scope: &str) -> Option<String> {
        let user = user?;
        match self.mode {
            Mode::None => None,
            Mode::Basic => Some(basic_header(user, &password(user))),
            // The lead is adding Basic credentials in token mode; until then a
            // token from /auth/token, as a client would fetch it.
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
    fn get_manifest(
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
    fn curl_delete(&self, user: &str, repo: &str, tag: &str) -> String {
        common::require_tool("curl");
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&self.ca)
            .args(["-X", "DELETE"]);
        match self.mode {
            Mode::None => {}
            Mode::Basic => {
                cmd.args(["-u", &format!("{user}:{}", password(user))]);
            }
            Mode::Token => {
                let auth = self
                    .auth(Some(user), &format!("repository:{repo}:delete"))
                    .unwrap();
                cmd.args(["-H", &format!("Authorization: {auth}")]);
            }
        }
        cmd.arg(format!("{}/v2/{repo}/manifests/{tag}", self.url));
        common::run_tool(cmd, None).unwrap_or_else(|e| panic!("curl -X DELETE: {e}"))
    }
}

/// `docker login` as `user` unless auth is off.
fn login(site: &Site, cli: &DockerCli, user: &str) {
    if site.mode != Mode::None {
        cli.login(&site.host, user, &password(user))
            .unwrap_or_else(|e| panic!("docker login {user}: {e}"));
    }
}

fn scenario(site: &Site) {
    let host = site.host.as_str();
    let daemon = Dockerd::start();
    let alice = daemon.cli("alice");
    let app = format!("{host}/alice/app");

    // The address is not one dockerd trusts blindly: without the CA, TLS fails.
    let err = alice
        .pull(&format!("{app}:v0"))
        .expect_err("no CA in certs.d yet");
    assert!(
        err.contains("x509") || err.contains("certificate"),
        "untrusted: {err}"
    );
    let _trust = DockerTrust::install(host, &site.ca);

    if site.mode != Mode::None {
        let err = alice
            .login(host, "alice", "wrong")
            .expect_err("a wrong password fails at login");
        assert!(err.contains("unauthorized") || err.contains("401"), "{err}");
    }
    login(site, &alice, "alice");

    // Two tags of one image.
    alice.import("rg-local:v1", &format!("docker {:?}", site.mode));
    alice
        .run(&["tag", "rg-local:v1", &format!("{app}:v1")], None)
        .unwrap();
    alice
        .run(&["tag", "rg-local:v1", &format!("{app}:v2")], None)
        .unwrap();
    let digest = alice
        .push(&format!("{app}:v1"))
        .unwrap_or_else(|e| panic!("push v1: {e}"));
    let digest2 = alice
        .push(&format!("{app}:v2"))
        .unwrap_or_else(|e| panic!("push v2: {e}"));
    assert_eq!(digest, digest2);
    for tag in ["v1", "v2"] {
        let (status, served, body) = site.get_manifest(Some("alice"), "alice/app", tag);
        assert_eq!(
            (status, served.as_str()),
            (200, digest.as_str()),
            "{tag}: {body}"
        );
    }

    // Back by digest into a clean store.
    alice.remove_all_images();
    alice
        .pull(&format!("{app}@{digest}"))
        .unwrap_or_else(|e| panic!("pull by digest: {e}"));
    assert!(alice
        .repo_digests(&format!("{app}@{digest}"))
        .contains(&format!("{app}@{digest}")));

    // One tag goes; the other stays, by tag and by digest.
    assert_eq!(site.curl_delete("alice", "alice/app", "v1"), "202");
    let (status, _, body) = site.get_manifest(Some("alice"), "alice/app", "v1");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("MANIFEST_UNKNOWN"), "{body}");
    alice.remove_all_images();
    let err = alice
        .pull(&format!("{app}:v1"))
        .expect_err("the deleted tag does not pull");
    assert!(
        err.contains("not found") || err.contains("manifest unknown"),
        "{err}"
    );
    alice
        .pull(&format!("{app}:v2"))
        .unwrap_or_else(|e| panic!("pull v2 after deleting v1: {e}"));
    assert_eq!(
        alice.repo_digests(&format!("{app}:v2")),
        vec![format!("{app}@{digest}")]
    );

    // Anonymous pulls of public/*.
    let admin = daemon.cli("admin");
    login(site, &admin, "admin");
    admin.import("rg-public:v1", &format!("public {:?}", site.mode));
    let public = format!("{host}/public/hello:v1");
    admin.run(&["tag", "rg-public:v1", &public], None).unwrap();
    admin
        .push(&public)
        .unwrap_or_else(|e| panic!("admin pushes public/: {e}"));
    admin.remove_all_images();
    let anonymous = daemon.cli("anonymous");
    let pulled = anonymous.pull(&public);
    match site.mode {
        Mode::None | Mode::Token => {
            pulled.unwrap_or_else(|e| panic!("anonymous pull of public/*: {e}"));
        }
        // What the README says: docker answers a Basic challenge only with
        // credentials, so anonymous users cannot pull in basic mode.
        Mode::Basic => {
            let err = pulled.expect_err("docker does not pull anonymously after a Basic challenge");
            assert!(
                err.contains("no basic auth credentials") || err.contains("unauthorized"),
                "{err}"
            );
        }
    }
    if site.mode != Mode::None {
        anonymous
            .pull(&format!("{app}:v2"))
            .expect_err("anonymous may not pull alice/");
    }
}

async fn run(mode: Mode) {
    let registry = Registry::start();
    let files = AuthFiles::new();
    let extra = match mode {
        Mode::None => String::new(),
        Mode::Basic => files.basic_toml(""),
        Mode::Token => files.token_toml(""),
    };
    let ip = routable_ipv4();
    let regate = Regate::start_on(&registry.url, &extra, ip.into()).await;
    let site = Site {
        mode,
        host: regate.host.clone(),
        url: regate.url.clone(),
        ca: regate.certs.files.ca_cert.clone(),
        client: regate.client(),
        rt: Handle::current(),
    };
    if let Err(e) = tokio::task::spawn_blocking(move || scenario(&site)).await {
        std::panic::resume_unwind(e.into_panic());
    }
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_push_pull_delete_with_auth_off() {
    run(Mode::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_push_pull_delete_in_basic_mode() {
    run(Mode::Basic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_push_pull_delete_in_token_mode() {
    run(Mode::Token).await;
}
