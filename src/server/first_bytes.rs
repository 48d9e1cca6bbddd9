//! A deadline for a connection's first bytes.
//!
//! hyper-util's automatic HTTP version detection reads up to the 24 bytes of
//! the HTTP/2 preface before HTTP/1.1's header read timeout starts, and has no
//! timeout of its own: a client that completes the TLS handshake and then
//! sends nothing (or a few bytes of the preface) would hold its connection
//! forever. [`FirstBytes`] fails reads with `TimedOut` until that many bytes
//! have arrived, once the deadline has passed; after that it is a plain
//! pass-through. Calls only tokio.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{sleep, Sleep};

/// The bytes after which the HTTP version is known (the HTTP/2 preface).
const VERSION_BYTES: usize = 24;

/// A connection whose first bytes must arrive within a deadline.
pub struct FirstBytes<I> {
    inner: I,
    deadline: Pin<Box<Sleep>>,
    received: usize,
}

impl<I> FirstBytes<I> {
    pub fn new(inner: I, limit: Duration) -> Self {
        FirstBytes {
            inner,
            deadline: Box::pin(sleep(limit)),
            received: 0,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FirstBytes<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.received += buf.filled().len() - before;
                Poll::Ready(r)
            }
            Poll::Pending if this.received < VERSION_BYTES => match this.deadline.as_mut().poll(cx)
            {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent too little within the header read timeout",
                ))),
                Poll::Pending => Poll::Pending,
            },
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FirstBytes<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn silence_past_the_deadline_is_an_error_and_enough_bytes_end_the_deadline() {
        let (client, server) = tokio::io::duplex(64);
        let mut io = FirstBytes::new(server, Duration::from_millis(100));
        let mut buf = [0u8; 64];
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);

        let (mut client, server) = tokio::io::duplex(64);
        let mut io = FirstBytes::new(server, Duration::from_millis(100));
        client.write_all(&[b'x'; VERSION_BYTES]).await.unwrap();
        let mut got = 0;
        while got < VERSION_BYTES {
            got += io.read(&mut buf).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.write_all(b"later").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 5);
    }
}
