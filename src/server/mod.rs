//! Starting and stopping regate: the state-directory lock, the listeners
//! (TLS, optional plain HTTP, admin; bound before anything else starts),
//! certificates, the managed registry, SIGHUP rule reloads and graceful
//! shutdown.
//!
//! Owns [`start`] (three steps: bind the listeners, open the components,
//! spawn the loops) and [`RunningServer`]. `main` and the tests share this
//! path; tests pass `127.0.0.1:0` addresses and read the bound ones back.

mod config_reload;
mod fd_limit;
mod first_bytes;
mod head_response;
mod idle;
pub mod instance_lock;
mod listener;

pub use listener::HARD_MAX_HEADERS;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::app::App;
use crate::config::Settings;
use crate::managed::ManagedRegistry;
use crate::metrics::Metrics;
use crate::proxy::Upstream;
use crate::tls::CertStore;
use listener::LoopSettings;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{key} = {addr}: cannot listen ({source}); pick a free address (in the configuration file or with the environment variable {}) or stop what uses it", crate::config::env_var(.key))]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Certs(#[from] crate::certs::CertError),
    #[error(transparent)]
    Managed(#[from] crate::managed::ManagedError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("recovering the GC state: {0}")]
    Gc(crate::gc::GcError),
    #[error("joining the cluster: {0}")]
    Cluster(crate::cluster::ClusterError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthSetupError),
    #[error(transparent)]
    Locked(#[from] instance_lock::LockError),
    #[error("server.dev_certs: {0}")]
    DevCerts(String),
}

/// A started regate; stop it with [`RunningServer::shutdown`].
pub struct RunningServer {
    pub tls_addr: SocketAddr,
    pub plain_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub upstream_origin: String,
    pub app: Arc<App>,
    stop: watch::Sender<bool>,
    loops: Vec<JoinHandle<()>>,
    reloader: JoinHandle<()>,
    managed: Option<ManagedRegistry>,
    /// Held until shutdown is complete: one regate per state directory.
    _locks: Vec<instance_lock::InstanceLock>,
}

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { key, addr, source })
}

/// Creates development certificates when configured and none exist yet.
/// Never overwrites a file: with any of the key, certificate or CA files
/// already there, a missing one is an error that names it.
fn ensure_dev_certs(settings: &Settings) -> Result<(), StartError> {
    let s = &settings.server;
    if !s.dev_certs || (s.tls_cert.is_file() && s.tls_key.is_file()) {
        return Ok(());
    }
    let dir = s
        .tls_cert
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let missing: Vec<_> = [
        ("server.tls_cert", &s.tls_cert),
        ("server.tls_key", &s.tls_key),
    ]
    .into_iter()
    .filter(|(_, p)| !p.exists())
    .map(|(key, p)| format!("{key} {}", p.display()))
    .collect();
    let present: Vec<_> = [
        s.tls_cert.clone(),
        s.tls_key.clone(),
        dir.join("ca.crt"),
        dir.join("ca.key"),
        dir.join("server.crt"),
        dir.join("server.key"),
    ]
    .into_iter()
    .filter(|p| p.exists())
    .map(|p| p.display().to_string())
    .collect::<std::collections::BTreeSet<_>>()
    .into_iter()
    .collect();
    if !present.is_empty() {
        return Err(StartError::DevCerts(format!(
            "{} missing, but {} exist{}: regate creates development certificates only where none exist and never overwrites a key or a CA. Restore the missing file, or move the existing ones away to get new ones (clients must then trust the new CA), or point server.tls_cert and server.tls_key at your own",
            missing.join(" and "),
            present.join(", "),
            if present.len() == 1 { "s" } else { "" },
        )));
    }
    let hosts = ["localhost", "127.0.0.1", "::1"].map(String::from);
    let files = crate::certs::generate(dir, &hosts)?;
    for (made, wanted) in [
        (&files.server_cert, &s.tls_cert),
        (&files.server_key, &s.tls_key),
    ] {
        if made != wanted {
            std::fs::rename(made, wanted).map_err(|source| crate::certs::CertError::Write {
                path: wanted.display().to_string(),
                source,
            })?;
        }
    }
    tracing::warn!(
        ca = %files.ca_cert.display(),
        "created development certificates for localhost; clients must trust this CA"
    );
    Ok(())
}

