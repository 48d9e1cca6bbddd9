//! Failed-login limiting, per client address and account.
//!
//! Owns [`FailedLogins`]: fixed windows (`auth.failed_login_window_secs`)
//! counting failed password checks. Once an address reaches
//! `auth.max_failed_logins` for one account, or [`ADDRESS_FACTOR`] times that
//! over all accounts, its further password checks are refused (429 with
//! `Retry-After`) until the window ends. The lock is per address: failures
//! from elsewhere never lock out a user who presents the right password (an
//! attacker cannot keep the admin account locked), and a credential already
//! verified (in the login cache) is never refused. The same wrong credential
//! presented again within the window (clients retry it) is refused without
//! bcrypt and counted once. Checks under way count against the address's
//! budget, so parallel guesses cannot exceed it. Memory is bounded.

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

/// An address may fail this many times `max` over all accounts it tries.
pub const ADDRESS_FACTOR: u32 = 4;

/// A credential digest (keyed, see `LoginCache::key_of`) and the htpasswd
/// generation it was checked against.
pub type CredentialKey = ([u8; 32], u64);

pub struct FailedLogins {
    max: u32,
    window: Duration,
    by_pair: Table<(IpAddr, String)>,
    by_address: Table<IpAddr>,
    /// Checks under way per address: they count against its budget until
    /// they end, so a burst of parallel guesses is no bigger than `max`.
    pending: Mutex<HashMap<IpAddr, u32>>,
    /// Credentials found wrong in this window: a client retrying the same
    /// wrong password (ctr does, 5-10 times) is answered without bcrypt and
    /// counted once.
    wrong: Mutex<HashMap<CredentialKey, Instant>>,
}

impl FailedLogins {
    pub fn new(max: u32, window: Duration) -> Self {
        FailedLogins {
            max,
            window,
            by_pair: Table::new(),
            by_address: Table::new(),
            pending: Mutex::new(HashMap::new()),
            wrong: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this exact credential already failed within the window.
    pub fn known_wrong(&self, credential: CredentialKey) -> bool {
        let wrong = self.wrong.lock().unwrap_or_else(|e| e.into_inner());
        wrong
            .get(&credential)
            .is_some_and(|at| at.elapsed() < self.window)
    }

    /// How long `address` must wait before its next password check for
    /// `account`, if it is blocked: too many failures for that account from
    /// that address, too many for the address over all accounts, or as many
    /// checks under way as it may still fail.
    pub fn blocked_for(&self, address: IpAddr, account: &str) -> Option<Duration> {
        let pair = (address, account.to_owned());
        let a = self.by_pair.blocked_for(&pair, self.max, self.window);
        let b = self.by_address.blocked_for(
            &address,
            self.max.saturating_mul(ADDRESS_FACTOR),
            self.window,
        );
        let pending = *self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&address)
            .unwrap_or(&0);
        let c = (pending >= self.max).then_some(Duration::from_secs(1));
        a.into_iter().chain(b).chain(c).max()
    }

    /// A check from `address` starts.
    pub fn begin(&self, address: IpAddr) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        *pending.entry(address).or_insert(0) += 1;
    }

    /// A check from `address` ended.
    pub fn end(&self, address: IpAddr) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = pending.get_mut(&address) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                pending.remove(&address);
            }
        }
    }

    /// Counts one failed password check.
    pub fn fail(&self, address: IpAddr, account: &str, credential: CredentialKey) {
        self.by_pair
            .fail(&(address, account.to_owned()), self.window);
        self.by_address.fail(&address, self.window);
        let mut wrong = self.wrong.lock().unwrap_or_else(|e| e.into_inner());
        if wrong.len() >= MAX_KEYS {
            wrong.retain(|_, at| at.elapsed() < self.window);
        }
        if wrong.len() < MAX_KEYS {
            wrong.insert(credential, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRED: CredentialKey = ([1; 32], 1);

    fn cred(n: u8) -> CredentialKey {
        ([n; 32], 1)
    }

    #[test]
    fn blocks_an_account_from_one_address_not_from_others() {
        let l = FailedLogins::new(3, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for n in 0..3 {
            assert!(l.blocked_for(a, "alice").is_none());
            l.fail(a, "alice", cred(n));
        }
        let wait = l.blocked_for(a, "alice").unwrap();
        assert!(wait <= Duration::from_secs(60) && wait > Duration::from_secs(55));
        // Another address presenting the right password is not locked out,
        // and the first address may still try other accounts.
        assert!(l.blocked_for(b, "alice").is_none());
        assert!(l.blocked_for(a, "bob").is_none());
    }

    #[test]
    fn an_address_spraying_accounts_is_blocked_at_its_own_budget() {
        let l = FailedLogins::new(2, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for n in 0..(2 * ADDRESS_FACTOR) as u8 {
            l.fail(a, &format!("user{n}"), cred(n));
        }
        assert!(l.blocked_for(a, "fresh").is_some());
    }

    #[test]
    fn a_repeated_wrong_credential_is_known_and_checks_under_way_count() {
        let l = FailedLogins::new(2, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(!l.known_wrong(CRED));
        l.fail(a, "alice", CRED);
        assert!(l.known_wrong(CRED));
        assert!(
            !l.known_wrong(([1; 32], 2)),
            "a new htpasswd generation checks again"
        );
        l.begin(a);
        assert!(l.blocked_for(a, "bob").is_none());
        l.begin(a);
        assert!(
            l.blocked_for(a, "bob").is_some(),
            "two checks under way with max 2"
        );
        l.end(a);
        l.end(a);
        assert!(l.blocked_for(a, "bob").is_none());
    }

    #[test]
    fn a_block_ends_with_its_window() {
        let l = FailedLogins::new(1, Duration::from_millis(30));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        l.fail(a, "alice", CRED);
        assert!(l.blocked_for(a, "alice").is_some());
        assert!(l.known_wrong(CRED));
        std::thread::sleep(Duration::from_millis(50));
        assert!(l.blocked_for(a, "alice").is_none());
        assert!(!l.known_wrong(CRED));
    }
}
