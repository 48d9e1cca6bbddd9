//! A small HTTP/1.1 load generator for the benchmark (`bench/run`).
//!
//! N keep-alive connections each send one request at a time, in a loop, for a
//! fixed duration; every response body is read to its end. HEAD works (Debian's
//! wrk 4.1 waits for a body after a HEAD and reports nothing). `https://` URLs
//! trust only the CA given with `--cacert`. Prints one JSON object: count,
//! errors, rps, latency percentiles in ms and the status codes seen; with
//! `--timeline`, also the successful responses per 100 ms from the start of
//! the measured window (with its Unix time), so a script can compare the
//! rate inside and outside a window such as a GC run (`bench/gc`).
//! `--body FILE` sends that file with every request (a manifest PUT), and a
//! `{n}` in the URL's path becomes a number unique in the run for each
//! request (a new tag per PUT: PUTs of one tag wait for each other).
//!
//! ```text
//! cargo run --release --example loadgen -- --method HEAD --connections 32 \
//!     --duration 10 --cacert ca.crt -H 'Accept: application/json' https://127.0.0.1:5443/v2/x/manifests/t
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Errors carry a message for the user; nothing here needs their type.
type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, Error>;

#[derive(Parser, Debug)]
#[command(about = "HTTP/1.1 keep-alive load generator; prints JSON")]
struct Args {
    /// `http://` or `https://` URL (path and query are sent as given).
    url: String,
    /// Request method.
    #[arg(long, short = 'X', default_value = "GET")]
    method: String,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Concurrent connections, each with one request in flight.
    #[arg(long, short = 'c', default_value_t = 32)]
    connections: usize,
    /// Measured duration in seconds.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring starts (connections opened, caches warm).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// PEM file of the CA to trust for `https://` URLs.
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// Runtime worker threads (the load generator shares the machine with
    /// what it measures; one thread keeps its share small).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Also print responses per 100 ms (`timeline`).
    #[arg(long)]
    timeline: bool,
    /// A file sent as the body of every request.
    #[arg(long)]
    body: Option<PathBuf>,
}

const BUCKET_MS: u128 = 100;

/// The request every connection repeats.
struct Target {
    uri: Uri,
    host: String,
    port: u16,
    method: Method,
    headers: Vec<(HeaderName, HeaderValue)>,
    tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
    body: Option<Bytes>,
    /// The path and query, split at `{n}` when the URL has one.
    path: (String, Option<String>),
    next: std::sync::atomic::AtomicU64,
}

/// What one connection saw during the measured window.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    /// Completion time of each measured response, ms after the window opened.
    done_ms: Vec<u32>,
    errors: u64,
    statuses: BTreeMap<u16, u64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let target = Arc::new(target(&args)?);
    let start = Instant::now();
    let start_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let measure_from = start + Duration::from_secs_f64(args.warmup.max(0.0));
    let measure_until = measure_from + Duration::from_secs_f64(args.duration.max(0.1));
    let tasks: Vec<_> = (0..args.connections.max(1))
        .map(|_| {
            let target = Arc::clone(&target);
            tokio::spawn(connection_loop(target, measure_from, measure_until))
        })
        .collect();
    let mut all = Tally::default();
    for t in tasks {
        let tally = t.await?;
        all.latencies_us.extend(tally.latencies_us);
        all.done_ms.extend(tally.done_ms);
        all.errors += tally.errors;
        for (s, n) in tally.statuses {
            *all.statuses.entry(s).or_default() += n;
        }
    }
    all.latencies_us.sort_unstable();
    let secs = args.duration.max(0.1);
    let pct = |p: f64| -> f64 {
        if all.latencies_us.is_empty() {
            return 0.0;
        }
        let i =
            ((all.latencies_us.len() as f64 * p).ceil() as usize).clamp(1, all.latencies_us.len());
        f64::from(all.latencies_us[i - 1]) / 1000.0
    };
    let count = all.latencies_us.len();
    let mut out = serde_json::json!({
        "url": args.url,
        "method": args.method,
        "connections": args.connections,
        "duration_s": secs,
        "count": count,
        "errors": all.errors,
        "rps": count as f64 / secs,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
        "statuses": all.statuses,
    });
    if args.timeline {
        let buckets = (secs * 1000.0 / BUCKET_MS as f64).ceil() as usize;
        let last = buckets.max(1) - 1;
        let mut per = vec![0u32; last + 1];
        for ms in &all.done_ms {
            let i = (u128::from(*ms) / BUCKET_MS) as usize;
            per[i.min(last)] += 1;
        }
        let warmup_ms = (args.warmup.max(0.0) * 1000.0) as u128;
        out["timeline"] = serde_json::json!({
            "start_unix_ms": start_unix_ms + warmup_ms,
            "bucket_ms": BUCKET_MS as u64,
            "counts": per,
        });
    }
    println!("{out}");
    Ok(())
}

