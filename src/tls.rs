//! TLS termination: the rustls server configuration and certificate reloads.
//!
//! Owns [`CertStore`], a certificate resolver whose key pair can be swapped
//! while connections keep being accepted. The files are watched (checked every
//! two seconds) and reloaded on SIGHUP; a broken new file is logged and the
//! old certificate stays in use. TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read ({source})")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found; expected a file starting with -----BEGIN CERTIFICATE-----")]
    NoCertificate { path: String },
    #[error("{path}: no PEM private key found (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: String },
    #[error("{path}: unusable private key ({reason})")]
    BadKey { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Loads a certificate chain and its key from PEM files.
pub fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    let cert_pem = read(cert_path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read {
            path: cert_path.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.display().to_string(),
        });
    }
    let key_pem = read(key_path)?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|source| TlsError::Read {
            path: key_path.display().to_string(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey {
            path: key_path.display().to_string(),
        })?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| TlsError::BadKey {
            path: key_path.display().to_string(),
            reason: e.to_string(),
        })?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| TlsError::BadKey {
        path: key_path.display().to_string(),
        reason: format!(
            "does not match the certificate in {} ({e})",
            cert_path.display()
        ),
    })?;
    Ok(ck)
}

/// The server certificate in use, reloadable.
#[derive(Debug)]
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    stamp: Mutex<Option<(SystemTime, SystemTime)>>,
}

fn mtimes(a: &Path, b: &Path) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(a)?, m(b)?))
}

impl CertStore {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        let ck = load_certified_key(cert_path, key_path)?;
        Ok(Arc::new(CertStore {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(ck)),
            stamp: Mutex::new(mtimes(cert_path, key_path)),
        }))
    }

    /// Reloads the files; on failure the old certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamp = mtimes(&self.cert_path, &self.key_path);
        let ck = load_certified_key(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ck);
        *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) = stamp;
        tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
        Ok(())
    }

    /// Reloads if either file changed since the last load.
    pub fn reload_if_changed(&self) {
        let now = mtimes(&self.cert_path, &self.key_path);
        let changed = now.is_some() && *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) != now;
        if changed {
            if let Err(e) = self.reload() {
                tracing::error!(error = %e, "TLS certificate changed but cannot be loaded; keeping the old one");
                // Do not retry the same broken files every tick.
                *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) = now;
            }
        }
    }

    /// Watches the files and SIGHUP until the task is aborted.
    pub fn spawn_reloader(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let store = Arc::clone(self);
        tokio::spawn(async move {
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                let by_signal = tokio::select! {
                    _ = tick.tick() => false,
                    Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
                };
                if by_signal {
                    if let Err(e) = store.reload() {
                        tracing::error!(error = %e, "SIGHUP: cannot reload the TLS certificate; keeping the old one");
                    }
                } else {
                    store.reload_if_changed();
                }
            }
        })
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The rustls server configuration around a [`CertStore`].
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
