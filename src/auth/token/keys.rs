//! Token keys: regate's signing key (PKCS#8 PEM; ES256 for P-256, ES384 for
//! P-384, EdDSA for Ed25519, RS256 for RSA), the public keys that verify
//! tokens (its own, and an external issuer's PEM keys or JWKS), and
//! `regate keygen`.
//!
//! Owns [`SigningKey`], [`VerifyKey`] and the `kid` (the libtrust key id the
//! Docker registry uses: base32 of the first 240 bits of the SHA-256 of the
//! DER public key, in groups of four). Symmetric (HMAC) keys are refused
//! everywhere. Calls rcgen (key parsing and generation) and jsonwebtoken.

use std::path::Path;

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: cannot read ({source})")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// The libtrust key id of a DER SubjectPublicKeyInfo.
pub fn key_id(spki_der: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hash = Sha256::digest(spki_der);
    let bits = &hash[..30];
    let mut out = String::new();
    let mut acc: u32 = 0;
    let mut n = 0;
    for &b in bits {
        acc = (acc << 8) | u32::from(b);
        n += 8;
        while n >= 5 {
            n -= 5;
            out.push(ALPHABET[((acc >> n) & 31) as usize] as char);
        }
    }
    out.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(":")
}

/// regate's own signing key.
pub struct SigningKey {
    pub alg: Algorithm,
    pub kid: String,
    pub encoding: EncodingKey,
    /// The matching public key.
    pub verify: VerifyKey,
    pub public_pem: String,
}

/// A key that verifies tokens signed with one of `algs`.
pub struct VerifyKey {
    pub kid: Option<String>,
    pub algs: Vec<Algorithm>,
    pub key: DecodingKey,
}

fn invalid(path: &Path, message: impl Into<String>) -> KeyError {
    KeyError::Invalid {
        path: path.display().to_string(),
        message: message.into(),
    }
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl SigningKey {
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        Self::from_pem(&read(path)?, path)
    }

    pub fn from_pem(pem: &str, path: &Path) -> Result<SigningKey, KeyError> {
        let pair = rcgen::KeyPair::from_pem(pem).map_err(|e| {
            invalid(
                path,
                format!("not a PKCS#8 private key ({e}); create one with `regate keygen`"),
            )
        })?;
        let alg_of = pair.algorithm();
        let public_pem = pair.public_key_pem();
        let e = |e: jsonwebtoken::errors::Error| invalid(path, e.to_string());
        let (alg, encoding, decoding) = if alg_of == &rcgen::PKCS_ECDSA_P256_SHA256 {
            (
                Algorithm::ES256,
                EncodingKey::from_ec_pem(pem.as_bytes()).map_err(e)?,
                DecodingKey::from_ec_pem(public_pem.as_bytes()).map_err(e)?,
            )
        } else if alg_of == &rcgen::PKCS_ECDSA_P384_SHA384 {
            (
                Algorithm::ES384,
                EncodingKey::from_ec_pem(pem.as_bytes()).map_err(e)?,
                DecodingKey::from_ec_pem(public_pem.as_bytes()).map_err(e)?,
            )
        } else if alg_of == &rcgen::PKCS_ED25519 {
            (
                Algorithm::EdDSA,
                EncodingKey::from_ed_pem(pem.as_bytes()).map_err(e)?,
                DecodingKey::from_ed_pem(public_pem.as_bytes()).map_err(e)?,
            )
        } else if alg_of == &rcgen::PKCS_RSA_SHA256 {
            (
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(e)?,
                DecodingKey::from_rsa_pem(public_pem.as_bytes()).map_err(e)?,
            )
        } else {
            return Err(invalid(
                path,
                "unsupported key type; use P-256 (ES256), P-384, Ed25519 or RSA",
            ));
        };
        let kid = key_id(&pair.public_key_der());
        Ok(SigningKey {
            alg,
            kid: kid.clone(),
            encoding,
            verify: VerifyKey {
                kid: Some(kid),
                algs: vec![alg],
                key: decoding,
            },
            public_pem,
        })
    }
}

/// Which key `regate keygen` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyKind {
    /// ECDSA P-256, signs ES256 (the default, what Docker registries expect).
    Es256,
    /// ECDSA P-384, signs ES384.
    Es384,
    /// Ed25519, signs EdDSA.
    Eddsa,
}

