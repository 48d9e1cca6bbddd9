//! TLS to PostgreSQL (`state.url` with libpq's `sslmode` and `sslrootcert`):
//! a real PostgreSQL with `ssl = on` and a certificate of the test's own for
//! a host name (reached through `hostaddr=127.0.0.1`), regate in front of a
//! real registry on it. verify-full works end to end and every connection is
//! encrypted; a wrong CA, a wrong host name and `require` against a server
//! without TLS stop the start with what to do, never the password;
//! `check-config` reads those URLs.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::postgres::{Postgres, PASSWORD, USER};
use common::regate::{config_toml, TestCerts};
use common::{Image, Regate, Registry};
use regate::config::{Settings, StateUrl};
use regate::state::State;

/// The name on the PostgreSQL server's certificate.
const DB_HOST: &str = "db.regate.test";

/// `state.url` for `db` on `pg`, dialled at 127.0.0.1 under the name `host`.
fn tls_url(pg: &Postgres, host: &str, db: &str, mode: &str, ca: Option<&Path>) -> String {
    let mut url = format!(
        "postgres://{USER}:{PASSWORD}@{host}:{}/{db}?sslmode={mode}",
        pg.port
    );
    if host != "127.0.0.1" {
        url.push_str("&hostaddr=127.0.0.1");
    }
    if let Some(ca) = ca {
        url.push_str(&format!("&sslrootcert={}", ca.display()));
    }
    url
}

