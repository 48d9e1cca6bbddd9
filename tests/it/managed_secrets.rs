//! Secrets of managed mode on disk and in logs: the generated registry
//! config (it holds `http.secret`) and regate's state database are private
//! to regate's user, and the registry's own log lines, passed through
//! regate's log, never carry an upload's `_state`.

use crate::common;

use std::os::unix::fs::PermissionsExt as _;

use common::regate::{client_trusting, config_toml, RegateProcess, TestCerts};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_config_and_state_are_private_and_upload_state_never_reaches_the_log() {
    common::require_tool("docker-registry");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("registry");
    let state = dir.path().join("state");
    let certs = TestCerts::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = config_toml(
        &format!("http://127.0.0.1:{port}"),
        &certs,
        &state,
        &format!(
            "[upstream.managed]\ndata_dir = {:?}\n[log]\nlevel = \"info,regate::registry=debug\"\n",
            data.display().to_string()
        ),
    );
    let regate = RegateProcess::spawn(dir.path(), &text, &[]);
    let client = client_trusting(&certs.files.ca_cert);

    // An upload whose digest does not match: the registry logs the request
    // URI, `_state` included, at error level.
    let r = client
        .post(format!("{}/v2/s/app/blobs/uploads/", regate.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let state_value = location
        .split_once("_state=")
        .map(|(_, v)| v.split('&').next().unwrap().to_owned())
        .expect("the upload URL carries _state");
    assert!(state_value.len() > 20, "{location}");
    let url = common::images::absolute(&regate.url, &location);
    let r = client
        .put(format!("{url}&digest=sha256:{}", "0".repeat(64)))
        .body(vec![1u8; 100])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    for path in [
        data.join("registry.yml"),
        data.join("http.secret"),
        state.join("regate.db"),
        state.join("regate.db-wal"),
        state.join("regate.db-shm"),
    ] {
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }

    // The registry's line about the failed upload was passed through, redacted.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(&regate.log_path).unwrap();
        if log.contains("_state=REDACTED") || std::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(log.contains("_state=REDACTED"), "{log}");
    let decoded = state_value.replace("%2B", "+").replace("%3D", "=");
    let short = &state_value[..20];
    assert!(
        !log.contains(short),
        "the _state value is in the log:\n{log}"
    );
    assert!(
        !log.contains(&decoded[..20]),
        "the _state value is in the log:\n{log}"
    );
    drop(regate);
}