/// Writes a new private key to `out` (owner-only) and its public key to
/// `out.pub`; returns the key id. Refuses to overwrite.
pub fn generate(kind: KeyKind, out: &Path) -> Result<String, KeyError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let alg = match kind {
        KeyKind::Es256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyKind::Es384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyKind::Eddsa => &rcgen::PKCS_ED25519,
    };
    let pair = rcgen::KeyPair::generate_for(alg).map_err(|e| invalid(out, e.to_string()))?;
    let werr = |p: &Path| {
        let p = p.display().to_string();
        move |source| KeyError::Write { path: p, source }
    };
    if let Some(dir) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(werr(dir))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(werr(out))?;
    f.write_all(pair.serialize_pem().as_bytes())
        .map_err(werr(out))?;
    f.sync_all().map_err(werr(out))?;
    let public = out.with_extension("pub");
    std::fs::write(&public, pair.public_key_pem()).map_err(werr(&public))?;
    Ok(key_id(&pair.public_key_der()))
}

/// A PEM public key (`-----BEGIN PUBLIC KEY-----`) of an external issuer.
pub fn load_public_pem(path: &Path) -> Result<VerifyKey, KeyError> {
    let pem = read(path)?;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|_| invalid(path, "not a PEM public key"))?;
    let kid = Some(key_id(&der));
    let p = pem.as_bytes();
    if let Ok(key) = DecodingKey::from_ec_pem(p) {
        return Ok(VerifyKey {
            kid,
            algs: vec![Algorithm::ES256, Algorithm::ES384],
            key,
        });
    }
    if let Ok(key) = DecodingKey::from_ed_pem(p) {
        return Ok(VerifyKey {
            kid,
            algs: vec![Algorithm::EdDSA],
            key,
        });
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(p) {
        return Ok(VerifyKey {
            kid,
            algs: RSA_ALGS.to_vec(),
            key,
        });
    }
    Err(invalid(
        path,
        "not an EC, Ed25519 or RSA public key in PEM (BEGIN PUBLIC KEY)",
    ))
}

const RSA_ALGS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// The keys of a JWKS file; symmetric keys are an error.
pub fn load_jwks(path: &Path) -> Result<Vec<VerifyKey>, KeyError> {
    let set: JwkSet = serde_json::from_str(&read(path)?)
        .map_err(|e| invalid(path, format!("not a JWKS document ({e})")))?;
    let mut out = Vec::new();
    for jwk in &set.keys {
        let family: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::EllipticCurve(_) => vec![Algorithm::ES256, Algorithm::ES384],
            AlgorithmParameters::RSA(_) => RSA_ALGS.to_vec(),
            AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
            AlgorithmParameters::OctetKey(_) => return Err(invalid(
                path,
                "symmetric (oct) keys are refused: a verifier must not share the signer's secret",
            )),
        };
        let algs = match jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse::<Algorithm>().ok())
        {
            Some(a) if family.contains(&a) => vec![a],
            Some(_) => return Err(invalid(path, "a key's `alg` does not fit its key type")),
            None => family,
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| invalid(path, e.to_string()))?;
        out.push(VerifyKey {
            kid: jwk.common.key_id.clone(),
            algs,
            key,
        });
    }
    if out.is_empty() {
        return Err(invalid(path, "the JWKS has no keys"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kid_has_the_libtrust_shape() {
        let kid = key_id(b"anything");
        assert_eq!(kid.len(), 48 + 11);
        assert!(kid.split(':').all(|g| g.len() == 4));
    }

    #[test]
    fn keygen_then_load_for_every_kind() {
        let dir = tempfile::tempdir().unwrap();
        for (kind, alg) in [
            (KeyKind::Es256, Algorithm::ES256),
            (KeyKind::Es384, Algorithm::ES384),
            (KeyKind::Eddsa, Algorithm::EdDSA),
        ] {
            let path = dir.path().join(format!("{kind:?}.key"));
            let kid = generate(kind, &path).unwrap();
            let key = SigningKey::load(&path).unwrap();
            assert_eq!((key.alg, key.kid.as_str()), (alg, kid.as_str()));
            let public = load_public_pem(&path.with_extension("pub")).unwrap();
            assert_eq!(public.kid.as_deref(), Some(kid.as_str()));
            assert!(generate(kind, &path).is_err(), "must not overwrite");
        }
    }
}
