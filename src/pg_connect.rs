//! How regate connects to PostgreSQL (`[state] url`): the one connection
//! maker of the state engine (`crate::state`) and of the cluster
//! (`crate::cluster`), so every connection gets the same settings.
//!
//! Owns, for each connection: the settings of the URL ([`StateUrl`]); a
//! connect timeout ([`CONNECT_TIMEOUT`], unless the URL sets
//! `connect_timeout`) for the TCP connect and again for the TLS handshake
//! (the client bounds only the first; a server that accepts and then stalls
//! the handshake would hold the caller for good); TCP keepalives and a TCP user timeout, so a server
//! that vanished (power loss, a network cut) is noticed in seconds, not the
//! operating system's two hours (unless the URL sets `keepalives*`); an
//! `application_name` of `regate <role> <replica>` (the URL's own
//! `application_name` replaces `regate`), so `pg_stat_activity` tells which
//! replica holds which connection and what for; and TLS with rustls as
//! `sslmode` asks ([`StateTls`]: no check of the server's certificate without
//! `sslrootcert`, its chain with it, its chain and host name under
//! `verify-full`). Also owns the advice of a failed connection
//! ([`ConnectError`]): what to do, naming `state.url`, never the password.
//!
//! Blocking (the synchronous `postgres` client runs its own runtime): call
//! it off the async threads. Calls `config` only.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use postgres::tls::{MakeTlsConnect, TlsConnect};
use postgres::{Client, NoTls, Socket};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{SslMode, StateTls, StateUrl};
use crate::error::{causes, chain};

/// How long opening a TCP connection may take, unless the URL's
/// `connect_timeout` says otherwise.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// TCP keepalive probes: first after this much silence ...
const KEEPALIVES_IDLE: Duration = Duration::from_secs(10);
/// ... then every this long, and the connection is dead after this many
/// unanswered ones.
const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVES_RETRIES: u32 = 3;
/// Data sent and not acknowledged for this long ends the connection.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(20);
/// PostgreSQL keeps this many bytes of `application_name` (NAMEDATALEN - 1).
const APPLICATION_NAME_MAX: usize = 63;

/// Makes the connections of one replica to `state.url`.
#[derive(Clone)]
pub struct PgConnector {
    url: StateUrl,
    config: postgres::Config,
    tls: Option<TimedTls>,
    replica: String,
    prefix: String,
}

/// A connection that could not be made, with what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("{}; {advice}", chain(.cause))]
pub struct ConnectError {
    /// The client's error; its causes are written out in this one's
    /// message (the client's own message names only its kind), so it is not
    /// also given as a `source()`.
    cause: postgres::Error,
    advice: String,
}

impl ConnectError {
    /// The client's error.
    pub fn postgres(&self) -> &postgres::Error {
        &self.cause
    }

    pub fn into_postgres(self) -> postgres::Error {
        self.cause
    }
}

