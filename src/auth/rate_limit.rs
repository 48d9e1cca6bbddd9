//! Failed-login limiting, per client address and per account.
//!
//! Owns [`FailedLogins`]: fixed windows (`auth.failed_login_window_secs`)
//! counting failed password checks; once a client address or an account
//! reaches `auth.max_failed_logins` in a window, further password checks for
//! it are refused (429 with `Retry-After`) until the window ends. A lock-out
//! therefore lasts at most one window, and a credential already verified
//! (in the login cache) is never refused, so an attacker hammering an account
//! does not lock out its rightful user's running clients. Memory is bounded.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys each table holds; beyond that new keys are not tracked.
const MAX_KEYS: usize = 100_000;

struct Window {
    start: Instant,
    failures: u32,
}

struct Table<K> {
    map: Mutex<HashMap<K, Window>>,
}

impl<K: Eq + Hash + Clone> Table<K> {
    fn new() -> Self {
        Table {
            map: Mutex::new(HashMap::new()),
        }
    }

    fn blocked_for(&self, key: &K, max: u32, window: Duration) -> Option<Duration> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let w = map.get(key)?;
        let age = w.start.elapsed();
        (age < window && w.failures >= max).then(|| window - age)
    }

    fn fail(&self, key: &K, window: Duration) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_KEYS {
            map.retain(|_, w| w.start.elapsed() < window);
        }
        if let Some(w) = map.get_mut(key) {
            if w.start.elapsed() >= window {
                *w = Window {
                    start: Instant::now(),
                    failures: 0,
                };
            }
            w.failures = w.failures.saturating_add(1);
        } else if map.len() < MAX_KEYS {
            map.insert(
                key.clone(),
                Window {
                    start: Instant::now(),
                    failures: 1,
                },
            );
        }
    }
}

pub struct FailedLogins {
    max: u32,
    window: Duration,
    by_address: Table<IpAddr>,
    by_account: Table<String>,
}

impl FailedLogins {
    pub fn new(max: u32, window: Duration) -> Self {
        FailedLogins {
            max,
            window,
            by_address: Table::new(),
            by_account: Table::new(),
        }
    }

    /// How long `address` or `account` must wait before the next password
    /// check, if it is blocked.
    pub fn blocked_for(&self, address: IpAddr, account: &str) -> Option<Duration> {
        let a = self.by_address.blocked_for(&address, self.max, self.window);
        let b = self
            .by_account
            .blocked_for(&account.to_owned(), self.max, self.window);
        a.into_iter().chain(b).max()
    }

    /// Counts one failed password check.
    pub fn fail(&self, address: IpAddr, account: &str) {
        self.by_address.fail(&address, self.window);
        self.by_account.fail(&account.to_owned(), self.window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_per_address_and_per_account() {
        let l = FailedLogins::new(3, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.blocked_for(a, "alice").is_none());
            l.fail(a, "alice");
        }
        // The address is blocked, for any account.
        assert!(l.blocked_for(a, "bob").is_some());
        // The account is blocked, from any address.
        let wait = l.blocked_for(b, "alice").unwrap();
        assert!(wait <= Duration::from_secs(60) && wait > Duration::from_secs(55));
        assert!(l.blocked_for(b, "bob").is_none());
    }

    #[test]
    fn a_block_ends_with_its_window() {
        let l = FailedLogins::new(1, Duration::from_millis(30));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        l.fail(a, "alice");
        assert!(l.blocked_for(a, "alice").is_some());
        std::thread::sleep(Duration::from_millis(50));
        assert!(l.blocked_for(a, "alice").is_none());
    }
}