fn target(args: &Args) -> Result<Target> {
    let (before, after) = match args.url.split_once("{n}") {
        Some((b, a)) => (b.to_owned(), Some(a.to_owned())),
        None => (args.url.clone(), None),
    };
    let uri: Uri = match &after {
        Some(after) => format!("{before}0{after}"),
        None => before.clone(),
    }
    .parse()
    .map_err(|e| format!("the URL {:?}: {e}", args.url))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("the URL must start with http:// or https://".into()),
    };
    let host = uri.host().ok_or("the URL has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let method =
        Method::from_bytes(args.method.as_bytes()).map_err(|e| format!("--method: {e}"))?;
    let mut headers = Vec::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("header {h:?} is not `Name: value`"))?;
        headers.push((
            HeaderName::from_bytes(name.trim().as_bytes())?,
            HeaderValue::from_str(value.trim())?,
        ));
    }
    let tls = if https {
        let path = args
            .cacert
            .as_ref()
            .ok_or("an https:// URL needs --cacert")?;
        let pem = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name =
            rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']))?.to_owned();
        Some((TlsConnector::from(Arc::new(cfg)), name))
    } else {
        None
    };
    let body = match &args.body {
        Some(path) => Some(Bytes::from(
            std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?,
        )),
        None => None,
    };
    let full = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let path = match after {
        Some(after) => {
            let host_at = before.find("://").map_or(0, |i| i + 3);
            let cut = before[host_at..]
                .find('/')
                .map(|i| host_at + i)
                .ok_or("`{n}` must be in the URL's path")?;
            (before[cut..].to_owned(), Some(after))
        }
        None => (full.to_owned(), None),
    };
    Ok(Target {
        uri,
        host,
        port,
        method,
        headers,
        tls,
        body,
        path,
        next: std::sync::atomic::AtomicU64::new(0),
    })
}

type ReqBody = Either<Empty<Bytes>, Full<Bytes>>;
type Sender = hyper::client::conn::http1::SendRequest<ReqBody>;

async fn connect(t: &Target) -> Result<Sender> {
    let tcp = TcpStream::connect((t.host.trim_matches(['[', ']']), t.port)).await?;
    tcp.set_nodelay(true)?;
    let sender = match &t.tls {
        Some((connector, name)) => {
            let tls = connector.connect(name.clone(), tcp).await?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            sender
        }
        None => {
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            sender
        }
    };
    Ok(sender)
}

async fn one_request(t: &Target, sender: &mut Sender) -> Result<u16> {
    sender.ready().await?;
    let mut req = Request::builder()
        .method(t.method.clone())
        .uri(match &t.path {
            (before, Some(after)) => {
                let n = t.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                format!("{before}{n}{after}")
            }
            (path, None) => path.clone(),
        })
        .header(
            http::header::HOST,
            t.uri.authority().map(|a| a.as_str()).unwrap_or(""),
        );
    for (name, value) in &t.headers {
        req = req.header(name, value);
    }
    let body = match &t.body {
        Some(b) => Either::Right(Full::new(b.clone())),
        None => Either::Left(Empty::new()),
    };
    let resp = sender.send_request(req.body(body)?).await?;
    let status = resp.status().as_u16();
    // Read the body to its end so the connection can carry the next request.
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok(status)
}

/// Keeps one connection busy until `until`; reconnects after an error.
async fn connection_loop(t: Arc<Target>, from: Instant, until: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut sender: Option<Sender> = None;
    while Instant::now() < until {
        let s = match sender.as_mut() {
            Some(s) => s,
            None => match connect(&t).await {
                Ok(s) => sender.insert(s),
                Err(_) => {
                    if Instant::now() >= from {
                        tally.errors += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let started = Instant::now();
        let result = one_request(&t, s).await;
        let done = Instant::now();
        let measured = started >= from && done <= until;
        match result {
            Ok(status) => {
                if measured {
                    let us = done.duration_since(started).as_micros();
                    tally
                        .latencies_us
                        .push(u32::try_from(us).unwrap_or(u32::MAX));
                    let at = done.duration_since(from).as_millis();
                    tally.done_ms.push(u32::try_from(at).unwrap_or(u32::MAX));
                    *tally.statuses.entry(status).or_default() += 1;
                }
            }
            Err(_) => {
                if measured {
                    tally.errors += 1;
                }
                sender = None;
            }
        }
    }
    tally
}