impl PgConnector {
    /// The connection maker of replica `replica` for `url`.
    pub fn new(url: &StateUrl, replica: &str) -> PgConnector {
        let mut config = url.config().clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if !url.sets("keepalives")
            && !url.sets("keepalives_idle")
            && !url.sets("keepalives_interval")
            && !url.sets("keepalives_retries")
        {
            config
                .keepalives(true)
                .keepalives_idle(KEEPALIVES_IDLE)
                .keepalives_interval(KEEPALIVES_INTERVAL)
                .keepalives_retries(KEEPALIVES_RETRIES);
        }
        if !url.sets("tcp_user_timeout") {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        let prefix = config.get_application_name().unwrap_or("regate").to_owned();
        let within = *config.get_connect_timeout().unwrap_or(&CONNECT_TIMEOUT);
        PgConnector {
            tls: client_config(url.tls()).map(|c| TimedTls {
                inner: MakeRustlsConnect::new(c),
                within,
            }),
            url: url.clone(),
            config,
            replica: replica.to_owned(),
            prefix,
        }
    }

    /// The URL, for messages (it prints redacted).
    pub fn url(&self) -> &StateUrl {
        &self.url
    }

    /// A new connection for `role` (a word: `state`, `lease`, `follower`).
    pub fn connect(&self, role: &str) -> Result<Client, ConnectError> {
        self.connect_with(role, |_| {})
    }

    /// As [`Self::connect`], with `adjust` applied to the settings first
    /// (session options of one kind of connection).
    pub fn connect_with(
        &self,
        role: &str,
        adjust: impl FnOnce(&mut postgres::Config),
    ) -> Result<Client, ConnectError> {
        let mut config = self.config.clone();
        config.application_name(&application_name(&self.prefix, role, &self.replica));
        adjust(&mut config);
        let made = match &self.tls {
            None => config.connect(NoTls),
            Some(tls) => config.connect(tls.clone()),
        };
        made.map_err(|cause| ConnectError {
            advice: advice(&cause, self.url.tls()),
            cause,
        })
    }
}

/// rustls as `sslmode` asks, its handshake given `within` to finish.
#[derive(Clone)]
struct TimedTls {
    inner: MakeRustlsConnect,
    within: Duration,
}

type RustlsConnect = <MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect;
type RustlsStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl MakeTlsConnect<Socket> for TimedTls {
    type Stream = RustlsStream;
    type TlsConnect = TimedHandshake;
    type Error = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Error;

    fn make_tls_connect(&mut self, host: &str) -> Result<TimedHandshake, Self::Error> {
        Ok(TimedHandshake {
            inner: MakeTlsConnect::<Socket>::make_tls_connect(&mut self.inner, host)?,
            within: self.within,
        })
    }
}

/// One handshake, bounded (the client's own runtime has timers).
struct TimedHandshake {
    inner: RustlsConnect,
    within: Duration,
}

/// What a handshake that did not finish in time says.
#[derive(Debug, thiserror::Error)]
#[error("the TLS handshake did not finish within {0:?}")]
struct HandshakeTimedOut(Duration);

impl TlsConnect<Socket> for TimedHandshake {
    type Stream = RustlsStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream, BoxError>> + Send>>;

