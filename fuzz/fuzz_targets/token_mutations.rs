//! Fuzzes the token verifier with structured mutations of a valid token:
//! byte flips in any segment, re-encoded headers (`alg` none, HMAC, other
//! kids), re-encoded claims, claims re-signed with the real key but invalid
//! (expired, not yet valid, another audience or issuer, missing claims),
//! HMAC signed with the public key, truncation and extra segments. Each is
//! refused unless the token is unchanged.
#![no_main]

use arbitrary::Arbitrary;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use regate_fuzz::{fixture, ISSUER, LEEWAY_SECS, SERVICE};
use serde_json::Value;

#[derive(Arbitrary, Debug)]
enum Alg {
    None,
    NoneUpper,
    Hs256,
    Hs384,
    Hs512,
    Es384,
    Rs256,
    Eddsa,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Claim {
    Sub(String),
    AccessName(String),
    AccessActions(Vec<String>),
    Exp(i64),
    Nbf(i64),
    Iss(String),
    Aud(String),
    Remove(u8),
    Raw(String, String),
}

/// A change that is invalid whatever it is re-signed with.
#[derive(Arbitrary, Debug)]
enum Invalid {
    Expired(u32),
    NotYetValid(u32),
    Audience(String),
    Issuer(String),
    AudienceList(Vec<String>),
    MissingExp,
    MissingIss,
    MissingAud,
    ExpAsString,
}

#[derive(Arbitrary, Debug)]
enum Mutation {
    FlipByte {
        segment: u8,
        index: u16,
        xor: u8,
    },
    ReplaceSegment {
        segment: u8,
        text: String,
    },
    Header {
        alg: Option<Alg>,
        kid: Option<Option<String>>,
        typ: Option<String>,
    },
    Claims(Claim),
    ResignedInvalid(Invalid),
    HmacWithPublicKey {
        alg: u8,
        claims: Option<Claim>,
    },
    AlgNone {
        signature: Vec<u8>,
    },
    Truncate(u16),
    Append(String),
    Segments(u8),
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn decode(seg: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(seg).unwrap()).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn apply_claim(c: &mut Value, change: &Claim) {
    const KEYS: [&str; 8] = ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "access"];
    match change {
        Claim::Sub(s) => c["sub"] = s.clone().into(),
        Claim::AccessName(s) => {
            if let Some(e) = first_access(c) {
                e.insert("name".into(), s.clone().into());
            }
        }
        Claim::AccessActions(a) => {
            if let Some(e) = first_access(c) {
                e.insert("actions".into(), a.clone().into());
            }
        }
        Claim::Exp(t) => c["exp"] = (*t).into(),
        Claim::Nbf(t) => c["nbf"] = (*t).into(),
        Claim::Iss(s) => c["iss"] = s.clone().into(),
        Claim::Aud(s) => c["aud"] = s.clone().into(),
        Claim::Remove(i) => {
            c.as_object_mut()
                .unwrap()
                .remove(KEYS[usize::from(*i) % KEYS.len()]);
        }
        Claim::Raw(k, v) => c[k.as_str()] = v.clone().into(),
    }
}

fn first_access(c: &mut Value) -> Option<&mut serde_json::Map<String, Value>> {
    c.get_mut("access")?.get_mut(0)?.as_object_mut()
}

fn sign(header: &Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(header, claims, key).unwrap()
}

/// Applies `m`; the bool says whether the result must be refused even if
/// it differs from the original only in ways the signature covers.
fn mutate(token: &str, m: &Mutation) -> (String, bool) {
    let f = fixture();
    let parts: Vec<&str> = token.split('.').collect();
    let seg = |i: usize| parts.get(i).copied().unwrap_or("");
    let (h, c, s) = (seg(0), seg(1), seg(2));
    match m {
        Mutation::FlipByte {
            segment,
            index,
            xor,
        } => {
            let mut segs: Vec<Vec<u8>> = parts.iter().map(|p| p.as_bytes().to_vec()).collect();
            let n = segs.len();
            let seg = &mut segs[usize::from(*segment) % n];
            if !seg.is_empty() {
                let i = usize::from(*index) % seg.len();
                seg[i] ^= xor;
            }
            let joined: Vec<u8> = segs.join(&b'.');
            (String::from_utf8_lossy(&joined).into_owned(), false)
        }
        Mutation::ReplaceSegment { segment, text } => {
            let mut segs: Vec<&str> = parts.clone();
            let n = segs.len();
            segs[usize::from(*segment) % n] = text;
            (segs.join("."), false)
        }
        Mutation::Header { alg, kid, typ } => {
            let mut header = decode(h);
            match alg {
                Some(Alg::None) => header["alg"] = "none".into(),
                Some(Alg::NoneUpper) => header["alg"] = "NONE".into(),
                Some(Alg::Hs256) => header["alg"] = "HS256".into(),
                Some(Alg::Hs384) => header["alg"] = "HS384".into(),
                Some(Alg::Hs512) => header["alg"] = "HS512".into(),
                Some(Alg::Es384) => header["alg"] = "ES384".into(),
                Some(Alg::Rs256) => header["alg"] = "RS256".into(),
                Some(Alg::Eddsa) => header["alg"] = "EdDSA".into(),
                Some(Alg::Other(s)) => header["alg"] = s.clone().into(),
                None => {}
            }
            match kid {
                Some(Some(k)) => header["kid"] = k.clone().into(),
                Some(None) => {
                    header.as_object_mut().unwrap().remove("kid");
                }
                None => {}
            }
            if let Some(t) = typ {
                header["typ"] = t.clone().into();
            }
            (format!("{}.{c}.{s}", b64(&header)), false)
        }
        Mutation::Claims(change) => {
            let mut claims = decode(c);
            apply_claim(&mut claims, change);
            (format!("{h}.{}.{s}", b64(&claims)), false)
        }
        Mutation::ResignedInvalid(inv) => {
            let mut claims = decode(c);
            let leeway = LEEWAY_SECS as i64;
            match inv {
                Invalid::Expired(d) => claims["exp"] = (now() - leeway - 5 - i64::from(*d)).into(),
                Invalid::NotYetValid(d) => {
                    claims["nbf"] = (now() + leeway + 5 + i64::from(*d)).into()
                }
                Invalid::Audience(a) if a != SERVICE => claims["aud"] = a.clone().into(),
                Invalid::Issuer(i) if i != ISSUER => claims["iss"] = i.clone().into(),
                Invalid::AudienceList(l) if !l.iter().any(|a| a == SERVICE) => {
                    claims["aud"] = l.clone().into()
                }
                Invalid::MissingExp => {
                    claims.as_object_mut().unwrap().remove("exp");
                }
                Invalid::MissingIss => {
                    claims.as_object_mut().unwrap().remove("iss");
                }
                Invalid::MissingAud => {
                    claims.as_object_mut().unwrap().remove("aud");
                }
                Invalid::ExpAsString => claims["exp"] = "never".into(),
                // The "invalid" value happened to be the valid one: no mutation.
                _ => return (token.to_owned(), false),
            }
            let Ok(mut header) = serde_json::from_value::<Header>(decode(h)) else {
                return (token.to_owned(), false);
            };
            // The real key signs ES256 only; the header keeps its other changes.
            header.alg = Algorithm::ES256;
            let key = EncodingKey::from_ec_pem(&f.private_pem).unwrap();
            (sign(&header, &claims, &key), true)
        }
        Mutation::HmacWithPublicKey {
            alg,
            claims: change,
        } => {
            let alg = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512][usize::from(*alg) % 3];
            let Ok(mut header) = serde_json::from_value::<Header>(decode(h)) else {
                return (token.to_owned(), false);
            };
            header.alg = alg;
            let mut claims = decode(c);
            if let Some(change) = change {
                apply_claim(&mut claims, change);
            }
            (
                sign(&header, &claims, &EncodingKey::from_secret(&f.public_pem)),
                true,
            )
        }
        Mutation::AlgNone { signature } => {
            let mut header = decode(h);
            header["alg"] = "none".into();
            (
                format!("{}.{c}.{}", b64(&header), URL_SAFE_NO_PAD.encode(signature)),
                true,
            )
        }
        Mutation::Truncate(n) => {
            let mut n = usize::from(*n) % token.len();
            while !token.is_char_boundary(n) {
                n -= 1;
            }
            (token[..n].to_owned(), false)
        }
        Mutation::Append(text) => (format!("{token}{text}"), false),
        Mutation::Segments(n) => {
            let n = usize::from(*n % 6);
            let segs: Vec<&str> = parts.iter().cycle().take(n).copied().collect();
            (segs.join("."), false)
        }
    }
}

fuzz_target!(|mutations: Vec<Mutation>| {
    let f = fixture();
    let mut token = f.valid.clone();
    let mut must_fail = false;
    for m in mutations.iter().take(4) {
        if token.split('.').count() != 3
            || token.split('.').take(2).any(|p| {
                URL_SAFE_NO_PAD
                    .decode(p)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .is_none_or(|v| !v.is_object())
            })
        {
            // Only byte-level mutations apply to a token that no longer parses.
            if !matches!(
                m,
                Mutation::FlipByte { .. } | Mutation::Truncate(_) | Mutation::Append(_)
            ) {
                continue;
            }
        }
        if let Mutation::Truncate(_) = m {
            if token.is_empty() {
                continue;
            }
        }
        let (t, fail) = mutate(&token, m);
        token = t;
        must_fail |= fail;
    }
    let result = f.tokens.verify(&token);
    if must_fail || token != f.valid {
        assert!(
            result.is_err(),
            "mutated token verified: {mutations:?}\n{token}"
        );
    } else {
        assert!(result.is_ok(), "the unchanged token failed: {result:?}");
    }
    assert!(
        f.tokens.verify_refresh(&token).is_err(),
        "an access token passed as refresh token"
    );
});
