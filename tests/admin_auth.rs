//! The admin API behind the `admin` right: a real registry and GC behind
//! regate in basic mode with the example rules (only `admin` has the right
//! on `*`), the HTTP API and the `regate maintenance` / `regate gc` CLI.

mod common;

use std::process::Command;

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
