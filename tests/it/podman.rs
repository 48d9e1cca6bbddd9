//! podman through regate, as users run it: `podman login`, `push` and `pull`
//! in basic and in token mode with the example rules, against a real
//! docker-registry. podman keeps its images in a private vfs store per test,
//! so nothing on the machine is touched.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::auth::{basic_header, password, AuthFiles};
use common::{Regate, Registry};

/// podman with a store, an auth file and the test CA of its own.
struct Podman {
    dir: tempfile::TempDir,
    trust: PathBuf,
}

impl Podman {
    fn new(trust: &Path) -> Self {
        common::require_tool("podman");
        let dir = tempfile::tempdir().unwrap();
        // An empty auth file: anonymous until `login` writes to it.
        std::fs::write(dir.path().join("auth.json"), r#"{"auths":{}}"#).unwrap();
        Podman {
            dir,
            trust: trust.to_owned(),
        }
    }

    fn authfile(&self) -> PathBuf {
        self.dir.path().join("auth.json")
    }

    /// Runs `podman <args>`; Ok(output) when it succeeds, Err(output) otherwise.
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let d = self.dir.path();
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("REGISTRY_AUTH_FILE", self.authfile())
            .env_remove("DOCKER_CONFIG");
        common::run_tool(cmd, stdin)
    }

    fn cert_dir(&self) -> String {
        format!("--cert-dir={}", self.trust.display())
    }

    fn login(&self, host: &str, user: &str, pw: &str) -> Result<String, String> {
        self.run(
            &[
                "login",
                &self.cert_dir(),
                "-u",
                user,
                "--password-stdin",
                host,
            ],
            Some(pw),
        )
    }

    /// Pushes `image` to `docker://dest`; returns the manifest digest podman wrote.
    fn push(&self, image: &str, dest: &str) -> Result<String, String> {
        let digestfile = self.dir.path().join("digest");
        let _ = std::fs::remove_file(&digestfile);
        self.run(
            &[
                "push",
                &self.cert_dir(),
                "--digestfile",
                digestfile.to_str().unwrap(),
                image,
                &format!("docker://{dest}"),
            ],
            None,
        )?;
        Ok(std::fs::read_to_string(digestfile)
            .unwrap()
            .trim()
            .to_owned())
    }

    fn pull(&self, reference: &str) -> Result<String, String> {
        self.run(
            &["pull", &self.cert_dir(), &format!("docker://{reference}")],
            None,
        )
    }

    /// A small real image in podman's store (`podman import` of a tarball).
    fn local_image(&self, name: &str, content: &str) {
        let src = self.dir.path().join("rootfs");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("hello.txt"), content).unwrap();
        let tar = self.dir.path().join("rootfs.tar");
        let ok = Command::new("tar")
            .arg("-C")
            .arg(&src)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap()
            .success();
        assert!(ok, "tar");
        self.run(&["import", tar.to_str().unwrap(), name], None)
            .expect("podman import");
    }
}

/// The digest regate serves for `repo:tag` to `user` (HEAD with the manifest types podman pushes).
async fn served_digest(regate: &Regate, auth: &str, repo: &str, tag: &str) -> String {
    let r = regate
        .client()
        .head(format!("{}/v2/{repo}/manifests/{tag}", regate.url))
        .header("authorization", auth)
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{repo}:{tag}");
    r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn login_push_pull(regate: &Regate, token_mode: bool) {
    let host = regate.host.as_str();
    let trust = regate.certs.trust_dir.clone();
    let (alice, alice_pw) = ("alice", password("alice"));

    // A wrong password fails at login.
    let p = Podman::new(&trust);
    let err = p
        .login(host, alice, "wrong")
        .expect_err("wrong password must fail");
    assert!(err.contains("invalid username/password"), "{err}");

    // alice pushes into her namespace, not into bob's.
    p.login(host, alice, &alice_pw).expect("podman login");
    p.local_image(
        "localhost/podman-test:v1",
        if token_mode { "token" } else { "basic" },
    );
    let digest = p
        .push("localhost/podman-test:v1", &format!("{host}/alice/app:v1"))
        .expect("push to alice/");
    let err = p
        .push("localhost/podman-test:v1", &format!("{host}/bob/app:v1"))
        .expect_err("alice may not push to bob/");
    assert!(
        err.contains("denied") || err.contains("403") || err.contains("unauthorized"),
        "{err}"
    );

    // What regate serves is what podman pushed, and a fresh store pulls it back.
    let alice_auth = if token_mode {
        let resp = common::auth::fetch_token(
            &regate.client(),
            &regate.url,
            Some((alice, &alice_pw)),
            "registry.test",
            &["repository:alice/app:pull"],
        )
        .await;
        let body: serde_json::Value = resp.json().await.unwrap();
        format!("Bearer {}", body["token"].as_str().unwrap())
    } else {
        basic_header(alice, &alice_pw)
    };
    assert_eq!(
        served_digest(regate, &alice_auth, "alice/app", "v1").await,
        digest
    );
    let fresh = Podman::new(&trust);
    fresh.login(host, alice, &alice_pw).expect("login");
    fresh
        .pull(&format!("{host}/alice/app:v1"))
        .expect("pull back");
    let inspect = fresh
        .run(
            &[
                "image",
                "inspect",
                "--format",
                "{{.Digest}}",
                &format!("{host}/alice/app:v1"),
            ],
            None,
        )
        .unwrap();
    assert_eq!(inspect.trim(), digest);

    // Anonymous: public/* pulls without login, anything else is refused.
    let admin = Podman::new(&trust);
    admin
        .login(host, "admin", &password("admin"))
        .expect("admin login");
    admin.local_image("localhost/public-test:v1", "public");
    admin
        .push(
            "localhost/public-test:v1",
            &format!("{host}/public/hello:v1"),
        )
        .expect("admin pushes public/");
    let anonymous = Podman::new(&trust);
    anonymous
        .pull(&format!("{host}/public/hello:v1"))
        .expect("anonymous pull of public/*");
    anonymous
        .pull(&format!("{host}/alice/app:v1"))
        .expect_err("anonymous may not pull alice/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_in_basic_mode() {
    common::require_tool("docker-registry");
    let registry = Registry::start();
    let files = AuthFiles::new();
    let regate = Regate::start_with(&registry.url, &files.basic_toml("")).await;
    login_push_pull(&regate, false).await;
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_in_token_mode() {
    common::require_tool("docker-registry");
    let registry = Registry::start();
    let files = AuthFiles::new();
    let regate = Regate::start_with(&registry.url, &files.token_toml("")).await;
    login_push_pull(&regate, true).await;
    regate.stop().await;
}
