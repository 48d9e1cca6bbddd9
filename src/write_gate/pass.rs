//! The RAII side of the gate: [`WriteGuard`] (a write in flight, until its
//! response is complete), [`WritePass`] (an admitted write, which reports its
//! response to the push tracker) and the registration of a held write.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::{Response, StatusCode};
use http_body_util::BodyExt;

use super::write_kind::WriteKind;
use super::WriteGate;
use crate::body::ProxyBody;
use crate::guarded_body::GuardedBody;
use crate::route::upload_session_of;

/// A write in flight; dropping it tells a draining gate.
pub struct WriteGuard {
    pub(super) gate: Arc<WriteGate>,
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        self.gate.lock().in_flight -= 1;
        self.gate.activity.notify_waiters();
    }
}

/// An admitted write: forward it, then hand the response to [`WritePass::finish`].
pub struct WritePass {
    pub(super) guard: WriteGuard,
    pub(super) kind: WriteKind,
}

impl WritePass {
    /// Records what the response says about the push and ties the guard to
    /// the response body.
    pub fn finish(self, resp: Response<ProxyBody>) -> Response<ProxyBody> {
        let status = resp.status();
        let gate = Arc::clone(&self.guard.gate);
        {
            let mut inner = gate.lock();
            let now = Instant::now();
            let pushes = &mut inner.pushes;
            match &self.kind {
                WriteKind::UploadStart { repo } => match status {
                    StatusCode::ACCEPTED => {
                        if let Some(session) = upload_session(&resp) {
                            pushes.session_started(repo, &session, now);
                        }
                    }
                    StatusCode::CREATED => {
                        pushes.blob_written(repo, now);
                        if let Some(d) = content_digest(&resp) {
                            pushes.note_blob(repo, d);
                        }
                    }
                    _ => {}
                },
                WriteKind::UploadSession { repo, session } => {
                    if status == StatusCode::CREATED {
                        pushes.session_ended(repo, session, true, now);
                        if let Some(d) = content_digest(&resp) {
                            pushes.note_blob(repo, d);
                        }
                    } else if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_FOUND {
                        pushes.session_ended(repo, session, false, now);
                    }
                }
                WriteKind::ManifestPut { repo, by_tag } => {
                    if status == StatusCode::CREATED {
                        pushes.manifest_written(repo, *by_tag, now);
                    }
                }
                WriteKind::Other => {}
            }
            if pushes.len() > 256 {
                pushes.prune(now);
            }
        }
        let guard = self.guard;
        resp.map(|b| GuardedBody::new(b, guard).boxed_unsync())
    }
}

/// `Docker-Content-Digest` of a response.
fn content_digest(resp: &Response<ProxyBody>) -> Option<&str> {
    resp.headers()
        .get("docker-content-digest")?
        .to_str()
        .ok()
        .filter(|d| crate::route::Digest::parse(d).is_ok())
}

/// The session id in an upload's `Location`.
fn upload_session(resp: &Response<ProxyBody>) -> Option<String> {
    let loc = resp.headers().get(http::header::LOCATION)?.to_str().ok()?;
    upload_session_of(loc)
}

/// A write waiting at the gate, registered in `Inner::held`; dropping it
/// (woken, timed out, or the client gone) unregisters it, and consumes its
/// release if the gate opened meanwhile.
pub(super) struct HeldWait<'a> {
    pub(super) gate: &'a WriteGate,
    pub(super) opens_seen: u64,
}

impl Drop for HeldWait<'_> {
    fn drop(&mut self) {
        let mut inner = self.gate.lock();
        inner.held = inner.held.saturating_sub(1);
        if self.gate.opens.load(Ordering::SeqCst) != self.opens_seen {
            inner.released = inner.released.saturating_sub(1);
        }
        drop(inner);
        self.gate.activity.notify_waiters();
    }
}
