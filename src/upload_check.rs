//! Strict chunked uploads, as the OCI spec wants them: regate knows each
//! upload session's offset and refuses a `PATCH` whose `Content-Range` does
//! not start there (out of order, or a retried chunk already received) with
//! `416`, the current `Range` and `Location`, before anything reaches the
//! registry, so the session stays usable. 2.8 itself would accept such a
//! chunk or break the session.
//!
//! The offset comes from regate's own record (set when the session starts,
//! updated from every `202`), or, for a session regate has not seen, from the
//! registry's upload status. Sessions are forgotten when completed or
//! cancelled, after a day without use, and, past [`MAX_SESSIONS`], the
//! least recently used first. A forgotten session still works: its next
//! `PATCH` with a `Content-Range` asks the registry (the authority on every
//! session) for the offset, as for a session regate never saw.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{header, HeaderMap, HeaderValue, StatusCode};

use crate::error::{ErrorCode, RegistryError};
use crate::route::upload_session_of;

const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Sessions remembered at most (about 200 bytes each).
pub const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone)]
struct Session {
    /// The next byte the registry expects.
    offset: u64,
    /// The latest `Location` (public) for the session.
    location: Option<HeaderValue>,
    touched: Instant,
}

pub struct UploadOffsets {
    sessions: Mutex<HashMap<(String, String), Session>>,
    max: usize,
    forget_after: Duration,
}

impl Default for UploadOffsets {
    fn default() -> Self {
        Self::new(MAX_SESSIONS, FORGET_AFTER)
    }
}

/// `Content-Range: <start>-<end>` (OCI) or `bytes <start>-<end>[/<total>]`.
pub fn content_range_start(headers: &HeaderMap) -> Result<Option<u64>, RegistryError> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || {
        RegistryError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::RangeInvalid,
            "Content-Range must be <start>-<end>",
        )
    };
    let s = v.to_str().map_err(|_| bad())?.trim();
    let s = s.strip_prefix("bytes ").unwrap_or(s);
    let range = s.split('/').next().unwrap_or(s);
    let (start, end) = range.split_once('-').ok_or_else(bad)?;
    let (start, end): (u64, u64) = (
        start.trim().parse().map_err(|_| bad())?,
        end.trim().parse().map_err(|_| bad())?,
    );
    if end < start {
        return Err(bad());
    }
    Ok(Some(start))
}

/// The next offset from a registry's `Range: 0-<last>` answer. 2.8 answers
/// `0-0` both for an empty upload and a one-byte one; `known` breaks the tie.
pub fn next_offset(headers: &HeaderMap, known: Option<u64>) -> Option<u64> {
    let v = headers.get(header::RANGE)?.to_str().ok()?;
    let (_, end) = v.trim().split_once('-')?;
    let end: u64 = end.trim().parse().ok()?;
    if end == 0 {
        return Some(if known.unwrap_or(0) == 0 { 0 } else { 1 });
    }
    Some(end + 1)
}

/// A 416 naming where the session really is.
pub fn out_of_order(expected: u64, location: Option<HeaderValue>) -> RegistryError {
    let range = if expected == 0 {
        "0-0".to_owned()
    } else {
        format!("0-{}", expected - 1)
    };
    let mut e = RegistryError::new(
        StatusCode::RANGE_NOT_SATISFIABLE,
        ErrorCode::BlobUploadInvalid,
        format!("chunk out of order: the upload continues at byte {expected}"),
    )
    .with_header(header::RANGE, HeaderValue::from_str(&range).expect("ASCII"));
    if let Some(l) = location {
        e = e.with_header(header::LOCATION, l);
    }
    e
}

impl UploadOffsets {
    /// At most `max` sessions, each forgotten `forget_after` its last use.
    pub fn new(max: usize, forget_after: Duration) -> Self {
        UploadOffsets {
            sessions: Mutex::new(HashMap::new()),
            max: max.max(1),
            forget_after,
        }
    }

    fn key(repo: &str, session: &str) -> (String, String) {
        (repo.to_owned(), session.to_owned())
    }

    /// A session started (202 to POST): it is at 0 (or at the registry's Range).
    pub fn started(&self, repo: &str, location: Option<&HeaderValue>, headers: &HeaderMap) {
        let Some(session) = location
            .and_then(|l| l.to_str().ok())
            .and_then(upload_session_of)
        else {
            return;
        };
        let offset = next_offset(headers, Some(0)).unwrap_or(0);
        self.set(repo, &session, offset, location.cloned());
    }

