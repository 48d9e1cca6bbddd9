//! Docker registry tokens (JWT): issuing, verifying, and deciding what a
//! token grants.
//!
//! Owns [`Tokens`]: signing with the configured key (with `kid`), claims
//! iss/sub/aud/exp/nbf/iat/jti/access, refresh tokens (a separate audience,
//! so one can never pass as an access token; bound to the account's htpasswd
//! entry, so a password change ends them), and the verifier: an allow-list
//! of asymmetric algorithms only (`none` and HMAC can never pass), the key
//! chosen by `kid` among regate's own and an external issuer's, iss, aud and
//! exp/nbf with a leeway, and a longest accepted lifetime
//! (`auth.token.max_lifetime`, for `exp - iat` and `exp - now`). [`grant`]
//! computes the intersection of what was asked and what the rules allow; a
//! verified token says whether an external issuer signed it, so the auth
//! stage can intersect its `access` with the rules too. The HTTP endpoint is
//! in [`endpoint`].

pub mod endpoint;
pub mod keys;
pub mod scope;
pub mod verified_cache;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::TokenSettings;
use crate::rules::{Action, ActionSet, Need, RuleSet};
pub use keys::{KeyError, SigningKey, VerifyKey};
pub use scope::{AccessEntry, Scope};

/// The only algorithms a token may use.
const ALLOWED_ALGS: [Algorithm; 9] = [
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::EdDSA,
];

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm is not allowed")]
    Algorithm,
    #[error("the token was signed by an unknown key")]
    UnknownKey,
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is from another issuer")]
    Issuer,
    #[error("the token is for another service")]
    Audience,
    #[error("the token lacks a required claim or has a bad one")]
    Claims,
    #[error("the account's password changed, or the account was removed, since the token was issued: log in again")]
    Stale,
    #[error("the token lives longer than auth.token.max_lifetime allows")]
    Lifetime,
    #[error("cannot sign a token: {0}")]
    Signing(String),
}

fn classify(e: &jsonwebtoken::errors::Error) -> TokenError {
    match e.kind() {
        ErrorKind::InvalidSignature => TokenError::Signature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::Algorithm,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidSubject | ErrorKind::Json(_) => {
            TokenError::Claims
        }
        _ => TokenError::Malformed,
    }
}

#[derive(Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: &'a [AccessEntry],
}

#[derive(Serialize, Deserialize)]
struct RefreshClaims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    /// The account's password binding when issued (see
    /// [`RefreshGrant::binding`]); missing in tokens of older versions.
    #[serde(default)]
    pwb: String,
}

/// What a valid refresh token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshGrant {
    pub account: String,
    /// A digest of the account's htpasswd entry when the token was issued:
    /// the token is good only while the entry is unchanged, so a password
    /// change (or a removal) ends every refresh token of the account.
    pub binding: String,
}

#[derive(Deserialize)]
struct VerifiedClaims {
    #[serde(default)]
    sub: String,
    #[serde(default)]
    access: Vec<AccessEntry>,
    /// Required by the verifier; kept for the cache of verified tokens.
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
}

/// A verified access token.
#[derive(Debug, Clone)]
pub struct Verified {
    /// `None` for an anonymous token (empty `sub`).
    pub account: Option<String>,
    pub access: Vec<AccessEntry>,
    /// Signed by the external issuer (`auth.token.external_issuer`), not by
    /// regate: its `access` was not computed from the rules.
    pub external: bool,
}

/// Which issuer's key verified a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signer {
    Own,
    External,
}

/// An issued access token.
pub struct Issued {
    pub token: String,
    pub expires_in: u64,
    pub issued_at: SystemTime,
}

