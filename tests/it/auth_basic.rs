//! Basic auth and the rules, against a real registry and a real client
//! (skopeo), with the example ACL of issue 3.

use crate::common;

use common::auth::{basic_header, password, push_with_skopeo, skopeo_async, AuthFiles};
use common::images::ACCEPT_ALL;
use common::{Image, Regate, Registry};

async fn start(files: &AuthFiles, extra_auth: &str) -> (Registry, Regate) {
    let registry = Registry::start();
    let regate = Regate::start_with(&registry.url, &files.basic_toml(extra_auth)).await;
    (registry, regate)
}

fn creds(user: &str) -> String {
    format!("{user}:{}", password(user))
}

async fn status_of(r: reqwest::RequestBuilder) -> (u16, String, reqwest::header::HeaderMap) {
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.text().await.unwrap(), headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_logs_in_pushes_and_pulls_with_basic_auth() {
    let files = AuthFiles::new();
    let (_registry, regate) = start(&files, "").await;
    let work = tempfile::tempdir().unwrap();
    let trust = regate.certs.trust_dir.display().to_string();
    let authfile = work.path().join("auth.json").display().to_string();

    // login with a password on stdin, into a private auth file.
    let out = skopeo_async(
        vec![
            "login".into(),
            "--authfile".into(),
            authfile.clone(),
            "--cert-dir".into(),
            trust.clone(),
            "-u".into(),
            "alice".into(),
            "--password-stdin".into(),
            regate.host.clone(),
        ],
        Some(password("alice")),
    )
    .await
    .unwrap();
    assert!(out.contains("Login Succeeded"), "{out}");
    // A wrong password fails the login.
    let bad = skopeo_async(
        vec![
            "login".into(),
            "--authfile".into(),
            authfile.clone(),
            "--cert-dir".into(),
            trust.clone(),
            "-u".into(),
            "alice".into(),
            "--password-stdin".into(),
            regate.host.clone(),
        ],
        Some("wrong".into()),
    )
    .await;
    assert!(bad.is_err(), "login with a wrong password succeeded");

    // Push with the credentials, pull back with the auth file.
    let image = Image::oci("basic-push", 50_000);
    push_with_skopeo(
        &image,
        work.path(),
        &regate.certs.trust_dir,
        &format!("docker://{}/alice/app:v1", regate.host),
        Some(&creds("alice")),
    )
    .await
    .unwrap();
    let raw = skopeo_async(
        vec![
            "inspect".into(),
            "--raw".into(),
            "--authfile".into(),
            authfile,
            "--cert-dir".into(),
            trust,
            format!("docker://{}/alice/app:v1", regate.host),
        ],
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        common::images::sha256(raw.trim_end().as_bytes()),
        image.digest
    );
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_malformed_headers_are_401_with_a_basic_challenge() {
    let files = AuthFiles::new();
    let (_registry, regate) = start(&files, "").await;
    let c = regate.client();
    let base = format!("{}/v2/", regate.url);

    // GET /v2/ challenges anyone without credentials.
    let (s, body, h) = status_of(c.get(&base)).await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(h["www-authenticate"], "Basic realm=\"regate\"");
    assert_eq!(h["docker-distribution-api-version"], "registry/2.0");
    assert!(body.contains("UNAUTHORIZED"), "{body}");
    // Basic Og== (skopeo's empty credentials) is anonymous: still a challenge.
    let (s, _, _) = status_of(c.get(&base).header("authorization", "Basic Og==")).await;
    assert_eq!(s, 401);

    let (s, body, h) = status_of(
        c.get(&base)
            .header("authorization", basic_header("alice", "nope")),
    )
    .await;
    assert_eq!(s, 401, "{body}");
    assert!(h.contains_key("www-authenticate"));
    let (s, _, _) = status_of(
        c.get(&base)
            .header("authorization", basic_header("nobody", "x")),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _, _) = status_of(
        c.get(&base)
            .header("authorization", basic_header("alice", &password("alice"))),
    )
    .await;
    assert_eq!(s, 200);

    for bad in [
        "Basic !!!notbase64",
        "Digest username=x",
        "Basic",
        "Bearer some.jwt.token",
    ] {
        let (s, body, h) = status_of(c.get(&base).header("authorization", bad)).await;
        assert_eq!(s, 401, "{bad}: {body}");
        assert!(h.contains_key("www-authenticate"), "{bad}");
        assert!(body.contains("\"errors\""), "{bad}: {body}");
    }
    let (s, body, _) = status_of(c.get(&base).header(
        "authorization",
        reqwest::header::HeaderValue::from_bytes(b"Basic \xff\xfe").unwrap(),
    ))
    .await;
    assert_eq!(s, 400, "{body}");

    // The failures are audited, without any password.
    let lines = files.audit_lines();
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "auth_failure" && l["account"] == "alice"),
        "{lines:?}"
    );
    let text = std::fs::read_to_string(&files.audit).unwrap();
    assert!(
        !text.contains("nope") && !text.contains("alice-pw"),
        "{text}"
    );
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_ci_and_anonymous_follow_the_rules() {
    let files = AuthFiles::new();
    let (_registry, regate) = start(&files, "").await;
    let work = tempfile::tempdir().unwrap();
    let trust = regate.certs.trust_dir.clone();
    let dest = |repo: &str| format!("docker://{}/{repo}:v1", regate.host);
    let image = Image::oci("rules", 20_000);

    // ci pushes to apps/*, not elsewhere.
    push_with_skopeo(
        &image,
        work.path(),
        &trust,
        &dest("apps/web"),
        Some(&creds("ci")),
    )
    .await
    .unwrap();
    let err = push_with_skopeo(
        &image,
        work.path(),
        &trust,
        &dest("other/web"),
        Some(&creds("ci")),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_lowercase().contains("denied") || err.contains("403"),
        "{err}"
    );

    // alice pushes to alice/*, not to bob/*.
    push_with_skopeo(
        &image,
        work.path(),
        &trust,
        &dest("alice/app"),
        Some(&creds("alice")),
    )
    .await
    .unwrap();
    assert!(push_with_skopeo(
        &image,
        work.path(),
        &trust,
        &dest("bob/app"),
        Some(&creds("alice"))
    )
    .await
    .is_err());

    // admin pushes to public/*.
    push_with_skopeo(
        &image,
        work.path(),
        &trust,
        &dest("public/tool"),
        Some(&creds("admin")),
    )
    .await
    .unwrap();

    let c = regate.client();
    let manifest = |repo: &str| format!("{}/v2/{repo}/manifests/v1", regate.url);
    // Anonymous pulls public/* and nothing else.
    let (s, _, _) = status_of(c.get(manifest("public/tool")).header("accept", ACCEPT_ALL)).await;
    assert_eq!(s, 200);
    let (s, _, h) = status_of(c.get(manifest("apps/web")).header("accept", ACCEPT_ALL)).await;
    assert_eq!(s, 401, "anonymous must get a challenge, not the manifest");
    assert!(h.contains_key("www-authenticate"));
    let (s, _, _) = status_of(
        c.put(manifest("public/tool"))
            .header("content-type", &image.media_type)
            .body(image.manifest.clone()),
    )
    .await;
    assert_eq!(s, 401);
    // skopeo without credentials (Basic Og==) pulls public/*.
    let out = skopeo_async(
        vec![
            "inspect".into(),
            "--raw".into(),
            "--cert-dir".into(),
            trust.display().to_string(),
            dest("public/tool"),
        ],
        None,
    )
    .await;
    assert!(out.is_ok(), "{out:?}");
    let out = skopeo_async(
        vec![
            "inspect".into(),
            "--raw".into(),
            "--cert-dir".into(),
            trust.display().to_string(),
            dest("apps/web"),
        ],
        None,
    )
    .await;
    assert!(out.is_err());

    // Authenticated but not allowed: 403 DENIED, no challenge.
    let (s, body, h) = status_of(
        c.get(manifest("alice/app"))
            .header("accept", ACCEPT_ALL)
            .header("authorization", basic_header("bob", &password("bob"))),
    )
    .await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("DENIED"), "{body}");
    assert!(!h.contains_key("www-authenticate"));
    // Users do not inherit anonymous rights (first match wins, deny by default).
    let (s, _, _) = status_of(
        c.get(manifest("public/tool"))
            .header("accept", ACCEPT_ALL)
            .header("authorization", basic_header("bob", &password("bob"))),
    )
    .await;
    assert_eq!(s, 403);

    // A mount from a repository the caller may not pull is no mount: a plain
    // upload session (202), and the blob does not come along.
    let layer = &image.blobs[1].digest;
    let mount = |from: &str| {
        format!(
            "{}/v2/bob/app/blobs/uploads/?mount={layer}&from={from}",
            regate.url
        )
    };
    for from in ["alice/app", "..%2Fx"] {
        let (s, body, h) = status_of(
            c.post(mount(from))
                .header("authorization", basic_header("bob", &password("bob"))),
        )
        .await;
        assert_eq!(s, 202, "bob mounted from {from}: {body}");
        assert!(h["location"]
            .to_str()
            .unwrap()
            .contains("/v2/bob/app/blobs/uploads/"));
    }
    let (s, _, _) = status_of(
        c.head(format!("{}/v2/bob/app/blobs/{layer}", regate.url))
            .header("authorization", basic_header("bob", &password("bob"))),
    )
    .await;
    assert_eq!(s, 404, "the blob came along with a refused mount");
    let (s, body, _) = status_of(
        c.post(format!(
            "{}/v2/alice/copy/blobs/uploads/?mount={layer}&from=alice/app",
            regate.url
        ))
        .header("authorization", basic_header("alice", &password("alice"))),
    )
    .await;
    assert_eq!(s, 201, "alice mounts within her namespace: {body}");

    // Deletes are audited with who and what.
    let (s, body, _) = status_of(
        c.delete(format!(
            "{}/v2/alice/app/manifests/{}",
            regate.url, image.digest
        ))
        .header("authorization", basic_header("alice", &password("alice"))),
    )
    .await;
    assert_eq!(s, 202, "{body}");
    let lines = files.audit_lines();
    let del = lines
        .iter()
        .find(|l| l["event"] == "delete")
        .expect("a delete line");
    assert_eq!(del["account"], "alice");
    assert_eq!(del["repository"], "alice/app");
    assert_eq!(del["digest"], image.digest.as_str());
    assert_eq!(del["status"], 202);
    assert!(del["time"].is_string() && del["client"] == "127.0.0.1");
    assert!(lines
        .iter()
        .any(|l| l["event"] == "denied" && l["account"] == "bob"));
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_lists_only_what_the_caller_may_pull_with_correct_pages() {
    let files = AuthFiles::new();
    let (registry, regate) = start(&files, "").await;
    // Repositories straight into the registry: many that alice may not see
    // around the ones she may, so filtered pages must skip across upstream pages.
    let direct = reqwest::Client::new();
    let image = Image::oci("catalog", 512);
    let repos = [
        "a/x",
        "alice/one",
        "apps/web",
        "alice/three",
        "b/y",
        "bob/z",
        "alice/two",
        "public/p",
    ];
    for r in repos {
        image.push(&direct, &registry.url, r, "v1").await;
    }
    let c = regate.client();
    let cat = |q: &str, user: &str| {
        c.get(format!("{}/v2/_catalog{q}", regate.url))
            .header("authorization", basic_header(user, &password(user)))
    };

    let (s, body, _) = status_of(cat("", "alice")).await;
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["repositories"],
        serde_json::json!(["alice/one", "alice/three", "alice/two"])
    );

    // Pages of 2: Link to the next page, none after the last.
    let (_, body, h) = status_of(cat("?n=2", "alice")).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["repositories"],
        serde_json::json!(["alice/one", "alice/three"])
    );
    let link = h["link"].to_str().unwrap();
    assert_eq!(link, "</v2/_catalog?last=alice%2Fthree&n=2>; rel=\"next\"");
    let (_, body, h) = status_of(cat("?last=alice%2Fthree&n=2", "alice")).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["alice/two"]));
    assert!(!h.contains_key("link"));
    // Exactly n left: no Link to an empty page.
    let (_, _, h) = status_of(cat("?n=3", "alice")).await;
    assert!(!h.contains_key("link"));

    // admin sees everything; anonymous gets a challenge.
    let (_, body, _) = status_of(cat("", "admin")).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["repositories"].as_array().unwrap().len(), repos.len());
    let (s, _, h) = status_of(c.get(format!("{}/v2/_catalog", regate.url))).await;
    assert_eq!(s, 401);
    assert!(h.contains_key("www-authenticate"));
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_changes_take_effect_without_restart() {
    let files = AuthFiles::new();
    let (_registry, regate) = start(&files, "").await;
    let c = regate.client();
    let base = format!("{}/v2/", regate.url);
    let get = |u: &str, p: &str| c.get(&base).header("authorization", basic_header(u, p));
    assert_eq!(
        get("alice", &password("alice"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Cached now; change her password and add a user.
    use regate::auth::htpasswd::{edit, Edit};
    edit(
        &files.htpasswd,
        Edit::Set {
            user: "alice",
            password: "new-secret",
            cost: 4,
        },
    )
    .unwrap();
    edit(
        &files.htpasswd,
        Edit::Set {
            user: "dave",
            password: "dave-secret",
            cost: 4,
        },
    )
    .unwrap();
    // The file is looked at once a second, not on every request.
    common::auth::htpasswd_seen().await;
    assert_eq!(
        get("alice", &password("alice"))
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "the old password still works"
    );
    assert_eq!(
        get("alice", "new-secret").send().await.unwrap().status(),
        200
    );
    assert_eq!(
        get("dave", "dave-secret").send().await.unwrap().status(),
        200
    );
    edit(&files.htpasswd, Edit::Remove { user: "dave" }).unwrap();
    common::auth::htpasswd_seen().await;
    assert_eq!(
        get("dave", "dave-secret").send().await.unwrap().status(),
        401
    );
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_lock_an_account_per_address_and_count_a_repeated_guess_once() {
    let files = AuthFiles::new();
    let (_registry, regate) = start(
        &files,
        "max_failed_logins = 3\nfailed_login_window_secs = 2",
    )
    .await;
    let c = regate.client();
    // A second client from another loopback address.
    let other = {
        let pem = std::fs::read(&regate.certs.files.ca_cert).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
            .no_proxy()
            .build()
            .unwrap()
    };
    let base = format!("{}/v2/", regate.url);
    let get = |c: &reqwest::Client, u: &str, p: &str| {
        c.get(&base).header("authorization", basic_header(u, p))
    };
    let status = |r: reqwest::RequestBuilder| async move { r.send().await.unwrap().status() };
    // bob logs in first: his verified credential is cached.
    assert_eq!(status(get(&c, "bob", &password("bob"))).await, 200);
    // A client retrying one wrong password (ctr does, 5-10 times) is
    // refused each time and counted once.
    for _ in 0..6 {
        assert_eq!(status(get(&c, "alice", "guess-1")).await, 401);
    }
    assert_eq!(status(get(&c, "alice", &password("alice"))).await, 200);
    // Three different wrong guesses lock an account out from this address
    // (ci: alice's password is cached now, and a cached credential is never
    // refused)...
    for g in ["ci-1", "ci-2", "ci-3"] {
        assert_eq!(status(get(&c, "ci", g)).await, 401);
    }
    let r = get(&c, "ci", &password("ci")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    assert!(r.text().await.unwrap().contains("TOOMANYREQUESTS"));
    // ...not from another address presenting the right password: failing
    // on purpose cannot keep an account locked for everyone.
    assert_eq!(status(get(&other, "ci", &password("ci"))).await, 200);
    // A credential already verified is not locked out.
    assert_eq!(status(get(&c, "bob", &password("bob"))).await, 200);
    // The block ends with the window.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(status(get(&c, "admin", &password("admin"))).await, 200);
    assert!(files
        .audit_lines()
        .iter()
        .any(|l| l["event"] == "rate_limited"));
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_never_reach_the_registry_and_regate_sends_its_own() {
    use common::auth::GuardedRegistry;
    use common::regate::{config_toml, TestCerts};
    // The registry knows alice with the same password as regate does, and
    // regate's own upstream account.
    let registry = GuardedRegistry::start(&["alice", "regate-upstream"]);
    let files = AuthFiles::new();
    let pw_file = files.dir.path().join("upstream-password");
    std::fs::write(&pw_file, format!("{}\n", password("regate-upstream"))).unwrap();
    let start = |with_upstream_creds: bool| {
        let certs = TestCerts::new();
        let state = tempfile::tempdir().unwrap();
        let mut text = config_toml(&registry.url, &certs, state.path(), &files.basic_toml(""));
        if with_upstream_creds {
            text = text.replace(
                "[upstream]\n",
                &format!(
                    "[upstream]\nusername = \"regate-upstream\"\npassword_file = {:?}\n",
                    pw_file.display().to_string()
                ),
            );
        }
        let settings =
            regate::config::Settings::from_toml(&text, "test", std::iter::empty()).unwrap();
        (settings, certs, state)
    };
    let alice = basic_header("alice", &password("alice"));

    // Without upstream credentials: alice's header is stripped, so the
    // registry (which would accept it) refuses the request.
    let (settings, certs, _state) = start(false);
    let server = regate::server::start(settings).await.unwrap();
    let c = common::regate::client_trusting(&certs.files.ca_cert);
    let url = format!("https://{}/v2/alice/app/tags/list", server.tls_addr);
    let r = c
        .get(&url)
        .header("authorization", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "the client's Authorization reached the registry"
    );
    // A forwarded request (a manifest GET) shows the registry's own challenge.
    let r = c
        .get(format!(
            "https://{}/v2/alice/app/manifests/v1",
            server.tls_addr
        ))
        .header("authorization", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("upstream"));
    server.shutdown().await;

    // With them: regate's own account is used upstream, and a push works.
    let (settings, certs, _state) = start(true);
    let server = regate::server::start(settings).await.unwrap();
    let base = format!("https://{}", server.tls_addr);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", alice.parse().unwrap());
    let pem = std::fs::read(&certs.files.ca_cert).unwrap();
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .default_headers(headers)
        .no_proxy()
        .build()
        .unwrap();
    Image::oci("guarded", 1000)
        .push(&c, &base, "alice/app", "v1")
        .await;
    let r = c
        .get(format!("{base}/v2/alice/app/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The registry really demands credentials.
    let r = reqwest::Client::new()
        .get(format!("{}/v2/alice/app/tags/list", registry.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_bcrypt_htpasswd_line_stops_start_up_naming_the_line() {
    let files = AuthFiles::new();
    let mut text = std::fs::read_to_string(&files.htpasswd).unwrap();
    text.push_str("legacy:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/\n");
    std::fs::write(&files.htpasswd, text).unwrap();
    let certs = common::regate::TestCerts::new();
    let state = tempfile::tempdir().unwrap();
    // An environment override selects the mode, as for any key.
    let toml = files.basic_toml("").replace("mode = \"basic\"\n", "");
    let text = common::regate::config_toml("http://127.0.0.1:9", &certs, state.path(), &toml);
    let env = vec![("REGATE_AUTH__MODE".to_string(), "basic".to_string())];
    let settings = regate::config::Settings::from_toml(&text, "t", env.into_iter()).unwrap();
    assert_eq!(settings.auth.mode, regate::config::AuthMode::Basic);
    let err = regate::server::start(settings)
        .await
        .err()
        .expect("start-up must fail")
        .to_string();
    let want = format!(
        "{}:6: user \"legacy\": an Apache MD5 hash",
        files.htpasswd.display()
    );
    assert!(err.contains(&want), "{err}");
}

/// regate's own endpoints answer OPTIONS (GitLab's probe on its tag route)
/// and methods they do not serve (405 with `Allow`) after authentication,
/// without asking for rights on the repository; the methods they serve still
/// need their rights.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_endpoints_answer_options_and_unserved_methods_without_rights() {
    let files = AuthFiles::new();
    let (_registry, regate) = start(&files, "").await;
    let ca = &regate.certs.files.ca_cert;
    let pem = std::fs::read(ca).unwrap();
    let h1 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .no_proxy()
        .http1_only()
        .build()
        .unwrap();
    let digest = format!("sha256:{}", "0".repeat(64));
    use reqwest::Method as M;
    // ci may pull and push apps/* only: no right at all on alice/x.
    let cases: Vec<(M, String, u16, Option<&str>)> = vec![
        (
            M::OPTIONS,
            "tags/reference/v1".into(),
            200,
            Some("DELETE, OPTIONS"),
        ),
        (
            M::GET,
            "tags/reference/v1".into(),
            405,
            Some("DELETE, OPTIONS"),
        ),
        (
            M::PUT,
            "tags/reference/v1".into(),
            405,
            Some("DELETE, OPTIONS"),
        ),
        (M::GET, "_regate/delete".into(), 405, Some("POST")),
        (M::OPTIONS, "_regate/delete".into(), 405, Some("POST")),
        (M::DELETE, "_regate/deleted".into(), 405, Some("GET")),
        (M::GET, "_regate/restore/v1".into(), 405, Some("POST")),
        (M::PUT, "tags/list".into(), 405, Some("GET")),
        (M::PATCH, format!("referrers/{digest}"), 405, Some("GET")),
        // Served methods still need their rights.
        (M::DELETE, "tags/reference/v1".into(), 403, None),
        (M::POST, "_regate/delete".into(), 403, None),
        (M::GET, "_regate/deleted".into(), 403, None),
        (M::GET, "tags/list".into(), 403, None),
    ];
    for (client, version) in [
        (h1, reqwest::Version::HTTP_11),
        (regate.client(), reqwest::Version::HTTP_2),
    ] {
        for (method, tail, want, allow) in &cases {
            let url = format!("{}/v2/alice/x/{tail}", regate.url);
            let what = format!("{method} {tail} over {version:?}");
            let r = client
                .request(method.clone(), &url)
                .header("authorization", basic_header("ci", &password("ci")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.version(), version, "{what}");
            assert_eq!(r.status().as_u16(), *want, "{what}");
            if let Some(allow) = allow {
                assert_eq!(r.headers()["allow"], *allow, "{what}");
            }
            if *want == 405 {
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["errors"][0]["code"], "UNSUPPORTED", "{what}");
            }
            // Authentication still comes first.
            let r = client.request(method.clone(), &url).send().await.unwrap();
            assert_eq!(r.status(), 401, "{what}, anonymous");
            assert!(r.headers().contains_key("www-authenticate"), "{what}");
            if *method == M::OPTIONS {
                // (Not for every case: failed logins are rate limited.)
                let r = client
                    .request(method.clone(), &url)
                    .header("authorization", basic_header("ci", "wrong"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 401, "{what}, wrong password");
            }
        }
    }
    regate.stop().await;
}

/// `regate passwd add alice/x` is refused (exit 2, the file untouched); an
/// older htpasswd file that already holds `alice/x` logs in, but no
/// `${account}/*` rule gives it `alice/x/*` inside alice's namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_name_that_is_not_one_path_component_gets_no_namespace() {
    let files = AuthFiles::new();
    let before = std::fs::read_to_string(&files.htpasswd).unwrap();
    for user in ["alice/x", "Alice"] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_regate"));
        cmd.args(["passwd", "add", user, "--password-stdin", "--cost", "4"])
            .arg("--file")
            .arg(&files.htpasswd);
        let (code, _, err) = common::run_captured(cmd, Some("pw\n"));
        assert_eq!(code, 2, "{user}: {err}");
        assert!(err.contains("one repository path component"), "{err}");
    }
    assert_eq!(std::fs::read_to_string(&files.htpasswd).unwrap(), before);

    common::auth::write_htpasswd(&files.htpasswd, &["alice", "alice/x"]);
    let (registry, regate) = start(&files, "").await;
    Image::oci("slash-account", 128)
        .push(&reqwest::Client::new(), &registry.url, "alice/x/app", "v1")
        .await;
    let c = regate.client();
    let get = |user: &str| {
        c.get(format!("{}/v2/alice/x/app/manifests/v1", regate.url))
            .header("accept", ACCEPT_ALL)
            .header("authorization", basic_header(user, &password(user)))
    };
    let (status, body, _) = status_of(get("alice/x")).await;
    assert_eq!(status, 403, "{body}");
    let (status, _, _) = status_of(get("alice")).await;
    assert_eq!(status, 200);
    let push = c
        .post(format!("{}/v2/alice/x/app/blobs/uploads/", regate.url))
        .header(
            "authorization",
            basic_header("alice/x", &password("alice/x")),
        );
    assert_eq!(status_of(push).await.0, 403);
    regate.stop().await;
}

/// `GET /v2/<name>/_regate/deleted` needs `pull`, but says who deleted each
/// tag only to callers that may `delete` there (or have `admin`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deleted_tags_list_names_the_deleter_only_to_those_who_may_delete() {
    let files = AuthFiles::new();
    let (_registry, regate) = start(&files, "").await;
    let c = regate.client();
    let admin = basic_header("admin", &password("admin"));
    for repo in ["public/app", "apps/web"] {
        let img = Image::oci(&format!("deleted-{repo}"), 128);
        for b in img.all_blobs() {
            let r = c
                .post(format!("{}/v2/{repo}/blobs/uploads/", regate.url))
                .header("authorization", &admin)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            let loc =
                common::images::absolute(&regate.url, r.headers()["location"].to_str().unwrap());
            let r = c
                .put(format!("{loc}&digest={}", b.digest))
                .header("authorization", &admin)
                .body(b.bytes.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
        let r = c
            .put(format!("{}/v2/{repo}/manifests/v1", regate.url))
            .header("authorization", &admin)
            .header("content-type", &img.media_type)
            .body(img.manifest.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let r = c
            .delete(format!("{}/v2/{repo}/manifests/v1", regate.url))
            .header("authorization", &admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let deleters = |repo: &str, auth: Option<String>| {
        let mut req = c.get(format!("{}/v2/{repo}/_regate/deleted", regate.url));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            let v: serde_json::Value = r.json().await.unwrap();
            let list = v["deleted"].as_array().unwrap().clone();
            assert_eq!(list.len(), 1, "{v}");
            assert_eq!(list[0]["tag"], "v1");
            list[0]["account"].clone()
        }
    };
    // Anonymous may pull public/*, ci may pull apps/*: neither may delete.
    assert_eq!(deleters("public/app", None).await, serde_json::Value::Null);
    assert_eq!(
        deleters("apps/web", Some(basic_header("ci", &password("ci")))).await,
        serde_json::Value::Null
    );
    assert_eq!(deleters("apps/web", Some(admin.clone())).await, "admin");
    assert_eq!(deleters("public/app", Some(admin)).await, "admin");
    regate.stop().await;
}