/// Starts everything the settings describe, in three steps: bind the
/// listeners (what a second instance or a taken port fails on, before
/// anything is written or started), open the components, spawn the loops.
pub async fn start(settings: Settings) -> Result<RunningServer, StartError> {
    let settings = Arc::new(settings);
    let metrics = Arc::new(Metrics::new());
    let (locks, listeners) = bind_listeners(&settings).await?;
    let parts = open_components(&settings, &metrics).await?;
    let (stop, stop_rx) = watch::channel(false);
    let (loops, addrs) = spawn_loops(&settings, listeners, &parts, &metrics, &stop_rx)?;
    let reloader = parts.certs.spawn_reloader();
    tracing::info!(
        tls = %addrs.tls,
        plain = addrs.plain.map(|a| a.to_string()).as_deref().unwrap_or("-"),
        admin = addrs.admin.map(|a| a.to_string()).as_deref().unwrap_or("-"),
        upstream = %parts.upstream.origin(),
        "regate is listening"
    );
    Ok(RunningServer {
        tls_addr: addrs.tls,
        plain_addr: addrs.plain,
        admin_addr: addrs.admin,
        upstream_origin: parts.upstream.origin().to_owned(),
        app: parts.app,
        stop,
        loops,
        reloader,
        managed: parts.managed,
        _locks: locks,
    })
}

/// The bound sockets, before anything serves them.
struct Listeners {
    tls: TcpListener,
    plain: Option<TcpListener>,
    admin: Option<TcpListener>,
}

/// The addresses the listeners are bound to (ports read back).
struct BoundAddrs {
    tls: SocketAddr,
    plain: Option<SocketAddr>,
    admin: Option<SocketAddr>,
}

/// Step 1: one regate per state directory, and every listener bound.
async fn bind_listeners(
    settings: &Settings,
) -> Result<(Vec<instance_lock::InstanceLock>, Listeners), StartError> {
    let mut locks = vec![instance_lock::InstanceLock::acquire(
        "state.dir",
        &settings.state.dir,
    )?];
    let same_dir = |a: &std::path::Path, b: &std::path::Path| {
        a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
    };
    if let Some(m) = settings
        .upstream
        .managed
        .as_ref()
        .filter(|m| !same_dir(&m.data_dir, &settings.state.dir))
    {
        locks.push(instance_lock::InstanceLock::acquire(
            "upstream.managed.data_dir",
            &m.data_dir,
        )?);
    }
    let tls = bind("server.listen", settings.server.listen).await?;
    let plain = match settings.server.plain_listen {
        Some(a) => Some(bind("server.plain_listen", a).await?),
        None => None,
    };
    let admin = match settings.server.admin_listen {
        Some(a) => Some(bind("server.admin_listen", a).await?),
        None => None,
    };
    Ok((locks, Listeners { tls, plain, admin }))
}