    fn connect(self, socket: Socket) -> Self::Future {
        let (handshake, within) = (self.inner.connect(socket), self.within);
        Box::pin(async move {
            match tokio::time::timeout(within, handshake).await {
                Ok(done) => done.map_err(Into::into),
                Err(_) => Err(HandshakeTimedOut(within).into()),
            }
        })
    }
}

/// `<prefix> <role> <replica>`, within PostgreSQL's 63 bytes: a long
/// replica id loses its start (its end, pid and random suffix, tells
/// replicas of one host apart).
fn application_name(prefix: &str, role: &str, replica: &str) -> String {
    let head = format!("{prefix} {role} ");
    let room = APPLICATION_NAME_MAX.saturating_sub(head.len());
    let mut start = replica.len().saturating_sub(room);
    while !replica.is_char_boundary(start) {
        start += 1;
    }
    let mut name = head + &replica[start..];
    while name.len() > APPLICATION_NAME_MAX {
        name.pop();
    }
    name
}

/// The rustls settings for `tls`; `None` when TLS is off.
fn client_config(tls: &StateTls) -> Option<rustls::ClientConfig> {
    if tls.mode == SslMode::Disable {
        return None;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match &tls.root_cert {
        None => Arc::new(Unchecked(Arc::clone(&provider))),
        Some(root) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(root.certs.iter().cloned());
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .expect("the CA file was checked when the configuration was read");
            if tls.mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // PostgreSQL 17 checks the protocol name when a client offers one.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Some(config)
}

/// `sslmode=prefer` or `require` without `sslrootcert` (libpq's meaning):
/// the server's certificate is not checked; its handshake signature is.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` (and `prefer`/`require` with `sslrootcert`, as libpq does):
/// the chain up to the CA, dates and usage are checked, the host name is not.
/// webpki checks the name last, so a name error means all else passed.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The rustls error somewhere in `e`'s causes (tokio-rustls wraps it in an
/// `io::Error`).
fn tls_error(e: &postgres::Error) -> Option<&rustls::Error> {
    causes(e).find_map(|err| {
        err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        })
    })
}

/// What to do about a failed connection.
fn advice(e: &postgres::Error, tls: &StateTls) -> String {
    let ca = tls.root_cert.as_ref().map_or_else(
        || "sslrootcert".to_owned(),
        |r| format!("sslrootcert={}", r.path),
    );
    if let Some(r) = tls_error(e) {
        return match r {
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => "the server's certificate does not name the host of state.url (sslmode=verify-full): connect by a name the certificate carries (hostaddr= may give the address to dial), or reissue the certificate for this host".into(),
            rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature,
            ) => format!("the server's certificate is not signed by the CA in {ca} (state.url): point sslrootcert at the CA that signed the server's ssl_cert_file"),
            rustls::Error::InvalidCertificate(_) => format!("the server's certificate was refused: check its dates and usage, and that {ca} (state.url) is its CA"),
            _ => "the TLS handshake with PostgreSQL failed: check the server's ssl settings and the sslmode of state.url".into(),
        };
    }
    if causes(e).any(|c| c.is::<HandshakeTimedOut>()) {
        return "the server accepted the connection but did not complete the TLS handshake: check that state.url names PostgreSQL's host and port (not another service), and the server's load and ssl settings".into();
    }
    if chain(e).contains("server does not support TLS") {
        return format!(
            "the server does not offer TLS but state.url asks for it (sslmode={}): turn TLS on in postgresql.conf (ssl = on, ssl_cert_file, ssl_key_file), or set sslmode=disable on a trusted network",
            tls.mode.as_str()
        );
    }
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == postgres::error::SqlState::INVALID_PASSWORD {
            return "check the user and password in state.url (or REGATE_STATE__URL)".into();
        }
        if *code == postgres::error::SqlState::INVALID_CATALOG_NAME {
            return "the database of state.url does not exist: create it (CREATE DATABASE regate OWNER regate)".into();
        }
        if db.message().contains("no encryption") {
            return "the server refuses plain connections from this host (pg_hba.conf hostssl): set sslmode=verify-full and sslrootcert=<CA file> in state.url".into();
        }
    }
    "check that the server runs and accepts connections from this host, and the user, password and database in state.url (or REGATE_STATE__URL)".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_name_names_role_and_replica_within_63_bytes() {
        assert_eq!(
            application_name("regate", "state", "host-12-0000abcd"),
            "regate state host-12-0000abcd"
        );
        let long = format!("{}-4242-0000abcd", "a".repeat(80));
        let n = application_name("regate", "follower", &long);
        assert_eq!(n.len(), APPLICATION_NAME_MAX);
        assert!(n.starts_with("regate follower a"), "{n}");
        assert!(n.ends_with("-4242-0000abcd"), "{n}");
        let n = application_name(&"p".repeat(70), "gc-lease", "h-1-2");
        assert_eq!(n.len(), APPLICATION_NAME_MAX);
    }

    #[test]
    fn the_connector_sets_timeouts_keepalives_and_keeps_the_urls_own() {
        let u = StateUrl::parse("postgres://u:p@h/d?sslmode=disable").unwrap();
        let c = PgConnector::new(&u, "r");
        assert_eq!(c.config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(c.config.get_keepalives_idle(), KEEPALIVES_IDLE);
        assert_eq!(c.config.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        assert!(c.tls.is_none());
        let u = StateUrl::parse(
            "postgres://u:p@h/d?connect_timeout=9&keepalives_idle=99&application_name=blue",
        )
        .unwrap();
        let c = PgConnector::new(&u, "r");
        assert_eq!(
            c.config.get_connect_timeout(),
            Some(&Duration::from_secs(9))
        );
        assert_eq!(c.config.get_keepalives_idle(), Duration::from_secs(99));
        assert_eq!(c.prefix, "blue");
        assert!(c.tls.is_some(), "prefer (the default) tries TLS");
    }

    #[test]
    fn a_server_that_stalls_the_tls_handshake_fails_the_connect_in_time() {
        use std::io::{Read, Write};
        // Says yes to the client's SSLRequest, then nothing: the TLS
        // handshake never gets its ServerHello.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut ssl_request = [0u8; 8];
            socket.read_exact(&mut ssl_request).unwrap();
            socket.write_all(b"S").unwrap();
            // Hold the connection open until the client gives up.
            let _ = socket.read_to_end(&mut Vec::new());
        });
        let u = StateUrl::parse(&format!(
            "postgres://u:p@127.0.0.1:{port}/d?sslmode=require&connect_timeout=1"
        ))
        .unwrap();
        let started = std::time::Instant::now();
        let e = PgConnector::new(&u, "r")
            .connect("state")
            .err()
            .expect("a stalled handshake fails");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "gave up after {took:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("did not finish within 1s")
                && msg.contains("did not complete the TLS handshake"),
            "{msg}"
        );
        server.join().unwrap();
    }
}
