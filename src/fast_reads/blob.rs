//! Blob `GET`/`HEAD` answered from the storage, with the headers of 2.8's
//! blob server (`Accept-Ranges`, `Cache-Control`, `Content-Type:
//! application/octet-stream`, `Docker-Content-Digest`, `Etag`, and for a
//! range 206 with `Content-Range`), and [`FileBody`], which streams the open
//! file in [`CHUNK`]-byte reads.
//!
//! A read the page cache can answer is made in place (`preadv2` with
//! `RWF_NOWAIT`, a copy from memory that never waits for the disk); only the
//! part of a chunk that would wait goes to the blocking pool. The hop to the
//! pool and back for every chunk was what kept the plain listener below the
//! registry's own `sendfile` (`bench/run`, blob GET).
//!
//! Memory is bounded over all downloads ([`InFlight`]): a chunk counts from
//! its read until the listener has written it and dropped it; while the
//! chunks in flight exceed [`BIG_BUDGET`], reads are [`SMALL_CHUNK`] bytes
//! (many slow downloads do not each hold large buffers, a few fast ones get
//! large reads). The file stays open until the body ends, so a blob that
//! garbage collection removes meanwhile is still sent whole.

use std::fs::File;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::task::JoinHandle;

use super::range::Ranged;
use crate::body::BoxError;
use crate::route::Digest;

/// Bytes read from the file at once, while the budget allows.
pub const CHUNK: usize = 1024 * 1024;

/// Bytes read at once past the budget.
pub const SMALL_CHUNK: usize = 16 * 1024;

/// Bytes of chunks in flight, over all downloads, up to which reads are
/// [`CHUNK`] bytes.
pub const BIG_BUDGET: usize = 8 * 1024 * 1024;

/// The bytes of blob chunks read and not yet dropped, over all downloads.
#[derive(Debug, Clone)]
pub struct InFlight {
    used: Arc<AtomicUsize>,
    budget: usize,
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight::with_budget(BIG_BUDGET)
    }
}

impl InFlight {
    pub fn with_budget(budget: usize) -> Self {
        InFlight {
            used: Arc::new(AtomicUsize::new(0)),
            budget,
        }
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// A buffer for the next read of at most `left` bytes, counted in
    /// flight until it is dropped.
    fn reserve(&self, left: u64) -> Counted {
        let big = self.used() + CHUNK <= self.budget;
        let len = (if big { CHUNK } else { SMALL_CHUNK } as u64).min(left) as usize;
        self.used.fetch_add(len, Ordering::Relaxed);
        Counted {
            buf: vec![0u8; len],
            counted: len,
            in_flight: self.clone(),
        }
    }
}

/// A chunk's buffer, counted in [`InFlight`] until it is dropped (the
/// owner of the `Bytes` handed to the listener).
struct Counted {
    buf: Vec<u8>,
    counted: usize,
    in_flight: InFlight,
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.in_flight
            .used
            .fetch_sub(self.counted, Ordering::Relaxed);
    }
}

/// `max-age` of 2.8's blob answers (365 days).
const CACHE_CONTROL: &str = "max-age=31536000";

/// Status and headers of 2.8's answer for `range` of a blob of `size` bytes
/// (`range` is never [`Ranged::Forward`] here); the bytes to send.
pub fn head(
    digest: &Digest,
    size: u64,
    range: Ranged,
) -> (StatusCode, Vec<(header::HeaderName, HeaderValue)>, u64, u64) {
    let digest_value = HeaderValue::from_str(digest.as_str()).expect("a digest is header-safe");
    let etag = HeaderValue::from_str(&format!("\"{}\"", digest.as_str()))
        .expect("a digest is header-safe");
    let mut headers = vec![
        (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static(CACHE_CONTROL),
        ),
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        ),
        (super::DOCKER_CONTENT_DIGEST, digest_value),
        (header::ETAG, etag),
    ];
    let (status, start, end) = match range {
        Ranged::Part { start, end } => {
            headers.push((
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {start}-{end}/{size}"))
                    .expect("numbers are header-safe"),
            ));
            (StatusCode::PARTIAL_CONTENT, start, end + 1)
        }
        Ranged::Whole | Ranged::Forward => (StatusCode::OK, 0, size),
    };
    headers.push((header::CONTENT_LENGTH, HeaderValue::from(end - start)));
    (status, headers, start, end)
}

/// Bytes `pos..end` of an open file, read a chunk at a time, from the page
/// cache in place or else on the blocking pool (positional reads: no shared
/// cursor).
pub struct FileBody {
    file: Arc<File>,
    pos: u64,
    end: u64,
    in_flight: InFlight,
    reading: Option<JoinHandle<std::io::Result<Bytes>>>,
    /// Chunks that had to wait for the disk on the blocking pool.
    waited: usize,
}

impl FileBody {
    pub fn new(file: File, start: u64, end: u64, in_flight: InFlight) -> Self {
        FileBody {
            file: Arc::new(file),
            pos: start,
            end,
            in_flight,
            reading: None,
            waited: 0,
        }
    }
}

/// Bytes of `buf` filled from `pos` without waiting for the disk: reads
/// that the page cache answers (`RWF_NOWAIT`), up to the first that would
/// wait. Any error stops it too (a kernel or file system without
/// `RWF_NOWAIT` says `EOPNOTSUPP`): the blocking read then does the rest and
/// reports real errors.
fn read_cached(file: &File, pos: u64, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::io::preadv2(
            file,
            &mut [std::io::IoSliceMut::new(&mut buf[filled..])],
            pos + filled as u64,
            rustix::io::ReadWriteFlags::NOWAIT,
        ) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    filled
}

