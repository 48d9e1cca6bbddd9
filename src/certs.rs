//! Local certificates: a CA and a server certificate signed by it.
//!
//! Owns `regate cert` and the dev certificates created on first start. Writes
//! `ca.crt`, `ca.key`, `server.crt` and `server.key` (keys mode 0600). Clients
//! trust `ca.crt` (docker's `certs.d`, skopeo's `--cert-dir`, podman).

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: cannot write ({source})")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("--host is required at least once (a DNS name or an IP address)")]
    NoHosts,
}

/// The files written by [`generate`].
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// The names a certificate for `hosts` carries: `hosts` in order, and for
/// `localhost` also `127.0.0.1` and `::1` (clients reach a local registry by
/// either), as the dev certificate does.
pub fn with_loopback(hosts: &[String]) -> Vec<String> {
    let mut names = hosts.to_vec();
    if hosts.iter().any(|h| h.eq_ignore_ascii_case("localhost")) {
        for ip in ["127.0.0.1", "::1"] {
            if !names.iter().any(|n| n == ip) {
                names.push(ip.to_owned());
            }
        }
    }
    names
}

/// Creates a CA and a server certificate for `hosts` (see [`with_loopback`])
/// in `dir`.
pub fn generate(dir: &Path, hosts: &[String]) -> Result<CertFiles, CertError> {
    if hosts.is_empty() {
        return Err(CertError::NoHosts);
    }
    let hosts = &with_loopback(hosts)[..];
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "regate local CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;

    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(hosts.to_vec())?;
    server
        .distinguished_name
        .push(DnType::CommonName, hosts[0].clone());
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key)?;

    let files = CertFiles {
        ca_cert: dir.join("ca.crt"),
        ca_key: dir.join("ca.key"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
    };
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    write(&files.ca_cert, ca_cert.pem().as_bytes(), 0o644)?;
    write(&files.ca_key, ca_key.serialize_pem().as_bytes(), 0o600)?;
    write(&files.server_cert, server_cert.pem().as_bytes(), 0o644)?;
    write(
        &files.server_key,
        server_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    Ok(files)
}

/// Writes atomically (temporary file, then rename) with the given mode.
fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| CertError::Write {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_brings_the_loopback_addresses() {
        let names = with_loopback(&["localhost".into()]);
        assert_eq!(names, ["localhost", "127.0.0.1", "::1"]);
        let names = with_loopback(&["::1".into(), "localhost".into()]);
        assert_eq!(names, ["::1", "localhost", "127.0.0.1"]);
        let names = with_loopback(&["registry.example.com".into()]);
        assert_eq!(names, ["registry.example.com"]);
    }

    #[test]
    fn writes_a_usable_pair_with_private_key_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let files = generate(dir.path(), &["localhost".into(), "127.0.0.1".into()]).unwrap();
        crate::tls::load_certified_key(&files.server_cert, &files.server_key).unwrap();
        let mode = std::fs::metadata(&files.server_key)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let mode = std::fs::metadata(&files.ca_key)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
}