/// The error that stops a regate on `url` from starting.
async fn start_error(upstream: &str, url: &str) -> String {
    let certs = TestCerts::new();
    let dir = tempfile::tempdir().unwrap();
    let text = config_toml(upstream, &certs, dir.path(), &format!("url = {url:?}\n"));
    let settings = Settings::from_toml(&text, "t", std::iter::empty()).expect("a valid config");
    let Err(err) = regate::server::start(settings).await else {
        panic!("regate started on {}", StateUrl::parse(url).unwrap());
    };
    let err = err.to_string();
    assert!(err.contains("state.url"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
    err
}

/// Opens the state at `url` off the async threads.
async fn open_state(url: &str) -> Result<State, String> {
    let url = StateUrl::parse(url).unwrap();
    tokio::task::spawn_blocking(move || State::open_url(&url).map_err(|e| e.to_string()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn regate_works_on_postgresql_over_tls_with_verify_full() {
    let pg_certs = TestCerts::for_hosts(&[DB_HOST]);
    let pg = Postgres::start_tls(&pg_certs.files.server_cert, &pg_certs.files.server_key);
    pg.create_database("tls");
    let url = tls_url(
        &pg,
        DB_HOST,
        "tls",
        "verify-full",
        Some(&pg_certs.files.ca_cert),
    );
    let r = Registry::start();
    let a = Regate::start_with(&r.url, &format!("url = {url:?}\n")).await;
    let img = Image::oci("over-tls", 512);
    img.push(&a.client(), &a.url, "app", "v1").await;
    img.push(&a.client(), &a.url, "app", "v2").await;
    // A tag delete: its journal entry and history go through PostgreSQL.
    let resp = a
        .client()
        .delete(format!("{}/v2/app/manifests/v1", a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(
        pg.sql(
            "tls",
            "SELECT count(*) FROM tag_deletions WHERE repository = 'app' AND tag = 'v1'"
        ),
        "1"
    );
    // Every connection of this replica is encrypted, each named after its
    // role and the replica.
    let gc: serde_json::Value = reqwest::get(format!("{}/admin/gc", a.admin_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let replica = gc["gate"]["cluster"]["replica"]
        .as_str()
        .unwrap_or_else(|| panic!("no replica in {gc}"))
        .to_owned();
    let query = format!(
        "SELECT string_agg(DISTINCT split_part(a.application_name, ' ', 2), ',' ORDER BY split_part(a.application_name, ' ', 2)) || ' ' || bool_and(s.ssl) || ' ' || bool_and(a.application_name LIKE '% {replica}')
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name LIKE 'regate %'"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let seen = pg.sql("tls", &query);
        if seen == "cluster,follower,lease,state true true" {
            break;
        }
        assert!(Instant::now() < deadline, "connections seen: {seen:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_ca_or_host_name_stops_the_start_saying_what_to_do() {
    let pg_certs = TestCerts::for_hosts(&[DB_HOST]);
    let other = TestCerts::for_hosts(&[DB_HOST]);
    let pg = Postgres::start_tls(&pg_certs.files.server_cert, &pg_certs.files.server_key);
    pg.create_database("refused");
    let r = Registry::start();

    // A CA that did not sign the server's certificate.
    let other_ca = other.files.ca_cert.display().to_string();
    let err = start_error(
        &r.url,
        &tls_url(
            &pg,
            DB_HOST,
            "refused",
            "verify-full",
            Some(&other.files.ca_cert),
        ),
    )
    .await;
    assert!(
        err.contains(&format!("not signed by the CA in sslrootcert={other_ca}")),
        "{err}"
    );

    // The right CA, but a host the certificate does not name.
    let err = start_error(
        &r.url,
        &tls_url(
            &pg,
            "127.0.0.1",
            "refused",
            "verify-full",
            Some(&pg_certs.files.ca_cert),
        ),
    )
    .await;
    assert!(err.contains("does not name the host"), "{err}");

    // verify-ca checks the CA, not the name (libpq's meaning).
    let ca_only = |ca: &Path| tls_url(&pg, "127.0.0.1", "refused", "verify-ca", Some(ca));
    open_state(&ca_only(&pg_certs.files.ca_cert))
        .await
        .expect("verify-ca with the right CA connects by address");
    let err = open_state(&ca_only(&other.files.ca_cert))
        .await
        .err()
        .expect("verify-ca with another CA is refused");
    assert!(err.contains("not signed by the CA"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");

    // require without sslrootcert: encrypted, the certificate unchecked.
    let s = open_state(&tls_url(&pg, "127.0.0.1", "refused", "require", None))
        .await
        .expect("require without a CA connects");
    assert_eq!(
        pg.sql(
            "refused",
            "SELECT bool_and(s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name LIKE 'regate %'"
        ),
        "t"
    );
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sslmode_require_against_a_server_without_tls_stops_the_start_and_other_advice() {
    let pg = Postgres::start();
    let plain = pg.create_database("plain");
    let ca = TestCerts::for_hosts(&[DB_HOST]);
    let r = Registry::start();
    for url in [
        format!("{plain}?sslmode=require"),
        format!(
            "{plain}?sslmode=verify-full&sslrootcert={}",
            ca.files.ca_cert.display()
        ),
    ] {
        let err = start_error(&r.url, &url).await;
        assert!(
            err.contains("the server does not offer TLS") && err.contains("ssl = on"),
            "{err}"
        );
    }
    // The advice for a wrong password and a missing database.
    let wrong = plain.replace(PASSWORD, "wrong-s3cret");
    let err = start_error(&r.url, &wrong).await;
    assert!(
        err.contains("check the user and password") && !err.contains("wrong-s3cret"),
        "{err}"
    );
    let missing = plain.replace("/plain", "/missing");
    let err = start_error(&r.url, &missing).await;
    assert!(err.contains("does not exist: create it"), "{err}");
    // prefer (libpq's default) falls back to plain TCP.
    open_state(&format!("{plain}?sslmode=prefer"))
        .await
        .expect("prefer connects without TLS");
    open_state(&plain).await.expect("no sslmode: prefer");
}

/// `regate check-config` on a config whose `state.url` is `url`: exit code,
/// stdout, stderr.
fn check_config(url: &str) -> (i32, String, String) {
    let certs = TestCerts::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("regate.toml");
    let text = config_toml(
        "http://127.0.0.1:5000",
        &certs,
        &dir.path().join("state"),
        "",
    );
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_regate"))
        .args(["check-config", "--config", cfg.to_str().unwrap()])
        .env("REGATE_STATE__URL", url)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        !stdout.contains("s3cret") && !stderr.contains("s3cret"),
        "{stdout}{stderr}"
    );
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

#[test]
fn check_config_reads_sslmode_and_the_ca_file() {
    let certs = TestCerts::for_hosts(&[DB_HOST]);
    let ca = certs.files.ca_cert.display().to_string();
    let base = format!("postgres://regate:s3cret@{DB_HOST}:5432/regate");

    let (code, out, err) = check_config(&format!("{base}?sslmode=verify-full&sslrootcert={ca}"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("sslmode=verify-full") && out.contains(&ca) && out.contains("name the host"),
        "{out}"
    );

    let (code, out, err) = check_config(&format!("{base}?sslmode=require"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("not checked"), "{out}");

    for (query, says) in [
        (
            "?sslmode=verify-full&sslrootcert=/missing/ca.crt".to_owned(),
            "sslrootcert=/missing/ca.crt: cannot read",
        ),
        ("?sslmode=verify-full".to_owned(), "add sslrootcert="),
        (
            format!(
                "?sslmode=verify-ca&sslrootcert={}",
                certs.files.server_key.display()
            ),
            "no PEM certificate found",
        ),
        (
            "?sslmode=allow".to_owned(),
            "sslmode=allow is not supported",
        ),
    ] {
        let (code, out, err) = check_config(&format!("{base}{query}"));
        assert_eq!(code, 2, "{query}: {out}{err}");
        assert!(
            err.contains("state.url") && err.contains(says),
            "{query}: {err}"
        );
    }
}
