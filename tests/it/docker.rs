//! Debian's docker engine (dockerd 20.10) through regate, as users run it, in
//! each auth mode (none, basic, token) with the example rules: login, push two
//! tags, pull back by digest into a clean store, `curl -X DELETE` one tag,
//! the other still pulls and the deleted one is 404; anonymous pulls of
//! `public/*` (token mode only: after a Basic challenge docker sends nothing
//! without credentials).
//!
//! Each test has its own dockerd and containerd (tests/it/common/dockerd.rs) and
//! reaches regate on 127.0.0.1 over TLS, with its CA in
//! `/etc/docker/certs.d/<host:port>/ca.crt` as a user would put it (dockerd
//! skips the certificate check on 127.0.0.0/8; tests/it/containerd.rs proves
//! the CA check). The docker and curl calls block, so
//! each scenario runs on a blocking thread and leaves the runtime to regate.

use crate::common;

use common::auth::{password, AuthFiles};
use common::client_checks::{mounts_from, run_blocking, Mode, Site};
use common::dockerd::{DockerCli, DockerTrust, Dockerd};
use common::relay::Relay;
use common::{Regate, Registry};

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

    // The CA where users put it (dockerd does not check it on loopback;
    // tests/it/containerd.rs proves the check).
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
            // (on loopback, an insecure registry to dockerd, it then tries
            // plain HTTP on the TLS port and reports that instead)
            assert!(
                err.contains("no basic auth credentials")
                    || err.contains("unauthorized")
                    || err.contains("malformed HTTP response"),
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
    let regate = Regate::start_with(&registry.url, &mode.config(&files)).await;
    let site = Site::new(mode, &regate);
    run_blocking(move || scenario(&site)).await;
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

/// `owner` pushes an image to `from_repo`; alice (her own login, same
/// daemon) pushes it to `alice/app`, and dockerd, which remembers where the
/// layer went, asks to mount it from `from_repo`. The push must succeed either
/// way.
fn push_a_layer_pushed_to(site: &Site, owner: &str, from_repo: &str) {
    let daemon = Dockerd::start();
    let _trust = DockerTrust::install(&site.host, &site.ca);
    let owner_cli = daemon.cli(owner);
    login(site, &owner_cli, owner);
    let from = format!("{}/{from_repo}:v1", site.host);
    owner_cli.import(
        "rg-mount:v1",
        &format!("docker mount {:?} {from_repo}", site.mode),
    );
    owner_cli.run(&["tag", "rg-mount:v1", &from], None).unwrap();
    let digest = owner_cli
        .push(&from)
        .unwrap_or_else(|e| panic!("{owner} pushes {from_repo}: {e}"));

    let alice = daemon.cli("alice");
    login(site, &alice, "alice");
    let app = format!("{}/alice/app:v1", site.host);
    alice.run(&["tag", &from, &app], None).unwrap();
    let pushed = alice
        .push(&app)
        .unwrap_or_else(|e| panic!("alice pushes a layer of {from_repo} to alice/app: {e}"));
    assert_eq!(pushed, digest);
    let (status, served, body) = site.get_manifest(Some("alice"), "alice/app", "v1");
    assert_eq!((status, served.as_str()), (200, digest.as_str()), "{body}");
}

/// `push_a_layer_pushed_to` against a regate behind a relay; the requests
/// regate passed to the registry.
async fn run_mount(mode: Mode, owner: &'static str, from_repo: &'static str) -> Vec<String> {
    let registry = Registry::start();
    let relay = Relay::start(registry.url.trim_start_matches("http://")).await;
    let files = AuthFiles::new();
    let regate = Regate::start_with(&relay.url, &mode.config(&files)).await;
    let site = Site::new(mode, &regate);
    run_blocking(move || push_a_layer_pushed_to(&site, owner, from_repo)).await;
    regate.stop().await;
    relay.requests()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_mounts_a_layer_from_a_repository_the_pusher_may_pull() {
    let requests = run_mount(Mode::Basic, "alice", "alice/base").await;
    let mounts = mounts_from(&requests);
    assert!(
        !mounts.is_empty() && mounts.iter().all(|f| f == "alice/base"),
        "dockerd mounted its layer from alice/base: {requests:#?}"
    );
}

/// dockerd tries the mount from bob/base, is refused, and uploads the layer.
async fn push_of_a_layer_from_a_repository_the_pusher_may_not_pull(mode: Mode) {
    let requests = run_mount(mode, "bob", "bob/base").await;
    let mounts = mounts_from(&requests);
    assert!(
        mounts.is_empty(),
        "nothing may be mounted from bob/base for alice: {requests:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_pushes_a_layer_from_a_repository_the_pusher_may_not_pull_in_basic_mode() {
    push_of_a_layer_from_a_repository_the_pusher_may_not_pull(Mode::Basic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_pushes_a_layer_from_a_repository_the_pusher_may_not_pull_in_token_mode() {
    push_of_a_layer_from_a_repository_the_pusher_may_not_pull(Mode::Token).await;
}
