//! `Docker-Distribution-Api-Version: registry/2.0` on every answer regate
//! gives, set once at the top of each stack by tower-http's
//! [`SetResponseHeaderLayer`]: errors, challenges, regate's own endpoints,
//! HEADs, and forwarded answers the registry sent without it (a registry's
//! own answers carry it already and are left alone).

use http::HeaderValue;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::error::API_VERSION_HEADER;

/// The layer; outermost in the stack, so nothing answers around it.
pub fn layer() -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(
        API_VERSION_HEADER,
        HeaderValue::from_static("registry/2.0"),
    )
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use http::{header, Method, Request, Response, StatusCode};
    use tower::{Layer, ServiceExt};

    use super::*;
    use crate::app::layers::test_app::{app, htpasswd_toml, request};
    use crate::error::RegistryError;

    #[tokio::test]
    async fn set_when_missing_kept_when_present() {
        let svc = layer().layer(tower::service_fn(|req: Request<()>| async move {
            let mut resp = Response::new(());
            if req.uri().path() == "/upstream" {
                resp.headers_mut()
                    .insert(API_VERSION_HEADER, HeaderValue::from_static("registry/2.1"));
            }
            Ok::<_, std::convert::Infallible>(resp)
        }));
        let own = svc
            .clone()
            .oneshot(Request::get("/own").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(own.headers()[API_VERSION_HEADER], "registry/2.0");
        let forwarded = svc
            .oneshot(Request::get("/upstream").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(forwarded.headers()[API_VERSION_HEADER], "registry/2.1");
        assert_eq!(
            forwarded
                .headers()
                .get_all(API_VERSION_HEADER)
                .iter()
                .count(),
            1
        );
    }

    /// Every answer of the registry stack carries the header: the stub
    /// endpoints' own answer (which sets none), an error of each layer
    /// (head limits, route, auth challenge, denial), a 405 of the stub, for
    /// GET and HEAD.
    #[tokio::test]
    async fn on_every_answer_of_the_registry_stack() {
        let acl = "[[acl]]\naccount = \"alice\"\nrepository = \"team/*\"\nactions = [\"pull\"]\n";
        let t = app(|dir| htpasswd_toml(dir, "basic", acl));
        let stub = tower::service_fn(|req: Request<crate::body::ProxyBody>| async move {
            if req.uri().path().ends_with("/refused") {
                return Err(RegistryError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    crate::error::ErrorCode::Unsupported,
                    "stub",
                ));
            }
            Ok(Response::new(crate::body::full("{}")))
        });
        let svc = t.app.stack::<crate::body::ProxyBody, _>(stub);
        let alice = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:alice-pw")
        );
        let cases: [(&str, Option<&str>, Option<String>, StatusCode); 6] = [
            (
                "/v2/team/app/manifests/v1",
                Some(&alice),
                None,
                StatusCode::OK,
            ),
            (
                "/v2/team/app/manifests/refused",
                Some(&alice),
                None,
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (
                "/v2/team/app/manifests/v1",
                None,
                None,
                StatusCode::UNAUTHORIZED,
            ),
            (
                "/v2/other/app/manifests/v1",
                Some(&alice),
                None,
                StatusCode::FORBIDDEN,
            ),
            ("/v3/nothing", None, None, StatusCode::NOT_FOUND),
            (
                "/v2/team/app/manifests/v1",
                Some(&alice),
                Some("x".repeat(40_000)),
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ),
        ];
        for method in [Method::GET, Method::HEAD] {
            for (path, auth, big, status) in &cases {
                let mut b = Request::builder().method(method.clone()).uri(*path);
                if let Some(a) = auth {
                    b = b.header(header::AUTHORIZATION, *a);
                }
                if let Some(v) = big {
                    b = b.header("x-big", v.as_str());
                }
                let req = request(b.body(crate::body::empty()).unwrap());
                let resp = svc.clone().oneshot(req).await.unwrap();
                assert_eq!(resp.status(), *status, "{method} {path}");
                assert_eq!(
                    resp.headers()[API_VERSION_HEADER],
                    "registry/2.0",
                    "{method} {path}"
                );
            }
        }
    }
}
