//! The first fifteen minutes (issue 12): what a new operator meets from the
//! first `check-config` to the first refused push. Every check runs the real
//! binary (and, where a registry is involved, a real `docker-registry`).

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::auth::{basic_header, password, AuthFiles};
use common::regate::{config_toml, RegateProcess, TestCerts};
use common::{Regate, Registry};

fn regate_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regate"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    common::run_captured(cmd, None)
}

/// `regate serve` that must refuse to start: one still running after 20 s
/// is stopped and the test fails.
fn serve(config: &Path) -> (i32, String, String) {
    use std::process::Stdio;
    let dir = config.parent().unwrap();
    let (out, err) = (dir.join("serve.out"), dir.join("serve.err"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_regate"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "regate serve started instead of refusing:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (code, read(&out), read(&err))
}

#[test]
fn check_config_names_every_unknown_key_with_its_path_and_a_did_you_mean() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("typos.toml");
    std::fs::write(
        &cfg,
        "[server]\ndev_cert = true\nlisten = \"127.0.0.1:5443\"\n[upstream]\nurl = \"http://127.0.0.1:5000\"\nconect_timeout = \"5s\"\n[state]\ndirectory = \"x\"\n[[acl]]\naccount = \"a\"\nrepository = \"*\"\nactoins = [\"pull\"]\n",
    )
    .unwrap();
    let (code, _, err) = regate_cli(&["check-config", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    for (key, near, line) in [
        ("server.dev_cert", "server.dev_certs", 2),
        ("upstream.conect_timeout", "upstream.connect_timeout", 6),
        ("state.directory", "state.dir", 8),
        ("acl[0].actoins", "acl[0].actions", 12),
    ] {
        let found = err.lines().any(|l| {
            l.contains(&format!("- {key}: unknown key"))
                && l.contains(&format!("did you mean `{near}`?"))
                && l.contains(&format!("(line {line})"))
        });
        assert!(found, "{key} -> {near} (line {line}) missing in:\n{err}");
    }
    assert!(!err.contains("(syntax)"), "{err}");
    assert!(err.contains("5 problems"), "{err}");
    assert!(
        err.contains("- acl[0].actions: missing; this table needs it"),
        "{err}"
    );

    // The same through an environment variable: it is named.
    std::fs::write(
        &cfg,
        "[server]\ndev_certs = true\n[upstream]\nurl = \"http://127.0.0.1:5000\"\n",
    )
    .unwrap();
    let (code, _, err) = regate_cli(
        &["check-config", "--config", cfg.to_str().unwrap()],
        &[("REGATE_SERVER__LISTN", "127.0.0.1:1")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("server.listn: unknown key; did you mean `server.listen`?")
            && err.contains("REGATE_SERVER__LISTN"),
        "{err}"
    );
}

#[test]
fn check_config_checks_the_managed_registry_binary() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("m.toml");
    for (binary, says, not) in [
        ("/nonexistent/bin/docker-registry", "no such file", "PATH"),
        (
            "no-such-registry-binary",
            "not found on PATH",
            "no such file",
        ),
    ] {
        std::fs::write(
            &cfg,
            format!("[server]\ndev_certs = true\n[upstream.managed]\nbinary = {binary:?}\n"),
        )
        .unwrap();
        let (code, _, err) = regate_cli(&["check-config", "--config", cfg.to_str().unwrap()], &[]);
        assert_eq!(code, 2, "{err}");
        let line = err
            .lines()
            .find(|l| l.contains("upstream.managed.binary"))
            .unwrap_or_else(|| panic!("no upstream.managed.binary in:\n{err}"));
        assert!(
            line.contains(binary) && line.contains(says) && !line.contains(not),
            "{line}"
        );
    }
    // The installed one is found, by name and by path.
    common::require_tool("docker-registry");
    std::fs::write(
        &cfg,
        "[server]\ndev_certs = true\n[upstream.managed]\nbinary = \"/usr/bin/docker-registry\"\n",
    )
    .unwrap();
    let (code, out, err) = regate_cli(&["check-config", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_regate_on_the_same_state_directory_refuses() {
    let registry = Registry::start();
    let first = Regate::start(&registry.url).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("second.toml");
    std::fs::write(
        &cfg,
        config_toml(&registry.url, &first.certs, first.state_dir.path(), ""),
    )
    .unwrap();
    let (code, _, err) = tokio::task::spawn_blocking(move || serve(&cfg))
        .await
        .unwrap();
    assert_eq!(code, 2, "{err}");
    let state = first.state_dir.path().display().to_string();
    for needle in [
        "state.dir",
        state.as_str(),
        &format!("pid {}", std::process::id()),
        "REGATE_STATE__DIR",
        "Stop it first",
    ] {
        assert!(err.contains(needle), "{needle:?} missing in:\n{err}");
    }
    // Once the first is gone, the directory is free again.
    let first = first.restart().await;
    first.stop().await;
}

#[test]
fn a_taken_port_fails_before_the_managed_registry_starts() {
    common::require_tool("docker-registry");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("registry");
    let cfg = dir.path().join("r.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"{addr}\"\nadmin_listen = \"127.0.0.1:0\"\ndev_certs = true\ntls_cert = \"{0}/certs/server.crt\"\ntls_key = \"{0}/certs/server.key\"\n[upstream.managed]\ndata_dir = \"{1}\"\n[state]\ndir = \"{0}/state\"\n",
            dir.path().display(),
            data.display()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let (code, _, err) = serve(&cfg);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("server.listen = {addr}"))
            && err.contains("REGATE_SERVER__LISTEN")
            && err.contains("cannot listen"),
        "{err}"
    );
    // Nothing was started or written for the registry, no certificate made.
    assert!(!data.join("registry.yml").exists());
    assert!(!data.join("storage").exists());
    assert!(!dir.path().join("certs").exists());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn dev_certs_never_overwrite_an_existing_key_or_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    regate::certs::generate(&certs, &["localhost".into()]).unwrap();
    std::fs::remove_file(certs.join("server.crt")).unwrap();
    let before: Vec<Vec<u8>> = ["server.key", "ca.crt", "ca.key"]
        .iter()
        .map(|f| std::fs::read(certs.join(f)).unwrap())
        .collect();
    let cfg = dir.path().join("d.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndev_certs = true\ntls_cert = \"{0}/server.crt\"\ntls_key = \"{0}/server.key\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n[state]\ndir = \"{1}/state\"\n",
            certs.display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let (code, _, err) = serve(&cfg);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "server.tls_cert {} missing",
            certs.join("server.crt").display()
        )) && err.contains("never overwrites"),
        "{err}"
    );
    let after: Vec<Vec<u8>> = ["server.key", "ca.crt", "ca.key"]
        .iter()
        .map(|f| std::fs::read(certs.join(f)).unwrap())
        .collect();
    assert_eq!(before, after, "a key or the CA was rewritten");
    assert!(!certs.join("server.crt").exists());
}

fn clients(ca: &Path) -> [(&'static str, reqwest::Client); 2] {
    let pem = std::fs::read(ca).unwrap();
    let build = |h2: bool| {
        let b = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .tls_built_in_root_certs(false)
            .no_proxy();
        if h2 {
            b.http2_prior_knowledge()
        } else {
            b.http1_only()
        }
        .build()
        .unwrap()
    };
    [("HTTP/1.1", build(false)), ("HTTP/2", build(true))]
}

/// The status and OCI error message of one request as `user`.
async fn attempt(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    user: &str,
) -> (u16, String) {
    let mut req = client
        .request(method.clone(), url)
        .header("authorization", basic_header(user, &password(user)));
    if method == reqwest::Method::POST {
        req = req.header("content-length", "0");
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_owned))
        .unwrap_or(body);
    (status, message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_names_action_and_repository_and_sighup_reloads_the_rules() {
    let registry = Registry::start();
    let files = AuthFiles::new();
    let certs = TestCerts::new();
    let dir = tempfile::tempdir().unwrap();
    let base_config = config_toml(
        &registry.url,
        &certs,
        &dir.path().join("state"),
        &files.basic_toml(""),
    );
    let process = RegateProcess::spawn(dir.path(), &base_config, &[]);
    // Once ready: the next steps, with the real host:port; a log file gets
    // no colour codes.
    let port = process.host.rsplit(':').next().unwrap().to_owned();
    let host = format!("localhost:{port}");
    let ready_by = Instant::now() + Duration::from_secs(10);
    let log = loop {
        // Printed right after the ready file is written.
        let log = std::fs::read_to_string(&process.log_path).unwrap();
        if log.contains("\nAdd a user:") || Instant::now() > ready_by {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for needle in [
        format!("regate is ready: https://{host}/v2/"),
        format!("/etc/docker/certs.d/{host}/ca.crt"),
        format!("/etc/containers/certs.d/{host}/ca.crt"),
        certs.files.ca_cert.display().to_string(),
        "regate passwd add NAME".to_owned(),
        process.admin_url.clone().unwrap(),
    ] {
        assert!(log.contains(&needle), "{needle:?} missing in:\n{log}");
    }
    assert!(!log.contains('\x1b'), "colour codes in a log file:\n{log}");
    let upload = format!("{}/v2/team/app/blobs/uploads/", process.url);
    let manifest = format!("{}/v2/team/app/manifests/v1", process.url);

    for (version, client) in clients(&certs.files.ca_cert) {
        let (status, message) = attempt(&client, reqwest::Method::POST, &upload, "alice").await;
        assert_eq!(
            (status, message.as_str()),
            (403, "alice may not push to team/app"),
            "{version}"
        );
        let (status, message) = attempt(&client, reqwest::Method::GET, &manifest, "bob").await;
        assert_eq!(
            (status, message.as_str()),
            (403, "bob may not pull from team/app"),
            "{version}"
        );
        let (status, body) = attempt(&client, reqwest::Method::HEAD, &manifest, "bob").await;
        assert_eq!((status, body.as_str()), (403, ""), "{version} HEAD");
    }

    // A broken file on SIGHUP keeps the rules in force ...
    let hup = || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(process.pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap()
    };
    std::fs::write(
        &process.config_path,
        format!("{base_config}\n[[acl]]\nacount = \"x\"\n"),
    )
    .unwrap();
    hup();
    let log_says = |needle: &str| {
        std::fs::read_to_string(&process.log_path)
            .unwrap_or_default()
            .contains(needle)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log_says("the rules in force stay") {
        assert!(Instant::now() < deadline, "no reload error logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(log_says("did you mean"), "the log names the typo");
    let [(_, client), _] = clients(&certs.files.ca_cert);
    let (status, _) = attempt(&client, reqwest::Method::POST, &upload, "alice").await;
    assert_eq!(status, 403, "the old rules stay after a broken reload");

    // ... a good one puts the new rules in force, without a restart.
    std::fs::write(
        &process.config_path,
        format!("{base_config}\n[[acl]]\naccount = \"alice\"\nrepository = \"team/*\"\nactions = [\"pull\", \"push\"]\n"),
    )
    .unwrap();
    hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, message) = attempt(&client, reqwest::Method::POST, &upload, "alice").await;
        if status == 202 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the rules: {status} {message}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, message) = attempt(&client, reqwest::Method::GET, &manifest, "bob").await;
    assert_eq!(
        (status, message.as_str()),
        (403, "bob may not pull from team/app")
    );
    assert!(log_says("[[acl]] rules and [auth.groups] reloaded"));
    drop(registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_reads_the_podman_auth_file_and_says_where_it_looked_on_a_401() {
    let registry = Registry::start();
    let files = AuthFiles::new();
    let regate = Regate::start_with(&registry.url, &files.basic_toml("")).await;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "authorization",
        basic_header("alice", &password("alice")).parse().unwrap(),
    );
    let pem = std::fs::read(&regate.certs.files.ca_cert).unwrap();
    let alice = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .default_headers(headers)
        .no_proxy()
        .build()
        .unwrap();
    common::Image::oci("first-run", 100)
        .push(&alice, &regate.url, "alice/app", "v1")
        .await;
    common::Image::oci("first-run-big", 200_000)
        .push(&alice, &regate.url, "alice/app", "v2")
        .await;
    let home = tempfile::tempdir().unwrap();
    let auth_file = home.path().join("podman-auth.json");
    let target = format!("{}/alice/app", regate.host);
    let run = |with_file: bool| {
        let (ca, home, auth_file, target) = (
            regate.certs.files.ca_cert.clone(),
            home.path().to_owned(),
            auth_file.clone(),
            target.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_regate"));
            cmd.args(["tags", "ls", &target, "--cacert"])
                .arg(&ca)
                .env("HOME", &home)
                .env_remove("XDG_RUNTIME_DIR")
                .env_remove("REGATE_USERNAME")
                .env_remove("REGATE_PASSWORD");
            if with_file {
                cmd.env("REGISTRY_AUTH_FILE", &auth_file);
            } else {
                cmd.env_remove("REGISTRY_AUTH_FILE");
            }
            common::run_captured(cmd, None)
        })
    };
    let (code, out, err) = run(false).await.unwrap();
    assert_ne!(code, 0, "{out}{err}");
    let uid = nix::unistd::getuid();
    for needle in [
        "401",
        "no credentials found",
        &format!("/run/containers/{uid}/auth.json"),
        &format!("{}/.docker/config.json", home.path().display()),
        "--user NAME --password-stdin",
        &format!("podman login {}", regate.host),
    ] {
        assert!(err.contains(needle), "{needle:?} missing in:\n{err}");
    }

    // What `podman login` writes, found through REGISTRY_AUTH_FILE.
    use base64::Engine as _;
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("alice:{}", password("alice")));
    std::fs::write(
        &auth_file,
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, regate.host),
    )
    .unwrap();
    let (code, out, err) = run(true).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    // `tags ls`: the SIZE column is right-aligned under its header.
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("TAG") && lines[0].ends_with("SIZE"),
        "{out}"
    );
    assert!(
        lines.iter().all(|l| l.len() == lines[0].len()),
        "columns not aligned:\n{out}"
    );

    // Refused credentials say where they came from.
    let wrong = base64::engine::general_purpose::STANDARD.encode("alice:wrong");
    std::fs::write(
        &auth_file,
        format!(r#"{{"auths":{{"{}":{{"auth":"{wrong}"}}}}}}"#, regate.host),
    )
    .unwrap();
    let (code, _, err) = run(true).await.unwrap();
    assert_ne!(code, 0);
    assert!(
        err.contains("were refused") && err.contains(&auth_file.display().to_string()),
        "{err}"
    );
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_status_prints_a_summary_not_json() {
    let registry = Registry::start();
    let regate = Regate::start(&registry.url).await;
    let admin = regate.admin_url.clone();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || regate_cli(&["gc", "status", "--admin", &admin], &[]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("write gate: open") && out.contains("no GC running"),
        "{out}"
    );
    assert!(!out.contains('{') && !out.contains("\"since\""), "{out}");
    regate.stop().await;
}
