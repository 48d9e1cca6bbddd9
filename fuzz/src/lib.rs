//! Shared set-up of the token fuzz targets: one signing key (made once per
//! process in a temporary folder), the verifier built from it, and a valid
//! token to mutate.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use regate::auth::token::{AccessEntry, Tokens};
use regate::config::TokenSettings;

pub const ISSUER: &str = "regate-fuzz";
pub const SERVICE: &str = "registry.fuzz";
pub const LEEWAY_SECS: u64 = 60;

pub struct Fixture {
    pub tokens: Tokens,
    /// A token `tokens` accepts.
    pub valid: String,
    /// The private key (PEM), to re-sign mutated claims.
    pub private_pem: Vec<u8>,
    /// The public key (PEM), the classic HMAC confusion secret.
    pub public_pem: Vec<u8>,
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir: PathBuf = std::env::temp_dir().join(format!("regate-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("token.key");
        regate::auth::token::keys::generate(regate::auth::token::keys::KeyKind::Es256, &key)
            .unwrap();
        let tokens = Tokens::load(&TokenSettings {
            issuer: ISSUER.into(),
            service: SERVICE.into(),
            signing_key: key.clone(),
            ttl: Duration::from_secs(3600),
            leeway: Duration::from_secs(LEEWAY_SECS),
            refresh_ttl: Duration::from_secs(7200),
            external_issuer: None,
            external_keys: Vec::new(),
            external_jwks: None,
            trust_external_access: false,
            max_lifetime: Duration::from_secs(24 * 3600),
        })
        .unwrap();
        let access = [AccessEntry {
            kind: "repository".into(),
            name: "alice/app".into(),
            actions: vec!["pull".into()],
        }];
        let valid = tokens.issue(Some("alice"), &access).unwrap().token;
        tokens.verify(&valid).expect("the fixture token verifies");
        let private_pem = std::fs::read(&key).unwrap();
        let public_pem = std::fs::read(key.with_extension("pub")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        Fixture {
            tokens,
            valid,
            private_pem,
            public_pem,
        }
    })
}
