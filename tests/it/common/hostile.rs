//! The rig of the hostile-input battery: a real registry behind a recording
//! [`Relay`], the regate binary in front of it (basic or token mode, short
//! header and handshake timeouts), an image pushed first, and the checks that
//! every case ends in a clean OCI error that reached the registry only when
//! it should, that regate never panicked, and that the registry is intact
//! (the image pulls whole, blobs match their digests, `regate fsck` is clean).

use std::path::Path;

use base64::Engine as _;

use super::auth::{basic_header, fetch_token, password, AuthFiles};
use super::raw_http::{self, RawResponse};
use super::regate::{client_trusting, config_toml, RegateProcess, TestCerts};
use super::relay::Relay;
use super::{Image, Registry};

/// Seconds a client gets for its TLS handshake and for its request headers.
pub const TIMEOUT_SECS: u64 = 2;
/// The same for the slowloris test, long enough to open 200 connections
/// (debug-built TLS on a loaded machine) before the first is dropped.
pub const SLOW_TIMEOUT_SECS: u64 = 6;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Basic,
    Token,
}

pub const SERVICE: &str = "registry.test";
pub const ISSUER: &str = "regate-test";

pub struct Rig {
    pub mode: Mode,
    pub registry: Registry,
    pub relay: Relay,
    pub regate: RegateProcess,
    pub certs: TestCerts,
    pub files: AuthFiles,
    /// alice/app:v1, pushed by admin before the cases.
    pub image: Image,
    /// bob/secret:v1: alice may not pull it.
    pub secret: Image,
    _dir: tempfile::TempDir,
}

/// What a case must end in.
pub struct Expect {
    pub status: u16,
    /// The OCI error code; `None` for a success.
    pub code: Option<&'static str>,
    /// Whether the request may reach the registry.
    pub forwarded: bool,
}

pub const fn refused(status: u16, code: &'static str) -> Expect {
    Expect {
        status,
        code: Some(code),
        forwarded: false,
    }
}

pub const fn upstream_refused(status: u16, code: &'static str) -> Expect {
    Expect {
        status,
        code: Some(code),
        forwarded: true,
    }
}

impl Rig {
    pub async fn start(mode: Mode) -> Rig {
        Self::start_with_timeout(mode, TIMEOUT_SECS).await
    }

    /// With `secs` for the handshake and header read timeouts.
    pub async fn start_with_timeout(mode: Mode, secs: u64) -> Rig {
        let registry = Registry::start();
        let relay = Relay::start(&format!("127.0.0.1:{}", registry.port)).await;
        let files = AuthFiles::new();
        let certs = TestCerts::new();
        let dir = tempfile::tempdir().unwrap();
        let auth = match mode {
            Mode::Basic => files.basic_toml(""),
            Mode::Token => files.token_toml(""),
        };
        let text = config_toml(&relay.url, &certs, &dir.path().join("state"), &auth).replace(
            "[server]\n",
            &format!(
                "[server]\nheader_read_timeout_secs = {secs}\nhandshake_timeout_secs = {secs}\n"
            ),
        );
        let path = dir.path().to_owned();
        let regate = tokio::task::spawn_blocking(move || RegateProcess::spawn(&path, &text, &[]))
            .await
            .unwrap();
        let rig = Rig {
            mode,
            registry,
            relay,
            regate,
            certs,
            files,
            image: Image::oci("hostile/app", 4096),
            secret: Image::oci("hostile/secret", 2048),
            _dir: dir,
        };
        let admin = rig
            .client_as(
                "admin",
                &[
                    "repository:alice/app:pull,push",
                    "repository:bob/secret:pull,push",
                ],
            )
            .await;
        rig.image
            .push(&admin, &rig.regate.url, "alice/app", "v1")
            .await;
        rig.secret
            .push(&admin, &rig.regate.url, "bob/secret", "v1")
            .await;
        // The control: the relay sees what regate forwards.
        let seen = rig.relay.requests();
        assert!(
            seen.contains(&"PUT /v2/alice/app/manifests/v1".to_owned()),
            "the relay did not see the push: {seen:?}"
        );
        rig.relay.clear();
        rig
    }

    /// The `Authorization` value `user` presents in this mode, for `scopes`.
    pub async fn credentials(&self, user: &str, scopes: &[&str]) -> String {
        match self.mode {
            Mode::Basic => basic_header(user, &password(user)),
            Mode::Token => format!("Bearer {}", self.token(Some(user), scopes).await),
        }
    }

