//! The cache of verified Basic credentials, so repeated requests do not pay
//! bcrypt again.
//!
//! Owns [`LoginCache`]: per user, a keyed SHA-256 digest of `user:password`
//! (the key is random per process, so the cache holds nothing an attacker
//! could test passwords against offline), the htpasswd generation it was
//! verified against, and an expiry. Digests are compared in constant time.
//! Only verified credentials go in, so its size is bounded by the number of
//! users. Calls `sha2` and `subtle` only.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

struct Entry {
    digest: [u8; 32],
    generation: u64,
    expires: Instant,
}

pub struct LoginCache {
    key: [u8; 32],
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl LoginCache {
    pub fn new(ttl: Duration) -> Self {
        LoginCache {
            key: rand::random(),
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The keyed digest that stands for `user:password` in this process.
    pub fn key_of(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update((user.len() as u64).to_be_bytes());
        h.update(user.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Whether `user:password` was verified against this `generation` of the
    /// htpasswd file within the TTL.
    pub fn hit(&self, user: &str, password: &str, generation: u64) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        let digest = self.key_of(user, password);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(user).is_some_and(|e| {
            let same: bool = e.digest.ct_eq(&digest).into();
            same && e.generation == generation && e.expires > Instant::now()
        })
    }

    /// Remembers a credential bcrypt has just verified.
    pub fn store(&self, user: &str, password: &str, generation: u64) {
        if self.ttl.is_zero() {
            return;
        }
        let entry = Entry {
            digest: self.key_of(user, password),
            generation,
            expires: Instant::now() + self.ttl,
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        // Entries of an older generation are stale: the file changed.
        entries.retain(|_, e| e.generation == generation);
        entries.insert(user.to_owned(), entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_only_the_same_credential_and_generation() {
        let c = LoginCache::new(Duration::from_secs(60));
        c.store("alice", "pw", 1);
        assert!(c.hit("alice", "pw", 1));
        assert!(!c.hit("alice", "pw2", 1));
        assert!(!c.hit("bob", "pw", 1));
        assert!(!c.hit("alice", "pw", 2));
    }

    #[test]
    fn expires() {
        let c = LoginCache::new(Duration::from_millis(20));
        c.store("alice", "pw", 0);
        std::thread::sleep(Duration::from_millis(40));
        assert!(!c.hit("alice", "pw", 0));
        let off = LoginCache::new(Duration::ZERO);
        off.store("alice", "pw", 0);
        assert!(!off.hit("alice", "pw", 0));
    }
}
