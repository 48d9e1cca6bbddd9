//! Prometheus metrics, labelled by route kind (never by raw path).
//!
//! Owns the metric registry and its text encoding, served by `admin` on the
//! admin listener. Other modules record through the methods here.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::route_kind::RouteKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

/// The method as a label: the methods of HTTP (RFC 9110) and PATCH by name,
/// anything else as `other`, so a client sending made-up methods cannot
/// create series without bound.
fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    route: &'static str,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric regate exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    bytes: Family<BytesLabels, Counter>,
    upstream_latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    tls_failures: Family<ReasonLabels, Counter>,
    in_flight: Gauge,
    upstream_restarts: Counter,
    gc: GcMetrics,
    tag_deletes: TagDeleteMetrics,
    fast_reads: Family<FastReadLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FastReadLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The write gate's and garbage collection's metrics.
struct GcMetrics {
    gate_state: Family<StateLabels, Gauge>,
    writes_held: Counter,
    writes_rejected: Counter,
    runs: Family<OutcomeLabels, Counter>,
    duration: Histogram,
    bytes_freed: Counter,
}

impl GcMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = GcMetrics {
            gate_state: Family::default(),
            writes_held: Counter::default(),
            writes_rejected: Counter::default(),
            runs: Family::default(),
            duration: Histogram::new(exponential_buckets(0.5, 2.0, 14)),
            bytes_freed: Counter::default(),
        };
        registry.register(
            "write_gate_state",
            "1 for the write gate's current state (open, draining, closed), 0 for the others",
            m.gate_state.clone(),
        );
        registry.register(
            "write_gate_held_writes",
            "Writes held by a draining or closed gate",
            m.writes_held.clone(),
        );
        registry.register(
            "write_gate_rejected_writes",
            "Writes answered 503 by the gate (reject mode, or hold_timeout reached)",
            m.writes_rejected.clone(),
        );
        registry.register(
            "gc_runs",
            "Garbage collection runs, by outcome",
            m.runs.clone(),
        );
        registry.register(
            "gc_duration_seconds",
            "Duration of garbage collection runs, from request to gate reopened",
            m.duration.clone(),
        );
        registry.register(
            "gc_freed_bytes",
            "Storage bytes freed by garbage collection",
            m.bytes_freed.clone(),
        );
        m
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WayLabels {
    way: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

/// The tag delete's metrics.
struct TagDeleteMetrics {
    duration: Family<WayLabels, Histogram, fn() -> Histogram>,
    dummy_configs: Family<SourceLabels, Counter>,
}

impl TagDeleteMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = TagDeleteMetrics {
            duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            dummy_configs: Family::default(),
        };
        registry.register(
            "tag_delete_seconds",
            "Time to remove one tag with a DELETE, by way: native (the registry's own tag delete) or overwrite (dummy manifest)",
            m.duration.clone(),
        );
        registry.register(
            "tag_delete_dummy_configs",
            "Dummy configs used by deletes, by source: staged (uploaded ahead), uploaded (at the delete), restaged (staged but gone, uploaded again)",
            m.dummy_configs.clone(),
        );
        m
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("regate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route kind, method and status",
            requests.clone(),
        );
        let bytes = Family::<BytesLabels, Counter>::default();
        registry.register(
            "body_bytes",
            "Body bytes streamed, by route kind and direction (in: from clients, out: to clients)",
            bytes.clone(),
        );
        let upstream_latency =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        registry.register(
            "upstream_response_seconds",
            "Time from sending a request upstream to its response headers",
            upstream_latency.clone(),
        );
        let tls_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            tls_failures.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Requests being served now",
            in_flight.clone(),
        );
        let upstream_restarts = Counter::default();
        registry.register(
            "managed_registry_restarts",
            "Times the managed registry was restarted after it exited",
            upstream_restarts.clone(),
        );
        let gc = GcMetrics::register(&mut registry);
        let tag_deletes = TagDeleteMetrics::register(&mut registry);
        let fast_reads = Family::<FastReadLabels, Counter>::default();
        registry.register(
            "fast_reads",
            "Manifest and blob reads asked of the storage ([storage] fast_reads), by kind (manifest, blob) and outcome: served, or why forwarded (miss, accept, conditional, range, manifest_type, other_algorithm, layout, io_error)",
            fast_reads.clone(),
        );
        Metrics {
            registry,
            requests,
            bytes,
            upstream_latency,
            tls_failures,
            in_flight,
            upstream_restarts,
            gc,
            tag_deletes,
            fast_reads,
        }
    }

    /// A manifest or blob read asked of the storage: `served`, or why it
    /// was forwarded.
    pub fn fast_read(&self, kind: &'static str, outcome: &'static str) {
        self.fast_reads
            .get_or_create(&FastReadLabels { kind, outcome })
            .inc();
    }

    pub fn request_started(&self) {
        self.in_flight.inc();
    }

    pub fn request_done(
        &self,
        route: RouteKind,
        method: &http::Method,
        status: u16,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        self.in_flight.dec();
        self.requests
            .get_or_create(&RequestLabels {
                route: route.as_str(),
                method: method_label(method),
                status,
            })
            .inc();
        if bytes_in > 0 {
            self.bytes
                .get_or_create(&BytesLabels {
                    route: route.as_str(),
                    direction: "in",
                })
                .inc_by(bytes_in);
        }
        if bytes_out > 0 {
            self.bytes
                .get_or_create(&BytesLabels {
                    route: route.as_str(),
                    direction: "out",
                })
                .inc_by(bytes_out);
        }
    }

    pub fn upstream_latency(&self, route: RouteKind, d: Duration) {
        self.upstream_latency
            .get_or_create(&RouteLabels {
                route: route.as_str(),
            })
            .observe(d.as_secs_f64());
    }

    pub fn tls_failure(&self, reason: &'static str) {
        self.tls_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn managed_restart(&self) {
        self.upstream_restarts.inc();
    }

    /// The write gate entered `state`.
    pub fn gate_state(&self, state: &'static str) {
        for s in ["open", "draining", "closed"] {
            self.gc
                .gate_state
                .get_or_create(&StateLabels { state: s })
                .set(i64::from(s == state));
        }
    }

    pub fn write_held(&self) {
        self.gc.writes_held.inc();
    }

    pub fn write_rejected(&self) {
        self.gc.writes_rejected.inc();
    }

    /// A GC run ended with `outcome` (`succeeded`, `failed`, ...).
    pub fn gc_run(&self, outcome: &'static str, d: Duration, bytes_freed: u64) {
        self.gc.runs.get_or_create(&OutcomeLabels { outcome }).inc();
        self.gc.duration.observe(d.as_secs_f64());
        self.gc.bytes_freed.inc_by(bytes_freed);
    }

    /// A tag delete took `d`; `native` when the registry deleted the tag itself.
    pub fn tag_delete(&self, native: bool, d: Duration) {
        let way = if native { "native" } else { "overwrite" };
        self.tag_deletes
            .duration
            .get_or_create(&WayLabels { way })
            .observe(d.as_secs_f64());
    }

    /// Where the dummy config of a delete came from (`staged`, `uploaded`,
    /// `restaged`).
    pub fn dummy_config(&self, source: &'static str) {
        self.tag_deletes
            .dummy_configs
            .get_or_create(&SourceLabels { source })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_series(m: &Metrics) -> Vec<String> {
        m.encode()
            .lines()
            .filter(|l| l.starts_with("regate_requests_total{"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn made_up_methods_share_one_series() {
        let m = Metrics::new();
        for i in 0..50 {
            let method = http::Method::from_bytes(format!("X{i}").as_bytes()).unwrap();
            m.request_started();
            m.request_done(RouteKind::Other, &method, 405, 0, 0);
        }
        m.request_started();
        m.request_done(RouteKind::Other, &http::Method::GET, 405, 0, 0);
        let series = request_series(&m);
        assert_eq!(series.len(), 2, "{series:?}");
        assert!(
            series
                .iter()
                .any(|l| l.contains("method=\"other\"") && l.ends_with(" 50")),
            "{series:?}"
        );
        assert!(
            series.iter().any(|l| l.contains("method=\"GET\"")),
            "{series:?}"
        );
    }
}