pub struct Tokens {
    signing: SigningKey,
    issuer: String,
    service: String,
    ttl: Duration,
    refresh_ttl: Duration,
    leeway: Duration,
    max_lifetime: Duration,
    trust_external_access: bool,
    verified: verified_cache::VerifiedCache,
    external_issuer: Option<String>,
    external: Vec<VerifyKey>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn jti() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

impl Tokens {
    /// Loads the signing key and any external issuer's keys.
    pub fn load(t: &TokenSettings) -> Result<Tokens, KeyError> {
        let signing = SigningKey::load(&t.signing_key)?;
        let mut external = Vec::new();
        for p in &t.external_keys {
            external.push(keys::load_public_pem(p)?);
        }
        if let Some(p) = &t.external_jwks {
            external.extend(keys::load_jwks(p)?);
        }
        Ok(Tokens {
            signing,
            issuer: t.issuer.clone(),
            service: t.service.clone(),
            ttl: t.ttl,
            refresh_ttl: t.refresh_ttl,
            leeway: t.leeway,
            max_lifetime: t.max_lifetime,
            trust_external_access: t.trust_external_access,
            verified: verified_cache::VerifiedCache::new(t.leeway),
            external_issuer: t.external_issuer.clone(),
            external,
        })
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn kid(&self) -> &str {
        &self.signing.kid
    }

    /// What a verified token lets through: its `access` must cover the
    /// request; the catalog needs an account (an empty `sub` is anonymous);
    /// and the token gets no more than `rules` give its `sub`, unless the
    /// external issuer signed it and `trust_external_access` is set. (regate's
    /// own tokens were granted from the rules; the check costs nothing and
    /// holds if the two ever disagree.)
    pub fn allows(&self, rules: &RuleSet, v: &Verified, need: &Need) -> bool {
        if !covers(&v.access, need) {
            return false;
        }
        match need {
            Need::Authenticated => true,
            Need::Catalog => v.account.is_some(),
            Need::Repositories(_) if v.external && self.trust_external_access => true,
            Need::Repositories(list) => list.iter().all(|(name, actions)| {
                rules.permits(v.account.as_deref(), name.as_str(), *actions)
            }),
        }
    }

    fn header(&self) -> Header {
        let mut h = Header::new(self.signing.alg);
        h.kid = Some(self.signing.kid.clone());
        h.typ = Some("JWT".into());
        h
    }

    /// Signs an access token for `account` (`None`: anonymous) granting `access`.
    pub fn issue(
        &self,
        account: Option<&str>,
        access: &[AccessEntry],
    ) -> Result<Issued, TokenError> {
        let now = now_secs();
        let claims = AccessClaims {
            iss: &self.issuer,
            sub: account.unwrap_or(""),
            aud: &self.service,
            exp: now + self.ttl.as_secs(),
            nbf: now,
            iat: now,
            jti: jti(),
            access,
        };
        let token = jsonwebtoken::encode(&self.header(), &claims, &self.signing.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))?;
        Ok(Issued {
            token,
            expires_in: self.ttl.as_secs(),
            issued_at: UNIX_EPOCH + Duration::from_secs(now),
        })
    }

    fn refresh_audience(&self) -> String {
        format!("{}#refresh", self.service)
    }

    /// Signs a refresh token for `account`, good while its htpasswd entry
    /// keeps the password `binding` (see [`RefreshGrant::binding`]).
    pub fn issue_refresh(&self, account: &str, binding: &str) -> Result<String, TokenError> {
        let now = now_secs();
        let claims = RefreshClaims {
            iss: self.issuer.clone(),
            sub: account.to_owned(),
            aud: self.refresh_audience(),
            exp: now + self.refresh_ttl.as_secs(),
            nbf: now,
            iat: now,
            jti: jti(),
            pwb: binding.to_owned(),
        };
        jsonwebtoken::encode(&self.header(), &claims, &self.signing.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))
    }

    /// Verifies an access token presented to the registry API (once per
    /// token: later requests with it are answered from the cache).
    pub fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        if let Some(v) = self.verified.get(token) {
            return Ok(v);
        }
        let (claims, signer) = self.verify_with::<VerifiedClaims>(token, &self.service, true)?;
        // `exp` far away (u64::MAX) would make a leaked token good forever.
        let max = self.max_lifetime.as_secs();
        let now = now_secs();
        let too_long = |from: u64| claims.exp.saturating_sub(from) > max;
        if too_long(now) || claims.iat.is_some_and(too_long) {
            return Err(TokenError::Lifetime);
        }
        let v = Verified {
            account: Some(claims.sub).filter(|s| !s.is_empty()),
            access: claims.access,
            external: signer == Signer::External,
        };
        self.verified.put(token, &v, claims.exp, claims.nbf);
        Ok(v)
    }

    /// Verifies a refresh token (regate's own only); the caller checks the
    /// binding against the account's entry now.
    pub fn verify_refresh(&self, token: &str) -> Result<RefreshGrant, TokenError> {
        let (claims, _) =
            self.verify_with::<RefreshClaims>(token, &self.refresh_audience(), false)?;
        if claims.sub.is_empty() {
            return Err(TokenError::Claims);
        }
        Ok(RefreshGrant {
            account: claims.sub,
            binding: claims.pwb,
        })
    }

    fn verify_with<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        audience: &str,
        allow_external: bool,
    ) -> Result<(T, Signer), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match classify(&e) {
            TokenError::Algorithm => TokenError::Algorithm,
            _ => TokenError::Malformed,
        })?;
        if !ALLOWED_ALGS.contains(&header.alg) {
            return Err(TokenError::Algorithm);
        }
        let own = std::iter::once((&self.signing.verify, self.issuer.as_str(), Signer::Own));
        let external = self
            .external_issuer
            .as_deref()
            .filter(|_| allow_external)
            .into_iter()
            .flat_map(|iss| {
                self.external
                    .iter()
                    .map(move |k| (k, iss, Signer::External))
            });
        let candidates: Vec<_> = own
            .chain(external)
            .filter(|(k, _, _)| k.algs.contains(&header.alg))
            .filter(|(k, _, _)| match (&header.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(TokenError::UnknownKey);
        }
        let mut last = TokenError::UnknownKey;
        for (key, issuer, signer) in candidates {
            let mut v = Validation::new(header.alg);
            v.algorithms = vec![header.alg];
            v.set_issuer(&[issuer]);
            v.set_audience(&[audience]);
            v.set_required_spec_claims(&["exp", "iss", "aud"]);
            v.leeway = self.leeway.as_secs();
            v.validate_nbf = true;
            match jsonwebtoken::decode::<T>(token, &key.key, &v) {
                Ok(data) => return Ok((data.claims, signer)),
                Err(e) => last = classify(&e),
            }
        }
        Err(last)
    }
}

