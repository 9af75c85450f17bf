//! Listeners that hold at most `--max_connections` open connections: a
//! connection beyond the bound is closed as soon as it is accepted (and
//! counted), so a flood of connections cannot exhaust file descriptors or
//! memory. A connection that sends nothing within
//! `--request_read_timeout_seconds` of being accepted, or moves no byte
//! either way for `--connection_idle_timeout_seconds`, is closed, so idle
//! sockets cannot hold the places of real clients. Accept errors (such as
//! running out of descriptors) are logged and retried after a pause
//! instead of ending the server.

use prometheus::IntCounter;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a connection may stay silent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionTimeouts {
    /// From accept to its first byte.
    pub first_byte: Option<Duration>,
    /// With no byte read or written.
    pub idle: Option<Duration>,
}

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
    timeouts: ConnectionTimeouts,
}

/// An accepted connection; its place is freed when it is dropped.
#[derive(Debug)]
pub struct LimitedStream {
    inner: TcpStream,
    _place: OwnedSemaphorePermit,
    timeouts: ConnectionTimeouts,
    accepted: tokio::time::Instant,
    /// When the next silence limit runs out (re-armed lazily).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether the timer holds this connection's waker for its deadline.
    armed: bool,
    /// Whether the peer has sent a byte yet.
    heard: bool,
    /// The last byte read or written.
    last_activity: tokio::time::Instant,
}

impl LimitedStream {
    fn new(inner: TcpStream, place: OwnedSemaphorePermit, timeouts: ConnectionTimeouts) -> Self {
        let accepted = tokio::time::Instant::now();
        let timer = timeouts
            .first_byte
            .or(timeouts.idle)
            .map(|t| Box::pin(tokio::time::sleep_until(later(accepted, t))));
        Self {
            inner,
            _place: place,
            timeouts,
            accepted,
            timer,
            armed: false,
            heard: false,
            last_activity: accepted,
        }
    }

    /// When the connection will have been silent too long, as things stand.
    fn deadline(&self) -> Option<tokio::time::Instant> {
        let unheard =
            self.timeouts.first_byte.filter(|_| !self.heard).map(|t| later(self.accepted, t));
        let idle = self.timeouts.idle.map(|t| later(self.last_activity, t));
        match (unheard, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the connection has been silent too long (and if not, the
    /// timer is armed for when it would be). Cheap while the timer has not
    /// gone off: it is polled (to hold this task's waker) only when armed
    /// anew, not on every read that has to wait.
    fn timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(timer) = &mut self.timer else { return false };
        if !timer.is_elapsed() {
            if !self.armed {
                self.armed = timer.as_mut().poll(cx).is_pending();
            }
            if self.armed {
                return false;
            }
        }
        let Some(deadline) = self.deadline() else { return false };
        if deadline <= tokio::time::Instant::now() {
            return true;
        }
        let Some(timer) = &mut self.timer else { return false };
        timer.as_mut().reset(deadline);
        self.armed = timer.as_mut().poll(cx).is_pending();
        false
    }
}

impl LimitedStream {
    /// A write's outcome: bytes written are activity; a write that cannot
    /// proceed on a connection silent too long fails.
    fn after_write(
        &mut self,
        polled: Poll<std::io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) if n > 0 => self.last_activity = tokio::time::Instant::now(),
            Poll::Pending if self.timed_out(cx) => return Poll::Ready(Err(silent())),
            _ => {}
        }
        polled
    }
}

/// `at + after`, or about a century ahead of `at` if that overflows.
fn later(at: tokio::time::Instant, after: Duration) -> tokio::time::Instant {
    at.checked_add(after).unwrap_or_else(|| at + Duration::from_secs(100 * 365 * 24 * 3600))
}

fn silent() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "the connection was silent too long")
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
            timeouts: ConnectionTimeouts::default(),
        }
    }

    /// Connections accepted from now on close when silent this long.
    pub fn with_timeouts(mut self, timeouts: ConnectionTimeouts) -> Self {
        self.timeouts = timeouts;
        self
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
                    return (LimitedStream::new(stream, place, self.timeouts), peer);
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
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        match polled {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.heard = true;
                self.last_activity = tokio::time::Instant::now();
            }
            Poll::Pending if self.timed_out(cx) => return Poll::Ready(Err(silent())),
            _ => {}
        }
        polled
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.after_write(polled, cx)
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
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.after_write(polled, cx)
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
    async fn silent_connections_are_closed_and_talking_ones_kept() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let refused = IntCounter::new("refused", "refused").expect("counter");
        let timeouts = ConnectionTimeouts {
            first_byte: Some(Duration::from_millis(100)),
            idle: Some(Duration::from_millis(300)),
        };
        let mut listener = LimitedListener::new(tcp, 8, refused, "test").with_timeouts(timeouts);
        let _silent = TcpStream::connect(addr).await.expect("connect");
        let (mut server_side, _) = listener.accept().await;
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let read = server_side.read(&mut buf).await;
        assert!(read.is_err(), "a silent connection is closed: {read:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        // One that talks every 100 ms outlives the idle limit several times over.
        let mut talker = TcpStream::connect(addr).await.expect("connect");
        let (mut server_side, _) = listener.accept().await;
        let echo = tokio::spawn(async move {
            let mut buf = [0u8; 1];
            let mut got = 0;
            while server_side.read_exact(&mut buf).await.is_ok() {
                got += 1;
            }
            got
        });
        for _ in 0..10 {
            talker.write_all(b"x").await.expect("write");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Then silence: closed after the idle limit.
        let got = tokio::time::timeout(Duration::from_secs(5), echo)
            .await
            .expect("closed")
            .expect("joins");
        assert_eq!(got, 10);
    }

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
