//! The retention API of the admin listener (JSON):
//!
//! - `POST /admin/retention` with [`RunRequest`] (`{"dry_run": true}`: the
//!   plan only; `{}`: plan and delete): 200 with the plan (`delete`, `keep`,
//!   `skipped`, `warnings`) and, when applied, `results` and the run's `id`.
//! - `GET /admin/retention`: the applied runs, newest first.
//!
//! Who may call it is decided before, by [`crate::admin`] (as for the GC
//! API); errors are rendered by [`RegistryError`].

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use super::{Retention, RetentionError, RunRequest};
use crate::body::{full, read_capped, ProxyBody};
use crate::error::{ErrorCode, RegistryError};

pub const PATH: &str = "/admin/retention";
/// Room for an `expect` list of a few thousand tags.
const MAX_BODY: usize = 4 * 1024 * 1024;
const HISTORY: usize = 50;

/// Whether `path` belongs to this API.
pub fn owns(path: &str) -> bool {
    path == PATH
}

impl From<RetentionError> for RegistryError {
    fn from(e: RetentionError) -> Self {
        let msg = e.to_string();
        match e {
            RetentionError::Api(_) | RetentionError::Gather(super::dates::GatherError::Api(_)) => {
                RegistryError::bad_gateway(msg)
            }
            RetentionError::Cluster(crate::cluster::ClusterError::RunningElsewhere {
                replica,
                account,
                started_at,
                ..
            }) => RegistryError::new(StatusCode::CONFLICT, ErrorCode::Denied, msg).with_detail(
                serde_json::json!({ "replica": replica, "account": account, "started_at": started_at }),
            ),
            RetentionError::Cluster(_) => RegistryError::unavailable(msg),
            RetentionError::State(s)
            | RetentionError::Gather(super::dates::GatherError::State(s))
                if s.is_unavailable() =>
            {
                RegistryError::unavailable(msg)
            }
            RetentionError::State(_)
            | RetentionError::Gather(super::dates::GatherError::State(_))
            | RetentionError::Gather(super::dates::GatherError::Storage { .. }) => {
                RegistryError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Unknown, msg)
            }
        }
    }
}

fn json_response(v: &impl serde::Serialize) -> Response<ProxyBody> {
    let mut r = Response::new(full(Bytes::from(
        serde_json::to_vec_pretty(v).unwrap_or_default(),
    )));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn bad_request(message: impl Into<String>) -> RegistryError {
    RegistryError::new(StatusCode::BAD_REQUEST, ErrorCode::Unsupported, message)
}

/// Serves one request; `account` and `client` are audited with each deletion.
pub async fn serve(
    retention: &Retention,
    req: Request<ProxyBody>,
    account: &str,
    client: std::net::IpAddr,
) -> Result<Response<ProxyBody>, RegistryError> {
    match *req.method() {
        Method::POST => {
            let bytes = read_capped(req.into_body(), MAX_BODY)
                .await
                .map_err(|e| bad_request(format!("cannot read the body: {e}")))?;
            let body: RunRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
                RunRequest::default()
            } else {
                serde_json::from_slice(&bytes).map_err(|e| {
                    bad_request(format!("invalid JSON body: {e}; send {{\"dry_run\": true}} for the plan, {{}} to apply it"))
                })?
            };
            let report = retention.run(body, account, client).await?;
            Ok(json_response(&report))
        }
        Method::GET | Method::HEAD => Ok(json_response(
            &serde_json::json!({ "runs": retention.history(HISTORY).await? }),
        )),
        ref m => Err(RegistryError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unsupported,
            format!("{m} is not served here; use GET or POST"),
        )
        .with_header(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"))),
    }
}
