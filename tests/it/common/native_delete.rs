//! A stub in front of the real 2.8 registry that adds the one thing
//! distribution 3.x has and 2.8 lacks, so the native tag-delete path can be
//! tested: `DELETE /v2/<name>/manifests/<tag>` removes the tag itself (its
//! folder in the storage, as 3.x's tag delete unlinks it) and answers 202, or
//! 404 `MANIFEST_UNKNOWN` for an unknown tag. Every other request passes to
//! the registry unchanged (bodies buffered: test images are small).

use std::convert::Infallible;
use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub struct NativeTagDelete {
    /// `http://127.0.0.1:PORT`: give this to regate as `upstream.url`.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl NativeTagDelete {
    pub async fn start(registry: &super::Registry) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = registry.url.clone();
        let repos = registry.storage.join("docker/registry/v2/repositories");
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder().no_proxy().build().unwrap();
            while let Ok((tcp, _)) = listener.accept().await {
                let (client, upstream, repos) = (client.clone(), upstream.clone(), repos.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        serve(req, client.clone(), upstream.clone(), repos.clone())
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        NativeTagDelete { url, task }
    }
}

impl Drop for NativeTagDelete {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    req: Request<hyper::body::Incoming>,
    client: reqwest::Client,
    upstream: String,
    repos: PathBuf,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if req.method() == hyper::Method::DELETE {
        if let Some((name, reference)) = path
            .strip_prefix("/v2/")
            .and_then(|p| p.rsplit_once("/manifests/"))
        {
            if !reference.contains(':') {
                let dir = repos.join(name).join("_manifests/tags").join(reference);
                let status = if std::fs::remove_dir_all(&dir).is_ok() {
                    202
                } else {
                    404
                };
                let body = if status == 404 {
                    r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
                } else {
                    ""
                };
                return Ok(Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap());
            }
        }
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let target = format!(
        "{upstream}{}",
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut forward = client.request(parts.method, target).body(body);
    for (name, value) in &parts.headers {
        forward = forward.header(name, value);
    }
    let resp = match forward.send().await {
        Ok(r) => r,
        Err(_) => {
            return Ok(Response::builder()
                .status(502)
                .body(Full::new(Bytes::new()))
                .unwrap())
        }
    };
    let mut out = Response::builder().status(resp.status());
    for (name, value) in resp.headers() {
        if name != "transfer-encoding" && name != "connection" && name != "content-length" {
            out = out.header(name, value);
        }
    }
    let bytes = resp.bytes().await.unwrap_or_default();
    Ok(out.body(Full::new(bytes)).unwrap())
}