/// What `account` gets for `scopes`: for each repository, the requested
/// actions the rules allow (`*` asks for all); the catalog to authenticated
/// accounts; nothing else. Entries that would grant nothing are left out.
pub fn grant(rules: &RuleSet, account: Option<&str>, scopes: &[Scope]) -> Vec<AccessEntry> {
    let mut out: Vec<AccessEntry> = Vec::new();
    for s in scopes {
        match (s.kind.as_str(), s.name.as_str()) {
            ("repository", name) => {
                if crate::route::RepoName::parse(name).is_err() {
                    continue;
                }
                let asked: ActionSet = if s.actions.iter().any(|a| a == "*") {
                    ActionSet::all()
                } else {
                    s.actions.iter().filter_map(|a| Action::parse(a)).collect()
                };
                let granted = rules.allowed(account, name).intersect(asked);
                if granted.is_empty() {
                    continue;
                }
                match out
                    .iter_mut()
                    .find(|e| e.kind == "repository" && e.name == name)
                {
                    Some(e) => {
                        let merged = entry_actions(e).union(granted);
                        e.actions = merged.iter().map(|a| a.as_str().to_owned()).collect();
                    }
                    None => out.push(AccessEntry {
                        kind: "repository".into(),
                        name: name.into(),
                        actions: granted.iter().map(|a| a.as_str().to_owned()).collect(),
                    }),
                }
            }
            ("registry", "catalog")
                if account.is_some()
                    && s.actions.iter().any(|a| a == "*")
                    && !out.iter().any(|e| e.kind == "registry") =>
            {
                out.push(AccessEntry {
                    kind: "registry".into(),
                    name: "catalog".into(),
                    actions: vec!["*".into()],
                });
            }
            _ => {}
        }
    }
    out
}

fn entry_actions(e: &AccessEntry) -> ActionSet {
    if e.actions.iter().any(|a| a == "*") {
        return ActionSet::all();
    }
    e.actions.iter().filter_map(|a| Action::parse(a)).collect()
}

/// Whether a token's `access` covers what a request needs.
pub fn covers(access: &[AccessEntry], need: &Need) -> bool {
    match need {
        Need::Authenticated => true,
        Need::Catalog => access.iter().any(|e| {
            e.kind == "registry" && e.name == "catalog" && e.actions.iter().any(|a| a == "*")
        }),
        Need::Repositories(list) => list.iter().all(|(name, needed)| {
            access
                .iter()
                .filter(|e| e.kind == "repository" && e.name == name.as_str())
                .fold(ActionSet::NONE, |acc, e| acc.union(entry_actions(e)))
                .covers(*needed)
        }),
    }
}

/// The scope a client should ask for to satisfy `need`, for the challenge.
pub fn scope_for(need: &Need) -> Option<String> {
    match need {
        Need::Authenticated => None,
        Need::Catalog => Some("registry:catalog:*".into()),
        Need::Repositories(list) => Some(
            list.iter()
                .map(|(n, a)| format!("repository:{n}:{}", a.to_scope_list()))
                .collect::<Vec<_>>()
                .join(" "),
        ),
    }
}

#[cfg(test)]
mod tests;
