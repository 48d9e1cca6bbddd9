//! One bcrypt check per credential at a time (single flight), each run to
//! its end and bounded.
//!
//! When a client opens many connections at once with the same credential and
//! nothing is cached yet (a `docker push` of many layers, a load test), every
//! request would otherwise run its own bcrypt: 32 connections at cost 12 keep
//! two cores busy for seconds. Owns [`BcryptFlight`]: requests presenting the
//! same credential digest (see [`super::login_cache::LoginCache::key_of`])
//! against the same htpasswd generation share one verification and its
//! answer.
//!
//! A verification runs as its own task: a caller that goes away (a client
//! that closes the connection) neither stops it nor skips its `done`
//! callback, where the outcome is counted (a failed login counts whoever
//! waited for it), so hanging up cannot buy free guesses. At most
//! [`MAX_RUNNING`] run at once on the blocking pool; the rest queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::future::{FutureExt as _, Shared};
use futures_util::Future;
use std::pin::Pin;
use tokio::sync::Semaphore;

type Key = ([u8; 32], u64);
type Outcome = Result<bool, String>;
type Flight = Shared<Pin<Box<dyn Future<Output = Outcome> + Send>>>;

/// bcrypt checks running at once; more would only queue on two cores.
pub const MAX_RUNNING: usize = 8;

pub struct BcryptFlight {
    running: Arc<Mutex<HashMap<Key, Flight>>>,
    slots: Arc<Semaphore>,
}

impl Default for BcryptFlight {
    fn default() -> Self {
        BcryptFlight {
            running: Arc::default(),
            slots: Arc::new(Semaphore::new(MAX_RUNNING)),
        }
    }
}

impl BcryptFlight {
    /// The answer of `verify` (a blocking bcrypt check), run on the blocking
    /// pool unless a check of the same key is under way: then its answer.
    /// `start` runs when this call starts a new check (not when it joins
    /// one), `done` once with that check's outcome, even if every caller has
    /// gone by then.
    pub async fn verify<F, S, D>(
        &self,
        digest: [u8; 32],
        generation: u64,
        verify: F,
        start: S,
        done: D,
    ) -> Outcome
    where
        F: FnOnce() -> bool + Send + 'static,
        S: FnOnce(),
        D: FnOnce(&Outcome) + Send + 'static,
    {
        let key = (digest, generation);
        let flight = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            match running.get(&key) {
                Some(f) => f.clone(),
                None => {
                    start();
                    let f = self.launch(key, verify, done);
                    running.insert(key, f.clone());
                    f
                }
            }
        };
        flight.await
    }

    fn launch<F, D>(&self, key: Key, verify: F, done: D) -> Flight
    where
        F: FnOnce() -> bool + Send + 'static,
        D: FnOnce(&Outcome) + Send + 'static,
    {
        let (running, slots) = (Arc::clone(&self.running), Arc::clone(&self.slots));
        let task = tokio::spawn(async move {
            let outcome = match slots.acquire_owned().await {
                Ok(_slot) => tokio::task::spawn_blocking(verify)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            done(&outcome);
            // The answer is kept by the login cache (a success) or the
            // failed-login table, not here: a later check runs afresh.
            running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            outcome
        });
        let joined: Pin<Box<dyn Future<Output = Outcome> + Send>> =
            Box::pin(task.map(|r| r.unwrap_or_else(|e| Err(e.to_string()))));
        joined.shared()
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
                    .verify(
                        [7; 32],
                        1,
                        move || {
                            runs.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(200));
                            true
                        },
                        || {},
                        |_| {},
                    )
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
                    .verify(
                        digest,
                        generation,
                        move || {
                            runs.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(100));
                            answer
                        },
                        || {},
                        |_| {},
                    )
                    .await
            }));
        }
        let answers: Vec<_> = futures_join(tasks).await;
        assert_eq!(answers, vec![Ok(true), Ok(false), Ok(false)]);
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_check_whose_callers_all_left_runs_once_and_is_counted() {
        let flight = Arc::new(BcryptFlight::default());
        let (runs, counted) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let verify = |runs: Arc<AtomicUsize>| {
            move || {
                runs.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(300));
                false
            }
        };
        let leader = {
            let (flight, runs, counted) = (flight.clone(), runs.clone(), counted.clone());
            tokio::spawn(async move {
                flight
                    .verify(
                        [3; 32],
                        0,
                        verify(runs),
                        || {},
                        move |_| {
                            counted.fetch_add(1, Ordering::SeqCst);
                        },
                    )
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        leader.abort();
        // A caller arriving later joins the same check: no second bcrypt.
        let (r2, c2) = (runs.clone(), counted.clone());
        let follower = flight
            .verify(
                [3; 32],
                0,
                verify(r2),
                || {},
                move |_| {
                    c2.fetch_add(1, Ordering::SeqCst);
                },
            )
            .await;
        assert_eq!(follower, Ok(false));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(counted.load(Ordering::SeqCst), 1);
        assert_eq!(flight.in_flight(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_max_running_checks_run_at_once() {
        let flight = Arc::new(BcryptFlight::default());
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut tasks = Vec::new();
        for i in 0..(3 * MAX_RUNNING) {
            let (flight, now, peak) = (flight.clone(), now.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                let mut digest = [0; 32];
                digest[0] = i as u8;
                flight
                    .verify(
                        digest,
                        0,
                        move || {
                            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(n, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(30));
                            now.fetch_sub(1, Ordering::SeqCst);
                            true
                        },
                        || {},
                        |_| {},
                    )
                    .await
            }));
        }
        for t in futures_join(tasks).await {
            assert_eq!(t, Ok(true));
        }
        assert!(peak.load(Ordering::SeqCst) <= MAX_RUNNING);
    }

    async fn futures_join<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }
}
