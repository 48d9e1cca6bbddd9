//! Access tokens already verified, so a client that sends the same token on
//! every request (docker, podman and skopeo do, for its lifetime) pays the
//! signature check once instead of on each request.
//!
//! Owns [`VerifiedCache`]: keyed by a keyed SHA-256 of the whole token (the
//! key is random per process), holding what the verifier returned and the
//! token's `exp` and `nbf`, which are checked again, with the same leeway, on
//! every hit. A token that fails verification is never cached. The cache is
//! bounded: when full, expired entries go, and if that is not enough,
//! everything does (clients then pay one check again).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use super::Verified;

/// Tokens kept at most.
const MAX_ENTRIES: usize = 10_000;

struct Entry {
    verified: Verified,
    exp: u64,
    nbf: Option<u64>,
}

pub struct VerifiedCache {
    key: [u8; 32],
    leeway: u64,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl VerifiedCache {
    pub fn new(leeway: Duration) -> Self {
        VerifiedCache {
            key: rand::random(),
            leeway: leeway.as_secs(),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn digest(&self, token: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(token.as_bytes());
        h.finalize().into()
    }

    fn current(&self, e: &Entry, at: u64) -> bool {
        at <= e.exp.saturating_add(self.leeway)
            && e.nbf
                .is_none_or(|nbf| at.saturating_add(self.leeway) >= nbf)
    }

    /// What `token` was verified as, if it was and is still within its times.
    pub fn get(&self, token: &str) -> Option<Verified> {
        let d = self.digest(token);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let at = now();
        match entries.get(&d) {
            Some(e) if self.current(e, at) => Some(e.verified.clone()),
            Some(_) => {
                entries.remove(&d);
                None
            }
            None => None,
        }
    }

    /// Remembers a token the verifier has just accepted.
    pub fn put(&self, token: &str, verified: &Verified, exp: u64, nbf: Option<u64>) {
        let d = self.digest(token);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            let at = now();
            entries.retain(|_, e| self.current(e, at));
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            d,
            Entry {
                verified: verified.clone(),
                exp,
                nbf,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(account: &str) -> Verified {
        Verified {
            account: Some(account.into()),
            access: Vec::new(),
            external: false,
        }
    }

    #[test]
    fn hits_only_the_same_token_within_its_times() {
        let c = VerifiedCache::new(Duration::from_secs(0));
        let t = now();
        c.put("a.b.c", &v("alice"), t + 60, None);
        assert_eq!(c.get("a.b.c").unwrap().account.as_deref(), Some("alice"));
        assert!(c.get("a.b.d").is_none());
        c.put("old", &v("bob"), t - 1, None);
        assert!(c.get("old").is_none(), "expired");
        c.put("later", &v("bob"), t + 60, Some(t + 30));
        assert!(c.get("later").is_none(), "not yet valid");
        let lenient = VerifiedCache::new(Duration::from_secs(5));
        lenient.put("old", &v("bob"), t - 1, None);
        assert!(lenient.get("old").is_some(), "within the leeway");
    }

    #[test]
    fn stays_bounded() {
        let c = VerifiedCache::new(Duration::from_secs(0));
        let t = now();
        for i in 0..(MAX_ENTRIES + 5) {
            c.put(&format!("t{i}"), &v("x"), t + 60, None);
        }
        assert!(c.entries.lock().unwrap().len() <= MAX_ENTRIES);
    }
}
