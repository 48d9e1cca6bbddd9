//! The GC and maintenance API of the admin listener (JSON):
//!
//! - `POST /admin/gc` with `{"dry_run": bool, "untagged": bool}` starts a run
//!   (202 with its id); `?wait=true` answers when it has finished.
//! - `GET /admin/gc`: the gate, the run in progress, the history; in a
//!   cluster `.gate.state` is the cluster's gate and `.cluster` tells which
//!   replica closed it and which runs the GC;
//!   `GET /admin/gc/<id>`: one run.
//! - `PUT /admin/maintenance` with `{"reason": "..."}` drains and closes the
//!   gate; `DELETE /admin/maintenance` opens it; `GET` tells.
//! - `GET /admin/status`: gate, maintenance, GC in progress and last run.
//!
//! Who may call it is decided before this module sees a request, by
//! [`crate::admin`] with [`crate::auth::admin_access`] (the `admin` right on
//! `*`; open when auth is off). The admin listener is plain HTTP bound to
//! loopback by default (`server.admin_listen = 127.0.0.1:5444`): keep it on
//! loopback or an internal network, since Basic credentials cross it in
//! clear. Errors are rendered by [`RegistryError`].

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{Gc, GcRequest};
use crate::body::{full, read_capped, ProxyBody};
use crate::error::{ErrorCode, RegistryError};
use crate::state::gc_history::GcTrigger;

const MAX_BODY: usize = 64 * 1024;
const HISTORY: usize = 20;

/// Whether `path` belongs to this API.
pub fn owns(path: &str) -> bool {
    path == "/admin/gc"
        || path.starts_with("/admin/gc/")
        || path == "/admin/maintenance"
        || path == "/admin/status"
}

fn json_response(status: StatusCode, v: serde_json::Value) -> Response<ProxyBody> {
    let mut r = Response::new(full(Bytes::from(
        serde_json::to_vec_pretty(&v).unwrap_or_default(),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn bad_request(message: impl Into<String>) -> RegistryError {
    RegistryError::new(StatusCode::BAD_REQUEST, ErrorCode::Unsupported, message)
}

async fn read_json<T>(req: Request<ProxyBody>) -> Result<T, RegistryError>
where
    T: for<'de> Deserialize<'de> + Default,
{
    let bytes = read_capped(req.into_body(), MAX_BODY)
        .await
        .map_err(|e| bad_request(format!("cannot read the body: {e}")))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| bad_request(format!("invalid JSON body: {e}")))
}

/// Whether the query sets the flag `name` (`name`, `name=true` or `name=1`).
fn query_flag(req_query: Option<&str>, name: &str) -> bool {
    form_urlencoded::parse(req_query.unwrap_or("").as_bytes())
        .any(|(k, v)| k == name && matches!(&*v, "" | "true" | "1"))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceBody {
    reason: Option<String>,
}

/// This replica's gate; in a cluster, `state` is the cluster's gate
/// (`unknown` while PostgreSQL cannot be reached), `local_state` this
/// replica's, and `cluster` the details.
fn gate_json(gc: &Gc) -> serde_json::Value {
    let mut v = json!(gc.gate().status());
    if let Some(cluster) = gc.cluster() {
        let status = cluster.status();
        v["local_state"] = v["state"].clone();
        v["state"] = json!(status.state);
        v["cluster"] = json!(status);
    }
    v
}

/// Serves one request of this API (its errors become responses at the top
/// of the admin listener's stack).
pub async fn serve(
    gc: &Arc<Gc>,
    req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, RegistryError> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::POST, "/admin/gc") => {
            let wait = query_flag(req.uri().query(), "wait");
            let body: GcRequest = read_json(req).await?;
            let id = gc.start(body, GcTrigger::Manual).await?;
            if wait {
                let run = gc.wait(id).await?;
                return Ok(json_response(StatusCode::OK, json!({"id": id, "run": run})));
            }
            Ok(json_response(
                StatusCode::ACCEPTED,
                json!({"id": id, "run": gc.run_record(id).await?}),
            ))
        }
        (Method::GET | Method::HEAD, "/admin/gc") => {
            // The gate and the run in progress are known even when the
            // history (PostgreSQL, for replicas) cannot be read.
            let history = gc.history(HISTORY).await;
            Ok(json_response(
                StatusCode::OK,
                json!({
                    "gate": gate_json(gc),
                    "running": gc.current(),
                    "history": history.as_ref().ok(),
                    "state_error": history.as_ref().err().map(ToString::to_string),
                }),
            ))
        }
        (Method::GET | Method::HEAD, p) if p.starts_with("/admin/gc/") => {
            let id: i64 = p["/admin/gc/".len()..]
                .parse()
                .map_err(|_| bad_request("a run id is a number: /admin/gc/<id>"))?;
            Ok(json_response(
                StatusCode::OK,
                json!(gc.run_record(id).await?),
            ))
        }
        (Method::PUT, "/admin/maintenance") => {
            let body: MaintenanceBody = read_json(req).await?;
            let reason = body
                .reason
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| "maintenance by hand".into());
            let drain = gc.maintenance_on(&reason).await?;
            Ok(json_response(
                StatusCode::OK,
                json!({"gate": gate_json(gc), "drain": drain}),
            ))
        }
        (Method::DELETE, "/admin/maintenance") => {
            gc.maintenance_off().await?;
            Ok(json_response(
                StatusCode::OK,
                json!({"gate": gate_json(gc)}),
            ))
        }
        (Method::GET | Method::HEAD, "/admin/maintenance") => Ok(json_response(
            StatusCode::OK,
            json!({"gate": gate_json(gc), "maintenance": gc.maintenance().await?}),
        )),
        (Method::GET | Method::HEAD, "/admin/status") => {
            // The gate is known even when the state (PostgreSQL, for
            // replicas) is not: say what could not be read, answer the rest.
            let mut state_error = None;
            let last = gc
                .history(1)
                .await
                .map_err(|e| state_error = Some(e.to_string()))
                .ok()
                .and_then(|h| h.into_iter().next());
            let maintenance = gc
                .maintenance()
                .await
                .map_err(|e| state_error = Some(e.to_string()))
                .ok()
                .flatten();
            Ok(json_response(
                StatusCode::OK,
                json!({
                    "gate": gate_json(gc),
                    "state_error": state_error,
                    "maintenance": maintenance,
                    "gc": {
                        "running": gc.current(),
                        "last": last,
                        "schedule": gc.settings().schedule.as_ref().map(|s| s.expression.clone()),
                        "next_scheduled": gc.settings().schedule.as_ref().and_then(|s| s.cron.find_next_occurrence(&chrono::Utc::now(), false).ok()).map(|t| t.to_rfc3339()),
                    },
                }),
            ))
        }
        (m, p) => Err(RegistryError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unsupported,
            format!("{m} is not allowed on {p}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::query_flag;

    #[test]
    fn a_flag_is_its_name_or_true_or_1() {
        for q in ["wait", "wait=true", "wait=1", "a=b&wait", "w%61it=1"] {
            assert!(query_flag(Some(q), "wait"), "{q}");
        }
        for q in ["wait=false", "wait=0", "waiting=1", "a=wait", ""] {
            assert!(!query_flag(Some(q), "wait"), "{q}");
        }
        assert!(!query_flag(None, "wait"));
    }
}