/// What the loops serve and run.
struct Components {
    app: Arc<App>,
    admin: Arc<Admin>,
    times: Arc<crate::retention::Recorder>,
    retention: Arc<crate::retention::Retention>,
    auth: Arc<crate::auth::Auth>,
    gc: Arc<crate::gc::Gc>,
    upstream: Upstream,
    certs: Arc<CertStore>,
    tls_config: Arc<rustls::ServerConfig>,
    managed: Option<ManagedRegistry>,
    /// With `[state] url`: this replica's part of the cluster.
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// Step 2: certificates, state, auth, the managed registry and the one
/// upstream client, tag-delete and GC recovery, the app.
async fn open_components(
    settings: &Arc<Settings>,
    metrics: &Arc<Metrics>,
) -> Result<Components, StartError> {
    ensure_dev_certs(settings)?;
    // Off the async threads: PostgreSQL's client blocks (and connects,
    // migrates, takes this replica's lease here).
    let state_settings = settings.state.clone();
    let state =
        crate::state::blocking(move || crate::state::State::from_settings(&state_settings)).await?;
    if state.is_shared() {
        tracing::info!(replica = state.replica(), url = %state.describe(), "state in PostgreSQL, shared with other replicas");
    }
    let auth = Arc::new(crate::auth::Auth::from_settings(settings)?);
    let certs = CertStore::load(&settings.server.tls_cert, &settings.server.tls_key)?;
    let tls_config = crate::tls::server_config(Arc::clone(&certs))?;

    // The one client to the registry: forwarding, regate's own calls, probes.
    let client = crate::proxy::UpstreamClient::new(
        settings.upstream.connect_timeout,
        settings.upstream.response_timeout,
        crate::auth::upstream_authorization(&settings.auth)?,
    );
    let managed = match &settings.upstream.managed {
        Some(m) => Some(
            ManagedRegistry::start(
                m,
                settings.upstream.url.as_ref(),
                &client,
                Arc::clone(metrics),
            )
            .await?,
        ),
        None => None,
    };
    let upstream_url = match (&managed, &settings.upstream.url) {
        (Some(m), _) => m.url().clone(),
        (None, Some(u)) => u.clone(),
        (None, None) => unreachable!("validation requires upstream.url or [upstream.managed]"),
    };
    let upstream = Upstream::new(client, &upstream_url, settings.upstream.idle_timeout);
    let api = crate::registry_api::RegistryApi::new(upstream.client().clone(), upstream.origin());
    let gate = crate::write_gate::WriteGate::new(
        crate::write_gate::GatePolicy::from_settings(&settings.gc),
        Arc::clone(metrics),
    );
    let tags = Arc::new(
        crate::tag_delete::TagDeleter::new(
            api.clone(),
            state.clone(),
            Arc::clone(&gate),
            Arc::clone(metrics),
            settings.delete.protect_shared_digests,
        )
        .with_protection(crate::protect::Protections::new(settings.protect.clone())),
    );
    let gc = crate::gc::Gc::new(
        settings.gc.clone(),
        crate::gc::GcTarget::new(
            &settings.gc,
            managed
                .as_ref()
                .zip(settings.upstream.managed.as_ref())
                .map(|(m, s)| (s.binary.as_str(), m.paths())),
            api.clone(),
        ),
        Arc::clone(&gate),
        state.clone(),
        Arc::clone(metrics),
        settings.state.dir.join("gc"),
    );
    // With [state] url: the gate and the GC lease are the cluster's; the
    // cluster's gate is applied before the first request.
    let cluster = match &settings.state.url {
        Some(url) => {
            let c = crate::cluster::Cluster::start(
                url,
                state.replica().to_owned(),
                Arc::clone(&gate),
                settings.gc.drain_timeout,
            )
            .await
            .map_err(StartError::Cluster)?;
            gc.join_cluster(Arc::clone(&c));
            tags.join_cluster(Arc::clone(&c));
            Some(c)
        }
        None => None,
    };
    // Finish or roll back deletes a crash left open before serving anything
    // (in a cluster, under the tags' locks on every replica).
    match tags.recover().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(entries = n, "recovered interrupted tag deletes"),
        Err(e) => tracing::error!(error = %e, "cannot read the tag-delete journal"),
    }
    if state.is_shared() {
        spawn_orphan_recovery(Arc::clone(&tags), state.clone());
    }
    // Before the first request: the gate comes back closed while a GC started
    // before a restart still runs, or while maintenance is on.
    gc.recover().await.map_err(StartError::Gc)?;

    let times = crate::retention::Recorder::new(state.clone());
    let retention = Arc::new(crate::retention::Retention::new(
        settings.retention.clone(),
        crate::retention::dates::Sources {
            api: api.clone(),
            state: state.clone(),
            storage_root: gc.storage_root().map(std::path::Path::to_path_buf),
        },
        Arc::clone(&tags),
        Arc::clone(&times),
        Arc::clone(&auth),
    ));
    let app = App::new(crate::app::AppParts {
        settings: Arc::clone(settings),
        upstream: upstream.clone(),
        metrics: Arc::clone(metrics),
        state,
        api,
        tags,
        gate,
        auth: Arc::clone(&auth),
        fast_reads: settings.storage.fast_reads.as_deref().map(|root| {
            tracing::info!(storage = %root.display(), "manifest and blob reads are answered from the storage ([storage] fast_reads)");
            crate::fast_reads::FastReads::new(root)
        }),
        times: Arc::clone(&times),
    });
    let admin = Arc::new(Admin {
        upstream: upstream.clone(),
        metrics: Arc::clone(metrics),
        gc: Arc::clone(&gc),
        auth: Arc::clone(&auth),
        retention: Arc::clone(&retention),
    });
    Ok(Components {
        app,
        admin,
        times,
        retention,
        auth,
        gc,
        upstream,
        certs,
        tls_config,
        managed,
        cluster,
    })
}

