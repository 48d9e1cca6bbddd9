//! The binary's operator-facing behaviour: exit codes and messages that name
//! the key at fault.

use std::process::Command;

fn regate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_regate"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_names_every_bad_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[server]\nlisten = \"localhost\"\ntls_cert = \"/missing/server.crt\"\ntls_key = \"/missing/server.key\"\n[upstream]\nurl = \"ftp://x\"\n").unwrap();
    let (code, _, err) = regate(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    for needle in [
        "bad.toml",
        "server.listen",
        "server.tls_cert",
        "server.tls_key",
        "upstream.url",
        "regate cert",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn unknown_keys_and_env_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("typo.toml");
    std::fs::write(
        &cfg,
        "[server]\ndev_certs = true\n[upstream]\nurl = \"http://127.0.0.1:5000\"\nmanged = 1\n",
    )
    .unwrap();
    let (code, _, err) = regate(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("manged") && err.contains("line 5"), "{err}");

    std::fs::write(
        &cfg,
        "[server]\ndev_certs = true\n[upstream]\nurl = \"http://127.0.0.1:5000\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_regate"))
        .args(["check-config", "--config", cfg.to_str().unwrap()])
        .env("REGATE_SERVER__LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen"));
}

#[test]
fn shipped_config_is_valid() {
    let root = env!("CARGO_MANIFEST_DIR");
    let (code, out, err) = regate(&[
        "check-config",
        "--config",
        &format!("{root}/config/regate.toml"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn cert_writes_ca_and_server_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("c");
    let (code, out, err) = regate(&[
        "cert",
        "--dir",
        d.to_str().unwrap(),
        "--host",
        "registry.local",
        "--host",
        "10.0.0.5",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    for f in ["ca.crt", "ca.key", "server.crt", "server.key"] {
        assert!(d.join(f).is_file(), "{f}");
    }
    // openssl agrees on the SANs.
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(d.join("server.crt"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("DNS:registry.local") && text.contains("IP Address:10.0.0.5"),
        "{text}"
    );
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(d.join("ca.crt"))
        .arg(d.join("server.crt"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn cert_for_localhost_also_names_the_loopback_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("c");
    let (code, out, err) = regate(&["cert", "--dir", d.to_str().unwrap(), "--host", "localhost"]);
    assert_eq!(code, 0, "{out}{err}");
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(d.join("server.crt"))
        .output()
        .expect("openssl (scripts/install-deps --test installs it)");
    let text = String::from_utf8_lossy(&text.stdout);
    for san in [
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "IP Address:0:0:0:0:0:0:0:1",
    ] {
        assert!(text.contains(san), "missing {san} in:\n{text}");
    }
}

#[test]
fn missing_registry_binary_says_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("m.toml");
    let certs = dir.path().join("certs");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndev_certs = true\ntls_cert = \"{0}/server.crt\"\ntls_key = \"{0}/server.key\"\n[upstream.managed]\nbinary = \"no-such-registry-binary\"\ndata_dir = \"{1}/data\"\n",
            certs.display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let (code, _, err) = regate(&["serve", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("upstream.managed.binary")
            && err.contains("apt-get install docker-registry")
            && err.contains("upstream.url"),
        "{err}"
    );
}
