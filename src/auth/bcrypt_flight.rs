//! One bcrypt check per credential at a time (single flight).
//!
//! When a client opens many connections at once with the same credential and
//! nothing is cached yet (a `docker push` of many layers, a load test), every
//! request would otherwise run its own bcrypt: 32 connections at cost 12 keep
//! two cores busy for seconds. Owns [`BcryptFlight`]: requests presenting the
//! same credential digest (see [`super::login_cache::LoginCache::key_of`])
//! against the same htpasswd generation share one verification and its
//! answer. A cancelled leader (client gone) hands the work to the next waiter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

type Key = ([u8; 32], u64);

#[derive(Default)]
pub struct BcryptFlight {
    running: Mutex<HashMap<Key, Arc<OnceCell<bool>>>>,
}

impl BcryptFlight {
    /// Runs `verify` (a blocking bcrypt check) on the blocking pool, unless a
    /// check of the same key is under way: then waits for its answer.
    pub async fn verify<F>(
        &self,
        digest: [u8; 32],
        generation: u64,
        verify: F,
    ) -> Result<bool, String>
    where
        F: FnOnce() -> bool + Send + 'static,
    {
        let key = (digest, generation);
        let cell = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            running.entry(key).or_default().clone()
        };
        let result = cell
            .get_or_try_init(|| async {
                tokio::task::spawn_blocking(verify)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
            .copied();
        // The answer is kept by the login cache (when it is a success), not
        // here: forget the flight so a later check runs afresh.
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            running.remove(&key);
        }
        result
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.running.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_checks_of_one_credential_run_once() {
        let flight = Arc::new(BcryptFlight::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (flight, runs) = (flight.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                flight
                    .verify([7; 32], 1, move || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(200));
                        true
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(true));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flight.in_flight(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn other_credentials_and_generations_do_not_share() {
        let flight = Arc::new(BcryptFlight::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for (digest, generation, answer) in
            [([1; 32], 1, true), ([2; 32], 1, false), ([1; 32], 2, false)]
        {
            let (flight, runs) = (flight.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                flight
                    .verify(digest, generation, move || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(100));
                        answer
                    })
                    .await
            }));
        }
        let answers: Vec<_> = futures_join(tasks).await;
        assert_eq!(answers, vec![Ok(true), Ok(false), Ok(false)]);
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_leader_hands_over() {
        let flight = Arc::new(BcryptFlight::default());
        let leader = {
            let flight = flight.clone();
            tokio::spawn(async move {
                flight
                    .verify([3; 32], 0, || {
                        std::thread::sleep(Duration::from_millis(300));
                        true
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let follower = {
            let flight = flight.clone();
            tokio::spawn(async move { flight.verify([3; 32], 0, || true).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        leader.abort();
        assert_eq!(follower.await.unwrap(), Ok(true));
    }

    async fn futures_join<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }
}
