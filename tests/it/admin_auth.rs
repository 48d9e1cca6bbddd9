//! The admin API behind the `admin` right: a real registry and GC behind
//! regate in basic mode with the example rules (only `admin` has the right
//! on `*`), the HTTP API and the `regate maintenance` / `regate gc` CLI.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::auth::{basic_header, password, AuthFiles};
use common::gc::{admin_client, gc_section};
use common::{Regate, Registry};

async fn call(
    method: reqwest::Method,
    url: &str,
    auth: Option<(&str, &str)>,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let mut req = admin_client().request(method.clone(), url);
    if method == reqwest::Method::POST {
        req = req.json(&serde_json::json!({"dry_run": true}));
    }
    if let Some((u, p)) = auth {
        req = req.header("authorization", basic_header(u, p));
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (
        status,
        headers,
        r.json().await.unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_accounts_with_the_admin_right_use_the_admin_api() {
    common::require_tool("docker-registry");
    let registry = Registry::start();
    let files = AuthFiles::new();
    let regate = Regate::start_with(
        &registry.url,
        &format!("{}\n{}", gc_section(&registry, ""), files.basic_toml("")),
    )
    .await;
    let admin = &regate.admin_url;
    let gc_url = format!("{admin}/admin/gc");
    let admin_pw = password("admin");
    let ci_pw = password("ci");

    // Probes and metrics stay open for load balancers and Prometheus.
    for path in ["/healthz", "/metrics"] {
        let (status, _, _) = call(reqwest::Method::GET, &format!("{admin}{path}"), None).await;
        assert_eq!(status, 200, "{path}");
    }

    // No credentials: 401 with a Basic challenge and an OCI error body.
    let (status, headers, body) = call(reqwest::Method::GET, &gc_url, None).await;
    assert_eq!(status, 401);
    let challenge = headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Basic realm="), "{challenge}");
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");

    // A wrong password: 401. An account without the right (ci may push apps/*): 403.
    let (status, _, _) = call(reqwest::Method::POST, &gc_url, Some(("admin", "nope"))).await;
    assert_eq!(status, 401);
    let (status, _, body) = call(reqwest::Method::POST, &gc_url, Some(("ci", &ci_pw))).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errors"][0]["code"], "DENIED");
    let (status, _, _) = call(
        reqwest::Method::PUT,
        &format!("{admin}/admin/maintenance"),
        Some(("alice", &password("alice"))),
    )
    .await;
    assert_eq!(status, 403);

    // admin may: a dry run starts, the status reads.
    let (status, _, body) = call(reqwest::Method::POST, &gc_url, Some(("admin", &admin_pw))).await;
    assert_eq!(status, 202, "{body}");
    let (status, _, body) = call(
        reqwest::Method::GET,
        &format!("{admin}/admin/status"),
        Some(("admin", &admin_pw)),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The CLI: without credentials it explains what to pass; with them it works.
    let cli = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_regate"));
        cmd.args(args)
            .args(["--admin", admin.as_str()])
            .env_remove("REGATE_USERNAME")
            .env_remove("REGATE_PASSWORD");
        common::run_captured(cmd, stdin)
    };
    let (code, _, err) = cli(&["maintenance", "status"], None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("401") && err.contains("--user"), "{err}");
    let (code, _, err) = cli(
        &["maintenance", "on", "--user", "ci", "--password-stdin"],
        Some(&ci_pw),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("403") && err.contains("admin"), "{err}");
    let (code, out, err) = cli(
        &[
            "maintenance",
            "on",
            "--reason",
            "backup",
            "--user",
            "admin",
            "--password-stdin",
        ],
        Some(&admin_pw),
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli(
        &["maintenance", "off", "--user", "admin", "--password-stdin"],
        Some(&admin_pw),
    );
    assert_eq!(code, 0, "{out}{err}");

    // The audit log names who changed what, and who was refused; never a password.
    let lines = files.audit_lines();
    let admin_actions: Vec<_> = lines.iter().filter(|l| l["event"] == "admin").collect();
    assert!(
        admin_actions.iter().any(|l| l["account"] == "admin"
            && l["method"] == "POST"
            && l["reference"] == "/admin/gc"),
        "{lines:?}"
    );
    assert!(admin_actions
        .iter()
        .any(|l| l["method"] == "PUT" && l["reference"] == "/admin/maintenance"));
    assert!(admin_actions
        .iter()
        .any(|l| l["method"] == "DELETE" && l["reference"] == "/admin/maintenance"));
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "denied" && l["account"] == "ci"),
        "{lines:?}"
    );
    let text = std::fs::read_to_string(&files.audit).unwrap();
    assert!(!text.contains(&admin_pw) && !text.contains(&ci_pw));
    regate.stop().await;
}

/// Polls `/admin/status` (as admin) until the gate is in `state`.
async fn wait_gate_as_admin(admin: &str, state: &str, within: Duration) -> serde_json::Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let (code, _, s) = call(
            reqwest::Method::GET,
            &format!("{admin}/admin/status"),
            Some(("admin", &password("admin"))),
        )
        .await;
        assert_eq!(code, 200, "{s}");
        if s["gate"]["state"] == state {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gate not {state} within {within:?}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A client that goes away from `PUT /admin/maintenance` while the gate
/// drains: the change still ends with the gate closed, and it is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_left_mid_drain_by_its_client_still_closes_and_is_audited() {
    use tokio::io::AsyncWriteExt;
    let registry = Registry::start();
    let files = AuthFiles::new();
    let regate = Regate::start_with(
        &registry.url,
        &format!(
            "{}\n{}",
            gc_section(&registry, "drain_timeout = \"2s\""),
            files.basic_toml("")
        ),
    )
    .await;
    let admin_auth = basic_header("admin", &password("admin"));
    let plain = regate.plain_url.trim_start_matches("http://").to_owned();

    // A write under way: a chunk whose body is still coming.
    let r = admin_client()
        .post(format!("{}/v2/admin/app/blobs/uploads/", regate.plain_url))
        .header("authorization", &admin_auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let target = &location[location.find("/v2/").unwrap()..];
    let mut write = tokio::net::TcpStream::connect(&plain).await.unwrap();
    write
        .write_all(
            format!(
                "PATCH {target} HTTP/1.1\r\nHost: {plain}\r\nAuthorization: {admin_auth}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n{}",
                "x".repeat(10)
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    wait_gate_as_admin(&regate.admin_url, "open", Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The maintenance call, then its client leaves while the gate drains.
    let admin_addr = regate.admin_url.trim_start_matches("http://").to_owned();
    let mut call = tokio::net::TcpStream::connect(&admin_addr).await.unwrap();
    let body = r#"{"reason": "left mid-drain"}"#;
    call.write_all(
        format!(
            "PUT /admin/maintenance HTTP/1.1\r\nHost: {admin_addr}\r\nAuthorization: {admin_auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    wait_gate_as_admin(&regate.admin_url, "draining", Duration::from_secs(2)).await;
    drop(call);

    // drain_timeout (2s) passes with the write still under way: closed anyway.
    let status = wait_gate_as_admin(&regate.admin_url, "closed", Duration::from_secs(6)).await;
    assert!(
        status["gate"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("left mid-drain"),
        "{status}"
    );
    let lines = files.audit_lines();
    assert!(
        lines.iter().any(|l| l["event"] == "admin"
            && l["account"] == "admin"
            && l["method"] == "PUT"
            && l["reference"] == "/admin/maintenance"),
        "{lines:?}"
    );
    drop(write);
    regate.stop().await;
}