    pub fn get(&self, repo: &str, session: &str) -> Option<(u64, Option<HeaderValue>)> {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&Self::key(repo, session))
            .filter(|s| s.touched.elapsed() < self.forget_after)
            .map(|s| (s.offset, s.location.clone()))
    }

    /// Sessions remembered now (expired ones included until the next purge).
    pub fn len(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes room for one more: expired sessions go, then the least recently
    /// used, a tenth of the bound at once so the sort is rare.
    fn make_room(&self, map: &mut HashMap<(String, String), Session>) {
        if map.len() < self.max {
            return;
        }
        map.retain(|_, s| s.touched.elapsed() < self.forget_after);
        if map.len() < self.max {
            return;
        }
        let mut by_age: Vec<_> = map.iter().map(|(k, s)| (s.touched, k.clone())).collect();
        by_age.sort_unstable_by_key(|(touched, _)| *touched);
        let evict = map.len() + 1 - self.max + self.max / 10;
        for (_, k) in by_age.into_iter().take(evict) {
            map.remove(&k);
        }
        tracing::debug!(
            evicted = evict,
            "upload sessions over the bound: the least recently used are forgotten (the registry still knows them)"
        );
    }

    pub fn set(&self, repo: &str, session: &str, offset: u64, location: Option<HeaderValue>) {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let key = Self::key(repo, session);
        if !map.contains_key(&key) {
            self.make_room(&mut map);
        }
        let entry = map.entry(key).or_insert(Session {
            offset,
            location: None,
            touched: Instant::now(),
        });
        entry.offset = offset;
        if location.is_some() {
            entry.location = location;
        }
        entry.touched = Instant::now();
    }

    /// The answer to a status GET: the registry's, unless it refused an
    /// upload URL made stale by a later chunk (2.8 answers 404 or 400 for an
    /// old `_state`) of a session regate follows: then 204 with the
    /// session's current `Range` and `Location`, as the OCI spec wants.
    pub fn current_status(
        &self,
        repo: &str,
        session: &str,
        upstream: http::Response<crate::body::ProxyBody>,
    ) -> http::Response<crate::body::ProxyBody> {
        let stale = matches!(
            upstream.status(),
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST
        );
        let Some((offset, Some(location))) = self.get(repo, session).filter(|_| stale) else {
            return upstream;
        };
        let mut resp = http::Response::new(crate::body::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        h.insert(header::LOCATION, location);
        // 2.8's own form: `0-<last byte>`, `0-0` for an empty session.
        if let Ok(v) = HeaderValue::from_str(&format!("0-{}", offset.saturating_sub(1))) {
            h.insert(header::RANGE, v);
        }
        if let Ok(v) = HeaderValue::from_str(session) {
            h.insert("docker-upload-uuid", v);
        }
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
        resp
    }

    pub fn forget(&self, repo: &str, session: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&Self::key(repo, session));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &'static str, v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(name, HeaderValue::from_str(v).unwrap());
        m
    }

    #[test]
    fn content_range_forms() {
        assert_eq!(
            content_range_start(&h("content-range", "100-199")).unwrap(),
            Some(100)
        );
        assert_eq!(
            content_range_start(&h("content-range", "bytes 0-9/10")).unwrap(),
            Some(0)
        );
        assert_eq!(content_range_start(&HeaderMap::new()).unwrap(), None);
        assert!(content_range_start(&h("content-range", "9-1")).is_err());
        assert!(content_range_start(&h("content-range", "x")).is_err());
    }

    #[test]
    fn offsets_from_range() {
        assert_eq!(next_offset(&h("range", "0-99"), None), Some(100));
        assert_eq!(next_offset(&h("range", "0-0"), Some(0)), Some(0));
        assert_eq!(next_offset(&h("range", "0-0"), Some(1)), Some(1));
    }

    #[test]
    fn sessions_are_bounded_and_the_least_recently_used_go_first() {
        let u = UploadOffsets::new(10, FORGET_AFTER);
        for i in 0..10 {
            u.set("r", &format!("s{i}"), i, None);
            std::thread::sleep(Duration::from_millis(2));
        }
        // s0 used again: s1 is now the oldest.
        u.set("r", "s0", 100, None);
        u.set("r", "new", 7, None);
        assert!(u.len() <= 10, "{}", u.len());
        assert_eq!(u.get("r", "s1"), None);
        assert_eq!(u.get("r", "s0").map(|s| s.0), Some(100));
        assert_eq!(u.get("r", "new").map(|s| s.0), Some(7));
        for i in 0..1000 {
            u.set("r", &format!("flood{i}"), 0, None);
        }
        assert!(u.len() <= 10, "{}", u.len());
    }

    #[test]
    fn unused_sessions_expire() {
        let u = UploadOffsets::new(10, Duration::from_millis(30));
        u.set("r", "s", 5, None);
        assert_eq!(u.get("r", "s").map(|s| s.0), Some(5));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(u.get("r", "s"), None);
    }

    #[test]
    fn out_of_order_answer() {
        let e = out_of_order(
            100,
            Some(HeaderValue::from_static("/v2/a/blobs/uploads/s?_state=1")),
        );
        let r = e.into_response();
        assert_eq!(r.status(), 416);
        assert_eq!(r.headers()["range"], "0-99");
        assert_eq!(r.headers()["location"], "/v2/a/blobs/uploads/s?_state=1");
    }
}