/// Fills `chunk` from `pos`, its first `filled` bytes already read.
fn read_chunk(
    file: &File,
    pos: u64,
    mut chunk: Counted,
    mut filled: usize,
) -> std::io::Result<Bytes> {
    let buf = &mut chunk.buf;
    let len = buf.len();
    while filled < len {
        match file.read_at(&mut buf[filled..], pos + filled as u64) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the blob's data is shorter than when it was opened",
                ))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Bytes::from_owner(chunk))
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.reading.is_none() {
            if this.pos >= this.end {
                return Poll::Ready(None);
            }
            let mut chunk = this.in_flight.reserve(this.end - this.pos);
            let filled = read_cached(&this.file, this.pos, &mut chunk.buf);
            if filled == chunk.buf.len() {
                this.pos += filled as u64;
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_owner(chunk)))));
            }
            this.waited += 1;
            let (file, pos) = (Arc::clone(&this.file), this.pos);
            this.reading = Some(tokio::task::spawn_blocking(move || {
                read_chunk(&file, pos, chunk, filled)
            }));
        }
        let reading = this.reading.as_mut().expect("set above");
        let done = ready!(Pin::new(reading).poll(cx));
        this.reading = None;
        Poll::Ready(Some(match done {
            Ok(Ok(bytes)) => {
                this.pos += bytes.len() as u64;
                Ok(Frame::data(bytes))
            }
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(e.into()),
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.end && self.reading.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.end - self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_range_is_streamed_in_chunks_and_survives_the_file_being_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let bytes: Vec<u8> = (0..(CHUNK * 2 + 100)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        // Garbage collection removes the blob while it is served.
        std::fs::remove_file(&path).unwrap();
        let body = FileBody::new(file, 10, bytes.len() as u64 - 5, InFlight::default());
        assert_eq!(body.size_hint().exact(), Some(bytes.len() as u64 - 15));
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], &bytes[10..bytes.len() - 5]);
    }

    /// Every frame of `body`, and how many chunks waited on the pool.
    async fn frames(mut body: FileBody) -> (Vec<u8>, usize) {
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            got.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        (got, body.waited)
    }

    /// Whether the page cache holds the first byte of `file`: `None` when
    /// the file system refuses `RWF_NOWAIT` (every read then waits on the
    /// pool).
    fn start_is_cached(file: &File) -> Option<bool> {
        let mut byte = [0u8; 1];
        match rustix::io::preadv2(
            file,
            &mut [std::io::IoSliceMut::new(&mut byte)],
            0,
            rustix::io::ReadWriteFlags::NOWAIT,
        ) {
            Ok(_) => Some(true),
            Err(rustix::io::Errno::AGAIN) => Some(false),
            Err(_) => None,
        }
    }

    #[tokio::test]
    async fn cached_chunks_are_read_in_place_and_uncached_ones_on_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let bytes: Vec<u8> = (0..(CHUNK * 3 + 7)).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        file.sync_all().unwrap();
        let len = bytes.len() as u64;
        let chunks = 4;

        // Just written: in the page cache, so no chunk waits.
        let nowait = start_is_cached(&file);
        let body = FileBody::new(file.try_clone().unwrap(), 3, len, InFlight::default());
        let (got, waited) = frames(body).await;
        assert_eq!(got, &bytes[3..]);
        if nowait.is_none() {
            eprintln!("{}: the file system refuses RWF_NOWAIT; checked that every chunk is read on the pool instead", dir.path().display());
            assert_eq!(waited, chunks);
            return;
        }
        assert_eq!(waited, 0, "a cached file is read in place");

        // Dropped from the page cache: the first chunk waits for the disk.
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        if start_is_cached(&file) == Some(true) {
            eprintln!("{}: the page cache kept the file after POSIX_FADV_DONTNEED (tmpfs?); the read of an uncached chunk is not exercised here", dir.path().display());
            return;
        }
        let body = FileBody::new(file, 3, len, InFlight::default());
        let (got, waited) = frames(body).await;
        assert_eq!(got, &bytes[3..]);
        assert!(waited >= 1, "an uncached chunk goes to the blocking pool");
    }

    #[tokio::test]
    async fn a_file_cut_short_is_an_error_not_a_short_body() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::write(&path, b"0123456789").unwrap();
        let body = FileBody::new(File::open(&path).unwrap(), 0, 20, InFlight::default());
        assert!(body.collect().await.is_err());
    }

    #[tokio::test]
    async fn past_the_budget_reads_are_small_and_every_chunk_is_counted_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::write(&path, vec![7u8; CHUNK * 3]).unwrap();
        let in_flight = InFlight::with_budget(CHUNK * 2);
        let mut body = FileBody::new(
            File::open(&path).unwrap(),
            0,
            (CHUNK * 3) as u64,
            in_flight.clone(),
        );
        let mut held = Vec::new();
        while let Some(frame) = body.frame().await {
            held.push(frame.unwrap().into_data().unwrap());
        }
        let sizes: Vec<usize> = held.iter().map(Bytes::len).take(3).collect();
        assert_eq!(
            sizes,
            [CHUNK, CHUNK, SMALL_CHUNK],
            "held chunks count against the budget"
        );
        assert_eq!(held.iter().map(Bytes::len).sum::<usize>(), CHUNK * 3);
        assert_eq!(in_flight.used(), CHUNK * 3);
        drop(held);
        assert_eq!(in_flight.used(), 0);
    }
}