/// Step 3: the accept loops (TLS, plain, admin), the GC schedule and the
/// rule reloader, all stopped by `stop`.
fn spawn_loops(
    settings: &Settings,
    listeners: Listeners,
    parts: &Components,
    metrics: &Arc<Metrics>,
    stop: &watch::Receiver<bool>,
) -> Result<(Vec<JoinHandle<()>>, BoundAddrs), StartError> {
    let service = parts.app.service();
    fd_limit::ensure_for(settings.server.max_connections);
    let registry_connections =
        Arc::new(tokio::sync::Semaphore::new(settings.server.max_connections));
    let loop_settings = |name, tls| LoopSettings {
        name,
        tls,
        handshake_timeout: settings.server.handshake_timeout,
        header_read_timeout: settings.server.header_read_timeout,
        max_header_bytes: settings.server.max_header_bytes,
        shutdown_timeout: settings.server.shutdown_timeout,
        connections: Arc::clone(&registry_connections),
        connections_key: "server.max_connections",
    };

    let tls_addr = listeners
        .tls
        .local_addr()
        .map_err(|source| StartError::Bind {
            key: "server.listen",
            addr: settings.server.listen,
            source,
        })?;
    let mut loops = vec![tokio::spawn(listener::serve(
        listeners.tls,
        loop_settings(
            "tls",
            Some(tokio_rustls::TlsAcceptor::from(Arc::clone(
                &parts.tls_config,
            ))),
        ),
        service.clone(),
        Arc::clone(metrics),
        stop.clone(),
    ))];
    let plain_addr = listeners.plain.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(l) = listeners.plain {
        loops.push(tokio::spawn(listener::serve(
            l,
            loop_settings("plain", None),
            service,
            Arc::clone(metrics),
            stop.clone(),
        )));
    }
    let admin_addr = listeners.admin.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(l) = listeners.admin {
        loops.push(tokio::spawn(listener::serve(
            l,
            LoopSettings {
                connections: Arc::new(tokio::sync::Semaphore::new(
                    crate::config::defaults::ADMIN_MAX_CONNECTIONS,
                )),
                connections_key: "the admin listener's own 64",
                ..loop_settings("admin", None)
            },
            parts.admin.service(),
            Arc::clone(metrics),
            stop.clone(),
        )));
    }
    if let Some(c) = &parts.cluster {
        loops.push(tokio::spawn(Arc::clone(c).follow(stop.clone())));
    }
    if let Some(schedule) = settings.gc.schedule.clone() {
        loops.push(tokio::spawn(crate::gc::schedule::run(
            Arc::clone(&parts.gc),
            schedule,
            settings.gc.window,
            settings.gc.untagged,
            settings
                .retention_schedule
                .before_gc
                .then(|| crate::retention::schedule::before_gc(Arc::clone(&parts.retention))),
            stop.clone(),
        )));
    }
    if let Some(schedule) = settings.retention_schedule.schedule.clone() {
        loops.push(tokio::spawn(crate::retention::schedule::run(
            Arc::clone(&parts.retention),
            schedule,
            stop.clone(),
        )));
    }
    loops.push(tokio::spawn(
        Arc::clone(&parts.times).run(crate::retention::recorder::FLUSH_EVERY, stop.clone()),
    ));
    // Tests build settings from text (their source is a label, not a file).
    if std::path::Path::new(&settings.source).is_file() {
        loops.push(tokio::spawn(config_reload::run(
            std::path::PathBuf::from(&settings.source),
            Arc::clone(&parts.auth),
            stop.clone(),
        )));
    }
    let addrs = BoundAddrs {
        tls: tls_addr,
        plain: plain_addr,
        admin: admin_addr,
    };
    Ok((loops, addrs))
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish (bounded by
    /// `server.shutdown_timeout_secs`), then stops the managed registry.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for l in self.loops {
            let _ = l.await;
        }
        self.reloader.abort();
        if let Some(m) = self.managed {
            m.stop().await;
        }
    }
}

/// How often a replica on shared state checks its liveness lease and claims
/// what dead replicas left (the bound, with the settle time of the
/// recovery, on how long a dead replica's delete stays unresolved).
const ORPHAN_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// With state shared in PostgreSQL: keeps this replica's liveness lease and
/// finishes or rolls back the tag deletes of replicas that died.
fn spawn_orphan_recovery(tags: Arc<crate::tag_delete::TagDeleter>, state: crate::state::State) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(ORPHAN_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let s = state.clone();
            match crate::state::blocking(move || s.keep_lease()).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!("this replica's liveness lease is taken; trying again"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach the state database to keep this replica's lease");
                    continue;
                }
            }
            match tags.recover().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(entries = n, "recovered tag deletes a dead replica left"),
                Err(e) => tracing::warn!(error = %e, "cannot claim what dead replicas left"),
            }
        }
    });
}
