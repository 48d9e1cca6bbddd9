//! The path parsed once: a [`Route`] goes into the request's extensions (and
//! its kind and repository into the access-log record) for every layer
//! below. A path that is no registry route gets the parser's error, except
//! the token endpoint (`/auth/token`), which shares the registry listeners
//! and is answered here ([`crate::auth::token::endpoint`]).

use std::sync::Arc;

use http::Request;

use super::stage::{Inner, Stage, StageLayer};
use super::{conn_of, Answer, BoxFuture};
use crate::access_log::RequestRecord;
use crate::auth::token::endpoint;
use crate::auth::Auth;
use crate::body::ProxyBody;
use crate::error::RegistryError;
use crate::route::Route;

/// The layer; `auth` answers the token endpoint.
pub fn layer(auth: Arc<Auth>) -> StageLayer<Routing> {
    StageLayer(Routing { auth })
}

#[derive(Clone)]
pub struct Routing {
    auth: Arc<Auth>,
}

impl Stage<ProxyBody> for Routing {
    async fn run<S: Inner<ProxyBody>>(self, mut req: Request<ProxyBody>, mut inner: S) -> Answer {
        match Route::parse(req.uri().path()) {
            Ok(route) => {
                if let Some(record) = req.extensions().get::<Arc<RequestRecord>>() {
                    record.set_route(route.kind(), route.repository().map(|n| n.to_string()));
                }
                req.extensions_mut().insert(route);
                // Boxed before awaiting: with the concrete body type, the
                // compiler cannot otherwise prove this future `Send` for
                // every lifetime of the body's error object.
                let call: BoxFuture<Answer> = Box::pin(inner.call(req));
                call.await
            }
            // The token issuer (before the route parser, which knows only /v2/).
            Err(_) if req.uri().path() == endpoint::PATH => {
                let peer = conn_of(&req)?.peer;
                endpoint::serve(&self.auth, req, peer)
                    .await
                    .map_err(RegistryError::from)
            }
            Err(e) => Err(e.answer_to(req.method())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http::{Method, StatusCode};
    use tower::ServiceExt;

    use super::*;
    use crate::app::layers::test_app::{app, recorder, request};
    use crate::route::{Reference, RepoName};

    #[tokio::test]
    async fn the_route_is_parsed_once_into_the_extensions() {
        let t = app(|_| String::new());
        let seen = Arc::new(Mutex::new(None));
        let svc = tower::Layer::layer(&layer(Arc::clone(&t.app.auth)), recorder(Arc::clone(&seen)));
        let record = RequestRecord::new(
            Method::GET,
            "/v2/team/app/manifests/v1",
            "192.0.2.7:1".parse().unwrap(),
            Arc::clone(&t.app.metrics),
        );
        let mut req = request(
            Request::get("/v2/team/app/manifests/v1")
                .body(crate::body::empty())
                .unwrap(),
        );
        req.extensions_mut().insert(Arc::clone(&record));
        let resp = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let parts = seen.lock().unwrap().take().expect("the inner service ran");
        match parts.extensions.get::<Route>() {
            Some(Route::Manifest {
                name,
                reference: Reference::Tag(tag),
            }) => {
                assert_eq!(name, &RepoName::parse("team/app").unwrap());
                assert_eq!(tag.as_str(), "v1");
            }
            other => panic!("extensions hold {other:?}"),
        }
        assert_eq!(record.route(), crate::route_kind::RouteKind::Manifest);

        // Not a route: the parser's answer, and nothing goes inward.
        for (method, path, status) in [
            (Method::GET, "/v3/", StatusCode::NOT_FOUND),
            (
                Method::GET,
                "/v2/team/app/manifests/-bad",
                StatusCode::NOT_FOUND,
            ),
            (
                Method::PUT,
                "/v2/team/app/manifests/-bad",
                StatusCode::BAD_REQUEST,
            ),
            (
                Method::GET,
                "/v2/Team/app/tags/list",
                StatusCode::BAD_REQUEST,
            ),
        ] {
            let req = request(
                Request::builder()
                    .method(method.clone())
                    .uri(path)
                    .body(crate::body::empty())
                    .unwrap(),
            );
            let err = svc.clone().oneshot(req).await.unwrap_err();
            assert_eq!(err.status, status, "{method} {path}: {err}");
            assert!(
                seen.lock().unwrap().is_none(),
                "{method} {path} went inward"
            );
        }
    }

    #[tokio::test]
    async fn the_token_endpoint_is_answered_here() {
        // Auth off: the token endpoint answers that it is not served, which
        // is not the route parser's answer to an unknown path.
        let t = app(|_| String::new());
        let seen = Arc::new(Mutex::new(None));
        let svc = tower::Layer::layer(&layer(Arc::clone(&t.app.auth)), recorder(Arc::clone(&seen)));
        let req = request(
            Request::get(endpoint::PATH)
                .body(crate::body::empty())
                .unwrap(),
        );
        let err = svc.oneshot(req).await.unwrap_err();
        assert_eq!(err.message, endpoint::EndpointError::NotServed.to_string());
        assert!(seen.lock().unwrap().is_none());
    }
}
