//! Listeners that hold at most `--max_connections` open connections: a
//! connection beyond the bound is closed as soon as it is accepted (and
//! counted), so a flood of idle connections cannot exhaust file descriptors
//! or memory. Accept errors (such as running out of descriptors) are logged
//! and retried after a pause instead of ending the server.

use prometheus::IntCounter;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A TCP listener with a bound on open connections.
#[derive(Debug)]
pub struct LimitedListener {
    listener: TcpListener,
    open: Arc<Semaphore>,
    max: usize,
    refused: IntCounter,
    /// What this port serves, for logs.
    name: &'static str,
    last_warning: Option<Instant>,
}

/// An accepted connection; its place is freed when it is dropped.
#[derive(Debug)]
pub struct LimitedStream {
    inner: TcpStream,
    _place: OwnedSemaphorePermit,
}

impl LimitedListener {
    pub fn new(listener: TcpListener, max: usize, refused: IntCounter, name: &'static str) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            listener,
            open: Arc::new(Semaphore::new(max)),
            max,
            refused,
            name,
            last_warning: None,
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection within the bound.
    pub async fn accept(&mut self) -> (LimitedStream, SocketAddr) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(port = self.name, "cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match Arc::clone(&self.open).try_acquire_owned() {
                Ok(place) => {
                    let _ = stream.set_nodelay(true);
                    return (LimitedStream { inner: stream, _place: place }, peer);
                }
                Err(_) => {
                    self.refused.inc();
                    let now = Instant::now();
                    if self.last_warning.is_none_or(|t| now - t > Duration::from_secs(10)) {
                        self.last_warning = Some(now);
                        tracing::warn!(
                            port = self.name,
                            %peer,
                            "{} connections open (--max_connections): closing new ones",
                            self.max
                        );
                    }
                }
            }
        }
    }

    /// The accepted connections as a stream, for tonic.
    pub fn into_stream(
        self,
    ) -> impl futures::Stream<Item = Result<LimitedStream, std::io::Error>> + Send + 'static {
        futures::stream::unfold(self, |mut listener| async move {
            let (stream, _) = listener.accept().await;
            Some((Ok(stream), listener))
        })
    }
}

impl tonic::transport::server::Connected for LimitedStream {
    type ConnectInfo = <TcpStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    #[tokio::test]
    async fn connections_beyond_the_bound_are_closed_and_counted() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let refused = IntCounter::new("refused", "refused").expect("counter");
        let mut listener = LimitedListener::new(tcp, 1, refused.clone(), "test");
        let _first = TcpStream::connect(addr).await.expect("connect");
        let (held, _) = listener.accept().await;
        let mut second = TcpStream::connect(addr).await.expect("connect");
        let accepting = tokio::spawn(async move {
            let (s, _) = listener.accept().await;
            s
        });
        // The second is accepted and closed: the client reads end of stream.
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), second.read(&mut byte))
            .await
            .expect("closed promptly");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert_eq!(refused.get(), 1);
        drop(held);
        let _third = TcpStream::connect(addr).await.expect("connect");
        let accepted = tokio::time::timeout(Duration::from_secs(5), accepting).await;
        assert!(accepted.is_ok(), "a freed place takes the next connection");
    }
}