    pub async fn token(&self, user: Option<&str>, scopes: &[&str]) -> String {
        let pw = user.map(password);
        let c = user.zip(pw.as_deref());
        let r = fetch_token(&self.https(), &self.regate.url, c, SERVICE, scopes).await;
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        v["token"].as_str().unwrap().to_owned()
    }

    /// An HTTPS client trusting the test CA.
    pub fn https(&self) -> reqwest::Client {
        client_trusting(&self.certs.files.ca_cert)
    }

    /// An HTTPS client that presents `user`'s credentials on every request.
    pub async fn client_as(&self, user: &str, scopes: &[&str]) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "authorization",
            self.credentials(user, scopes).await.parse().unwrap(),
        );
        let pem = std::fs::read(&self.certs.files.ca_cert).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .tls_built_in_root_certs(false)
            .default_headers(headers)
            .no_proxy()
            .build()
            .unwrap()
    }

    /// Sends raw request bytes over TLS.
    pub async fn send(&self, request: &[u8]) -> RawResponse {
        raw_http::send(&self.regate.host, &self.certs.files.ca_cert, request).await
    }

    /// Checks one answer, and what reached the registry since the last check.
    pub fn check(&self, what: &str, r: &RawResponse, want: &Expect) {
        let body = String::from_utf8_lossy(&r.body);
        assert_eq!(r.status, want.status, "{what}: {} {body}", r.status);
        if let Some(code) = want.code {
            assert_eq!(r.oci_code().as_deref(), Some(code), "{what}: {body}");
            assert_eq!(
                r.header("docker-distribution-api-version"),
                Some("registry/2.0"),
                "{what}: {:?}",
                r.headers
            );
            assert!(
                r.header("content-type")
                    .is_some_and(|t| t.starts_with("application/json")),
                "{what}: {:?}",
                r.headers
            );
        }
        let seen = self.relay.requests();
        if !want.forwarded {
            assert!(seen.is_empty(), "{what} reached the registry: {seen:?}");
        }
        self.relay.clear();
    }

    /// A 401 in token mode must carry a Bearer challenge with `error`.
    pub fn check_bearer_error(&self, what: &str, r: &RawResponse, error: &str) {
        let ch = r.header("www-authenticate").unwrap_or_default();
        assert!(
            ch.starts_with("Bearer ") && ch.contains(&format!("error=\"{error}\"")),
            "{what}: {ch:?}"
        );
    }

    /// The end of every battery: no panic, the image still pulls whole with
    /// skopeo, and every blob in storage matches its digest.
    pub async fn assert_intact(&self) {
        let work = tempfile::tempdir().unwrap();
        let dest = format!("oci:{}:v1", work.path().join("pulled").display());
        let creds = format!("admin:{}", password("admin"));
        let out = super::auth::skopeo_async(
            vec![
                "copy".into(),
                "--src-cert-dir".into(),
                self.certs.trust_dir.display().to_string(),
                "--src-creds".into(),
                creds,
                format!("docker://{}/alice/app:v1", self.regate.host),
                dest,
            ],
            None,
        )
        .await;
        assert!(out.is_ok(), "the image no longer pulls: {out:?}");
        let pulled = work.path().join("pulled/blobs/sha256");
        for b in self.image.all_blobs() {
            let got = std::fs::read(pulled.join(b.digest.trim_start_matches("sha256:"))).unwrap();
            assert_eq!(got, b.bytes, "blob {} changed", b.digest);
        }
        let bad = super::storage::blobs_not_matching_their_digest(&self.registry.storage);
        assert!(bad.is_empty(), "corrupt blobs in storage: {bad:?}");
        // And `regate fsck`, straight against the registry, finds nothing broken.
        let direct = regate::client::RegistryClient::with_scheme(
            regate::client::Scheme::Http,
            self.registry.url.trim_start_matches("http://"),
            None,
            None,
        )
        .unwrap();
        let report = regate::fsck::run(
            &direct,
            &regate::fsck::Options::default(),
            &indicatif::ProgressBar::hidden(),
        )
        .await
        .unwrap();
        assert!(report.clean, "fsck after the battery: {report:?}");
        self.assert_no_panic();
    }

    pub fn assert_no_panic(&self) {
        let log = std::fs::read_to_string(&self.regate.log_path).unwrap();
        assert!(!log.contains("panicked"), "regate panicked:\n{log}");
    }
}

/// A token signed by `key_pem` (PKCS#8 EC) with these claims and header.
pub fn sign_es256(claims: &serde_json::Value, kid: Option<&str>, key_pem: &Path) -> String {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = kid.map(str::to_owned);
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&std::fs::read(key_pem).unwrap()).unwrap();
    jsonwebtoken::encode(&h, claims, &key).unwrap()
}

pub fn b64json(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}
