//! One access-log line per request, written when the request is completely
//! done (both bodies finished or dropped), with the true byte counts.
//!
//! Owns [`RequestRecord`]: the bodies add bytes to it, the pipeline sets the
//! route once it is parsed, the status and the account, and its `Drop` writes
//! the line (target
//! `regate::access`) and the request metrics. The query string is never
//! logged (it carries the upload `_state`), nor any header.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::Method;

use crate::metrics::Metrics;
use crate::route_kind::RouteKind;

/// Which way a body flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client (request body).
    In,
    /// To the client (response body).
    Out,
}

pub struct RequestRecord {
    start: Instant,
    method: Method,
    /// The route kind and repository, once the route is parsed (a request
    /// refused before that, for its head, is logged as `other`).
    route: OnceLock<(RouteKind, Option<String>)>,
    path: String,
    peer: SocketAddr,
    status: AtomicU16,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    account: OnceLock<String>,
    metrics: Arc<Metrics>,
}

impl RequestRecord {
    pub fn new(method: Method, path: &str, peer: SocketAddr, metrics: Arc<Metrics>) -> Arc<Self> {
        metrics.request_started();
        Arc::new(RequestRecord {
            start: Instant::now(),
            method,
            route: OnceLock::new(),
            path: path.chars().take(512).collect(),
            peer,
            status: AtomicU16::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            account: OnceLock::new(),
            metrics,
        })
    }

    pub fn add_bytes(&self, direction: Direction, n: u64) {
        match direction {
            Direction::In => self.bytes_in.fetch_add(n, Ordering::Relaxed),
            Direction::Out => self.bytes_out.fetch_add(n, Ordering::Relaxed),
        };
    }

    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    /// The authenticated account, once known.
    pub fn set_account(&self, account: &str) {
        let _ = self.account.set(account.to_owned());
    }

    pub fn account(&self) -> Option<&str> {
        self.account.get().map(String::as_str)
    }

    /// The parsed route's kind and repository.
    pub fn set_route(&self, kind: RouteKind, repository: Option<String>) {
        let _ = self.route.set((kind, repository));
    }

    pub fn route(&self) -> RouteKind {
        self.route.get().map_or(RouteKind::Other, |r| r.0)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        let status = self.status.load(Ordering::Relaxed);
        let bytes_in = self.bytes_in.load(Ordering::Relaxed);
        let bytes_out = self.bytes_out.load(Ordering::Relaxed);
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(
            target: "regate::access",
            method = %self.method,
            route = self.route().as_str(),
            repository = self.route.get().and_then(|r| r.1.as_deref()).unwrap_or("-"),
            path = %self.path,
            status,
            bytes_in,
            bytes_out,
            duration_ms = format_args!("{ms:.2}"),
            peer = %self.peer,
            account = self.account.get().map(String::as_str).unwrap_or("-"),
        );
        self.metrics
            .request_done(self.route(), &self.method, status, bytes_in, bytes_out);
    }
}
