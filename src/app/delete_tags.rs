//! `POST /v2/<name>/_regate/delete` with `{"tags": ["a", "b", ...]}`: removes
//! many tags of one repository at once ([`crate::tag_delete`]'s batch), for
//! `regate tags rm`. Needs the `delete` right on the repository. Answers 200
//! with one result per distinct tag: `status` 202 and the `digest` it pointed
//! at, or the status and OCI error a single `DELETE` of that tag would get.
//! A body that is not such JSON, an invalid tag or more than
//! [`MAX_BATCH`](crate::tag_delete::MAX_BATCH) tags: 400, nothing changed.

use std::net::SocketAddr;

use http::{Response, StatusCode};
use serde::Deserialize;

use super::responses::json_response;
use super::App;
use crate::audit::Event;
use crate::body::{read_capped, CappedReadError, ProxyBody};
use crate::error::{ErrorCode, RegistryError};
use crate::route::{RepoName, Tag};
use crate::tag_delete::MAX_BATCH;

/// Tags of at most 128 characters, quoted: well under this.
const MAX_BODY: usize = 256 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    tags: Vec<String>,
}

fn bad(code: ErrorCode, message: impl Into<String>) -> RegistryError {
    RegistryError::new(StatusCode::BAD_REQUEST, code, message)
}

async fn read_tags(body: ProxyBody) -> Result<Vec<Tag>, RegistryError> {
    let bytes = read_capped(body, MAX_BODY).await.map_err(|e| match e {
        CappedReadError::TooLarge(_) => bad(
            ErrorCode::SizeInvalid,
            format!("the request is over {MAX_BODY} bytes"),
        ),
        CappedReadError::Read(e) => {
            bad(ErrorCode::Unsupported, format!("reading the request: {e}"))
        }
    })?;
    let req: Request = serde_json::from_slice(&bytes).map_err(|e| {
        bad(
            ErrorCode::Unsupported,
            format!("the body must be {{\"tags\": [\"tag\", ...]}}: {e}"),
        )
    })?;
    if req.tags.is_empty() || req.tags.len() > MAX_BATCH {
        return Err(bad(
            ErrorCode::Unsupported,
            format!(
                "send between 1 and {MAX_BATCH} tags (got {})",
                req.tags.len()
            ),
        ));
    }
    req.tags
        .iter()
        .map(|t| {
            Tag::parse(t)
                .map_err(|_| bad(ErrorCode::TagInvalid, format!("{t:?} is not a valid tag")))
        })
        .collect()
}

impl App {
    pub(super) async fn delete_tags(
        &self,
        name: &RepoName,
        body: ProxyBody,
        account: &str,
        peer: SocketAddr,
    ) -> Result<Response<ProxyBody>, RegistryError> {
        let tags = read_tags(body).await?;
        let outcomes = self.tags.delete_many(name, &tags, account).await;
        let results: Vec<serde_json::Value> = outcomes
            .into_iter()
            .map(|(tag, outcome)| {
                let (status, digest, error) = match outcome {
                    Ok(removed) => (StatusCode::ACCEPTED, Some(removed.digest), None),
                    Err(e) => {
                        let e = RegistryError::from(e);
                        (
                            e.status,
                            None,
                            Some(
                                serde_json::json!({"code": e.code.as_str(), "message": e.message}),
                            ),
                        )
                    }
                };
                let mut event = Event::new("delete", peer.ip());
                event.account = (!account.is_empty()).then_some(account);
                event.method = Some("DELETE");
                event.repository = Some(name.as_str());
                event.reference = Some(&tag);
                event.digest = digest.as_deref();
                event.status = Some(status.as_u16());
                self.auth.audit().record(&event);
                let mut r = serde_json::json!({"tag": tag, "status": status.as_u16()});
                if let Some(d) = digest {
                    r["digest"] = d.into();
                }
                if let Some(e) = error {
                    r["error"] = e;
                }
                r
            })
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"name": name.as_str(), "results": results}),
        ))
    }
}
