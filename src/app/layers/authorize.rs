//! Authentication and authorization: who the caller is and whether the
//! rules let them do what the [`Route`] and method ask
//! ([`crate::auth::stage`]; a refusal is a challenge or a denial, audited
//! there). The [`Caller`] goes into the request's extensions (and the
//! account into the access-log record). Past this layer the client's
//! credentials are gone, upload requests carry a neutral `Content-Type`, a
//! mount the caller may not do is stripped to a plain upload, and no body
//! the registry would read as parameters passes. With auth on, `_catalog` is
//! answered here, filtered to what the caller may see.

use std::sync::Arc;

use http::Request;

use super::stage::{Inner, Stage, StageLayer};
use super::{conn_of, extension, Answer};
use crate::access_log::RequestRecord;
use crate::app::App;
use crate::auth::Caller;
use crate::error::RegistryError;
use crate::proxy::ClientSide;
use crate::route::Route;

/// The layer, over the app's auth, rules and upstream.
pub fn layer(app: Arc<App>) -> StageLayer<Authorize> {
    StageLayer(Authorize { app })
}

#[derive(Clone)]
pub struct Authorize {
    app: Arc<App>,
}

impl<B: Send + 'static> Stage<B> for Authorize {
    async fn run<S: Inner<B>>(self, req: Request<B>, mut inner: S) -> Answer {
        let app = self.app;
        let conn = conn_of(&req)?;
        let route: Route = extension(&req)?;
        let public = app.public_origin(&req, &conn);
        let (mut parts, body) = req.into_parts();
        // No body the registry would read as parameters gets past here.
        crate::registry_params::check_body_type(&parts.method, &parts.headers)?;
        let caller = crate::auth::stage(&app.auth, &parts, &route, conn.peer, &public).await?;
        if let (Some(a), Some(record)) = (
            &caller.account,
            parts.extensions.get::<Arc<RequestRecord>>(),
        ) {
            record.set_account(a);
        }
        // The client's credentials stop here.
        app.auth.prepare_upstream(&mut parts.headers);
        if matches!(route, Route::UploadStart { .. } | Route::Upload { .. }) {
            crate::registry_params::neutral_upload_type(&mut parts.headers);
        }
        if caller.drop_mount {
            parts.uri = uri_without_mount(&parts.uri)?;
        }
        if let (Route::Catalog, true) = (&route, app.auth.filters_catalog()) {
            let side = ClientSide {
                peer: conn.peer,
                public: &public,
                route: route.kind(),
                metrics: &app.metrics,
            };
            let query = parts.uri.query();
            return crate::auth::catalog::serve(&app.auth, &app.upstream, query, &caller, side)
                .await;
        }
        parts.extensions.insert::<Caller>(caller);
        inner.call(Request::from_parts(parts, body)).await
    }
}

/// `uri` without the `mount` and `from` of its query.
fn uri_without_mount(uri: &http::Uri) -> Result<http::Uri, RegistryError> {
    let path = uri.path();
    let target = match uri.query().and_then(crate::registry_params::without_mount) {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    let rewritten = target.parse().ok().and_then(|pq| {
        parts.path_and_query = Some(pq);
        http::Uri::from_parts(parts).ok()
    });
    rewritten.ok_or_else(|| {
        RegistryError::new(
            http::StatusCode::BAD_REQUEST,
            crate::error::ErrorCode::Unsupported,
            "the request target cannot be passed on without its mount",
        )
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use base64::Engine as _;
    use http::{header, StatusCode};
    use tower::ServiceExt;

    use super::*;
    use crate::app::layers::test_app::{app, htpasswd_toml, recorder, request};
    use crate::body::ProxyBody;

    const ACL: &str =
        "[[acl]]\naccount = \"alice\"\nrepository = \"team/*\"\nactions = [\"pull\", \"push\"]\n\
        [[acl]]\naccount = \"anonymous\"\nrepository = \"public/*\"\nactions = [\"pull\"]\n";

    fn get(path: &str, user: Option<(&str, &str)>) -> Request<ProxyBody> {
        let mut b = Request::get(path);
        if let Some((u, p)) = user {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            b = b.header(header::AUTHORIZATION, format!("Basic {basic}"));
        }
        let mut req = request(b.body(crate::body::empty()).unwrap());
        let route = Route::parse(path).unwrap();
        req.extensions_mut().insert(route);
        req
    }

    #[tokio::test]
    async fn anonymous_wrong_and_allowed_callers() {
        let t = app(|dir| htpasswd_toml(dir, "basic", ACL));
        let seen = Arc::new(Mutex::new(None));
        let svc = tower::Layer::layer(&layer(Arc::clone(&t.app)), recorder(Arc::clone(&seen)));
        let team = "/v2/team/app/manifests/v1";

        // Anonymous, where anonymous may not pull: a Basic challenge.
        let err = svc.clone().oneshot(get(team, None)).await.unwrap_err();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
        let challenge = err.into_response();
        assert!(challenge.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Basic "));
        // Wrong password: 401 again.
        let err = svc
            .clone()
            .oneshot(get(team, Some(("alice", "wrong"))))
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
        // The right password of an account with no rule there: denied.
        let err = svc
            .clone()
            .oneshot(get(team, Some(("bob", "bob-pw"))))
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::FORBIDDEN);
        assert!(
            seen.lock().unwrap().is_none(),
            "a refused request went inward"
        );

        // Allowed: the caller goes inward, the credentials do not.
        let resp = svc
            .clone()
            .oneshot(get(team, Some(("alice", "alice-pw"))))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let parts = seen.lock().unwrap().take().expect("the inner service ran");
        assert_eq!(
            parts.extensions.get::<Caller>().unwrap().account.as_deref(),
            Some("alice")
        );
        assert!(!parts.headers.contains_key(header::AUTHORIZATION));

        // Anonymous where anonymous may pull.
        svc.oneshot(get("/v2/public/app/manifests/v1", None))
            .await
            .unwrap();
        let parts = seen.lock().unwrap().take().expect("the inner service ran");
        assert_eq!(parts.extensions.get::<Caller>().unwrap().account, None);
    }
}
