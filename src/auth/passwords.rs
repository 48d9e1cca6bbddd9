//! Checking a user name and password: the live htpasswd table, the cache of
//! verified credentials, failed-login limiting, and bcrypt off the async
//! threads, run once per credential however many requests present it at the
//! same moment. Unknown users cost a bcrypt check too, so timing does not
//! tell which names exist. Owns [`Passwords`] and [`LoginError`].

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::bcrypt_flight::BcryptFlight;
use super::htpasswd::{Htpasswd, HtpasswdError};
use super::login_cache::LoginCache;
use super::rate_limit::FailedLogins;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("incorrect username or password")]
    Wrong,
    #[error("too many failed logins; retry in {}s", .0.as_secs().max(1))]
    TooMany(Duration),
    #[error("the password check failed: {0}")]
    Internal(String),
}

impl LoginError {
    /// The audit event a failed login is recorded as.
    pub fn audit_event(&self) -> &'static str {
        match self {
            LoginError::TooMany(_) => "rate_limited",
            LoginError::Wrong | LoginError::Internal(_) => "auth_failure",
        }
    }
}

pub struct Passwords {
    htpasswd: Htpasswd,
    cache: LoginCache,
    limiter: FailedLogins,
    flight: BcryptFlight,
    /// Verified against for unknown users.
    dummy_hash: String,
}

impl Passwords {
    pub fn open(
        path: &Path,
        cache_ttl: Duration,
        max_failed: u32,
        window: Duration,
    ) -> Result<Passwords, HtpasswdError> {
        let htpasswd = Htpasswd::open(path)?;
        // The dummy costs what a real user costs.
        let cost = htpasswd
            .current()
            .0
            .values()
            .next()
            .and_then(|h| h.get(4..6)?.parse::<u32>().ok())
            .unwrap_or(bcrypt::DEFAULT_COST);
        let dummy_hash = bcrypt::hash(rand::random::<[u8; 16]>(), cost)
            .map_err(|e| HtpasswdError::Hash(e.to_string()))?;
        Ok(Passwords {
            htpasswd,
            cache: LoginCache::new(cache_ttl),
            limiter: FailedLogins::new(max_failed, window),
            flight: BcryptFlight::default(),
            dummy_hash,
        })
    }

    /// Whether `user` is (still) in the file.
    pub fn exists(&self, user: &str) -> bool {
        self.htpasswd.current().0.contains_key(user)
    }

    /// A digest of `user`'s entry (its bcrypt hash, salt included): it
    /// changes with the password. `None` when the user is not in the file.
    /// Refresh tokens carry it; the hash itself never leaves regate.
    pub fn binding(&self, user: &str) -> Option<String> {
        use sha2::Digest as _;
        let users = self.htpasswd.current().0;
        let hash = users.get(user)?;
        let d = sha2::Sha256::new()
            .chain_update(b"regate refresh binding\0")
            .chain_update(hash.as_bytes())
            .finalize();
        Some(hex::encode(&d[..16]))
    }

    /// Checks `user:password` from `client`.
    pub async fn check(
        self: &Arc<Self>,
        user: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<(), LoginError> {
        let (users, generation) = self.htpasswd.current();
        if self.cache.hit(user, password, generation) {
            return Ok(());
        }
        let digest = self.cache.key_of(user, password);
        if self.limiter.known_wrong((digest, generation)) {
            return Err(LoginError::Wrong);
        }
        if let Some(wait) = self.limiter.blocked_for(client, user) {
            return Err(LoginError::TooMany(wait));
        }
        let (hash, known) = match users.get(user) {
            Some(h) => (h.clone(), true),
            None => (self.dummy_hash.clone(), false),
        };
        let pw = password.to_owned();
        // Counted in the check's own task: a caller that hangs up mid-check
        // is still charged for it.
        let (this, account, secret) = (Arc::clone(self), user.to_owned(), password.to_owned());
        let ok = self
            .flight
            .verify(
                digest,
                generation,
                move || bcrypt::verify(pw, &hash).unwrap_or(false),
                || self.limiter.begin(client),
                move |outcome| {
                    this.limiter.end(client);
                    match outcome {
                        Ok(true) if known => this.cache.store(&account, &secret, generation),
                        Ok(_) => this.limiter.fail(client, &account, (digest, generation)),
                        Err(_) => {}
                    }
                },
            )
            .await
            .map_err(LoginError::Internal)?;
        if ok && known {
            Ok(())
        } else {
            Err(LoginError::Wrong)
        }
    }
}
