//! An [`App`] for the layers' unit tests: its upstream is a closed port (no
//! test here reaches it), its state a temporary folder, and its auth what
//! the test's TOML says (basic auth with `alice:alice-pw` and `bob:bob-pw`
//! from [`htpasswd_toml`]).

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};

use crate::app::{App, AppParts, ConnInfo};
use crate::body::ProxyBody;
use crate::config::Settings;
use crate::metrics::Metrics;

pub(crate) struct TestApp {
    pub app: Arc<App>,
    /// What the app is made of, for tests that build more around it.
    pub parts: AppParts,
    /// Removed when the test ends.
    pub _dir: tempfile::TempDir,
}

/// The folder's htpasswd file with alice and bob (bcrypt cost 4), as an
/// `[auth]` section in `mode`, with `acl` rules after it.
pub(crate) fn htpasswd_toml(dir: &std::path::Path, mode: &str, acl: &str) -> String {
    let path = dir.join("htpasswd");
    let mut text = String::new();
    for u in ["alice", "bob"] {
        let h = bcrypt::hash(format!("{u}-pw"), 4).unwrap();
        text.push_str(&format!("{u}:{h}\n"));
    }
    std::fs::write(&path, text).unwrap();
    format!(
        "[auth]\nmode = {mode:?}\nhtpasswd = {:?}\n{acl}",
        path.display().to_string()
    )
}

/// An app whose configuration is the base plus `extra` (made with the
/// folder's path, for files it names).
pub(crate) fn app(extra: impl FnOnce(&std::path::Path) -> String) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\ndev_certs = true\n[upstream]\nurl = \"http://127.0.0.1:9\"\n[state]\ndir = {:?}\n{}",
        dir.path().join("state").display().to_string(),
        extra(dir.path())
    );
    let settings = Arc::new(Settings::from_toml(&text, "t", std::iter::empty()).unwrap());
    let metrics = Arc::new(Metrics::new());
    let state = crate::state::State::open(&settings.state.dir).unwrap();
    let auth = Arc::new(crate::auth::Auth::from_settings(&settings).unwrap());
    let client = crate::proxy::UpstreamClient::new(
        settings.upstream.connect_timeout,
        settings.upstream.response_timeout,
        None,
    );
    let upstream = crate::proxy::Upstream::new(
        client,
        settings.upstream.url.as_ref().unwrap(),
        settings.upstream.idle_timeout,
    );
    let api = crate::registry_api::RegistryApi::new(upstream.client().clone(), upstream.origin());
    let gate = crate::write_gate::WriteGate::new(
        crate::write_gate::GatePolicy::from_settings(&settings.gc),
        Arc::clone(&metrics),
    );
    let tags = Arc::new(crate::tag_delete::TagDeleter::new(
        api.clone(),
        state.clone(),
        Arc::clone(&gate),
        Arc::clone(&metrics),
        false,
    ));
    let state_for_times = state.clone();
    let parts = AppParts {
        settings,
        upstream,
        metrics,
        state,
        api,
        tags,
        gate,
        auth,
        fast_reads: None,
        times: crate::retention::Recorder::new(state_for_times),
    };
    let app = App::new(parts.clone());
    TestApp {
        app,
        parts,
        _dir: dir,
    }
}

/// A request as the listener hands it on: its connection in the extensions.
pub(crate) fn request<B>(mut req: Request<B>) -> Request<B> {
    let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    let local: SocketAddr = "127.0.0.1:5443".parse().unwrap();
    req.extensions_mut().insert(ConnInfo {
        peer,
        local,
        tls: true,
    });
    req
}

/// An inner service that answers 200 `ok` and keeps the head of the request
/// it got (headers, extensions) in `seen`, for the test to check.
pub(crate) fn recorder<B: Send + 'static>(
    seen: Arc<std::sync::Mutex<Option<http::request::Parts>>>,
) -> impl tower::Service<
    Request<B>,
    Response = Response<ProxyBody>,
    Error = crate::error::RegistryError,
    Future: Send + 'static,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |req: Request<B>| {
        let (parts, _) = req.into_parts();
        *seen.lock().unwrap() = Some(parts);
        async { Ok(Response::new(crate::body::full("ok"))) }
    })
}
