//! Serving HTTP without letting clients starve the process: a cap on how many
//! connections are open, a deadline for a new one's first bytes (and for HTTP/1
//! request heads), an idle timeout, HTTP/2 keepalive pings, and an accept loop that
//! waits instead of spinning when the process runs out of descriptors.
//!
//! Every listener (gRPC, REST, metrics) is served by `serve`. A connection that sends
//! nothing is closed after `handshake_timeout`; one with no bytes either way for
//! `idle_timeout` is closed too (HTTP/2 keepalive pings, and SSE keepalive comments,
//! keep live connections busy well within it).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// How a listener treats its connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most connections open at once; at the cap, new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// How long a new connection may take to send its first bytes.
    pub handshake_timeout: Duration,
    /// How long a connection may go with no bytes in either direction.
    pub idle_timeout: Duration,
    /// How long an HTTP request's body may take to arrive whole, once its head has: a
    /// body trickled a byte at a time would otherwise hold its connection for ever,
    /// each byte resetting the idle timeout.
    pub body_timeout: Duration,
}

impl Default for ConnectionLimits {
    /// Room for 10,000 clients (watchers hold a connection each); 10 s to start
    /// talking; 2 minutes of silence (keepalive pings are traffic); 30 s for a body of
    /// at most 64 KiB (about 17 kbit/s).
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// Which HTTP a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC: HTTP/2 only.
    Grpc,
    /// REST and metrics: HTTP/1.1 or HTTP/2.
    Http,
}

/// How often an HTTP/2 connection is pinged, and how long the answer may take before
/// the connection is closed: a peer that vanished without a FIN is found within 40 s.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most header bytes a gRPC request may carry (`header_list_bytes`). Above what the
/// REST gateway forwards (see `http::MAX_HEADER_BYTES`), so its refusals come first
/// and in JSON. Enforced by the gRPC layer (`grpc::trace`), so the client gets a gRPC
/// status with a reason rather than HTTP/2's bare 431.
pub const MAX_HEADER_LIST_BYTES: usize = 64 * 1024;

/// What HTTP/2 itself lets a request's headers take before it answers 431 without a
/// gRPC status: far above `MAX_HEADER_LIST_BYTES`, so that refusal is chatd's, in
/// gRPC's terms, for any header a client plausibly sends (a 100 KB token, say).
const H2_HEADER_LIST_BYTES: u32 = 1 << 20;

/// The bytes a request's headers take by HTTP/2's accounting (RFC 9113 §6.5.2): name
/// and value, plus 32 per field.
pub fn header_list_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

/// Serves `service` on `listener` within `limits` until `shutdown` completes; then stops
/// accepting, asks every connection to finish (HTTP/2 GOAWAY, HTTP/1 close after the
/// response in flight) and returns when all have.
pub async fn serve<S, B>(
    listener: TcpListener,
    limits: ConnectionLimits,
    protocol: Protocol,
    service: S,
    shutdown: impl Future<Output = ()>,
) where
    S: tower_service::Service<
            http::Request<Incoming>,
            Response = http::Response<B>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if protocol == Protocol::Grpc {
        builder = builder.http2_only();
    }
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.handshake_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .max_header_list_size(H2_HEADER_LIST_BYTES);
    let graceful = GracefulShutdown::new();
    {
        // Scoped so the listening socket closes as soon as accepting stops.
        let mut incoming = pin!(accept(listener, limits));
        let mut shutdown = pin!(shutdown);
        loop {
            let connection = tokio::select! {
                () = &mut shutdown => break,
                next = incoming.next() => match next {
                    Some(Ok(connection)) => connection,
                    Some(Err(error)) => {
                        tracing::debug!(%error, "accept failed");
                        continue;
                    }
                    None => break,
                },
            };
            let served = builder
                .serve_connection(
                    TokioIo::new(connection),
                    TowerToHyperService::new(service.clone()),
                )
                .into_owned();
            let served = graceful.watch(served);
            tokio::spawn(async move {
                if let Err(error) = served.await {
                    // Peers that vanish, time out or speak garbage: theirs to know.
                    tracing::debug!(error = %error, "connection ended with an error");
                }
            });
        }
    }
    graceful.shutdown().await;
}

/// The longest an accept loop waits before trying again after running out of
/// descriptors (it starts at a millisecond and doubles).
const MOST_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts connections from `listener` within `limits`, forever (or until dropped).
pub fn accept(
    listener: TcpListener,
    limits: ConnectionLimits,
) -> impl Stream<Item = io::Result<Guarded>> + Send + 'static {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let state = (listener, slots, Duration::ZERO, false);
    futures_util::stream::unfold(
        state,
        move |(listener, slots, mut backoff, mut at_cap)| async move {
            // A slot first: at the cap, stop accepting until a connection closes. Said
            // once when the cap is reached, not for every connection that then waits.
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    at_cap = false;
                    slot
                }
                Err(_) => {
                    if !at_cap {
                        tracing::warn!(
                            limit = limits.max_connections,
                            "connection cap reached: new connections wait"
                        );
                    }
                    at_cap = true;
                    slots.clone().acquire_owned().await.ok()?
                }
            };
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        let guarded = Guarded::new(stream, limits, slot);
                        return Some((Ok(guarded), (listener, slots, Duration::ZERO, at_cap)));
                    }
                    Err(error) if out_of_resources(&error) => {
                        // The pending connection stays in the backlog, so accepting again
                        // at once fails again at once: wait, longer each time.
                        backoff = (backoff * 2).clamp(Duration::from_millis(1), MOST_BACKOFF);
                        tracing::warn!(%error, ?backoff, "cannot accept connections: out of descriptors or memory");
                        tokio::time::sleep(backoff).await;
                    }
                    // A connection that went away before it was accepted: the next.
                    Err(error) => tracing::debug!(%error, "accept failed"),
                }
            }
        },
    )
}

/// Errors that mean the process (or the system) is out of something accepting needs.
fn out_of_resources(error: &io::Error) -> bool {
    // EMFILE 24, ENFILE 23, ENOBUFS 105, ENOMEM 12 (Linux).
    matches!(error.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// A connection that closes itself when its peer stays silent for too long, and frees
/// its slot under the cap when dropped.
pub struct Guarded {
    stream: TcpStream,
    limits: ConnectionLimits,
    /// Whether the peer has sent anything yet (then the idle timeout applies).
    spoken: bool,
    last_activity: Instant,
    deadline: Pin<Box<Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl Guarded {
    fn new(stream: TcpStream, limits: ConnectionLimits, slot: OwnedSemaphorePermit) -> Self {
        let now = Instant::now();
        Self {
            stream,
            limits,
            spoken: false,
            last_activity: now,
            deadline: Box::pin(tokio::time::sleep_until(now + limits.handshake_timeout)),
            _slot: slot,
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// When the connection is due to close if nothing happens before.
    fn due(&self) -> Instant {
        if self.spoken {
            self.last_activity + self.limits.idle_timeout
        } else {
            self.last_activity + self.limits.handshake_timeout
        }
    }

    /// Whether the deadline passed with no activity since: then the read fails. Timers
    /// are moved only when they fire, so activity costs a clock read, not a timer reset.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.deadline.as_mut().poll(cx).is_pending() {
                return false;
            }
            let due = self.due();
            if due <= Instant::now() {
                return true;
            }
            self.deadline.as_mut().reset(due);
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.spoken = true;
                    self.last_activity = Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                if self.expired(cx) {
                    let what = if self.spoken {
                        "the connection was idle too long"
                    } else {
                        "the connection sent nothing in time"
                    };
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.last_activity = Instant::now();
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.last_activity = Instant::now();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Guarded {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: self.stream.local_addr().ok(),
            remote_addr: self.stream.peer_addr().ok(),
        }
    }
}

/// Where the kernel says how many connections may wait to be accepted (Linux).
const SOMAXCONN_FILE: &str = "/proc/sys/net/core/somaxconn";

/// The listen backlog when the system does not say: Linux's own default since 5.4.
const DEFAULT_BACKLOG: u32 = 4096;

/// Binds a listener with the longest backlog the system allows (`somaxconn`), as Go's
/// net package does. tokio's `bind` asks for 1024, so a burst of connects beyond that
/// overflows the queue and clients sit half-open, retrying their SYNs for seconds.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As tokio's `bind` does: a restarted server rebinds while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(listen_backlog())
}

/// The system's `somaxconn`, or 4096 where it cannot be read.
pub fn listen_backlog() -> u32 {
    std::fs::read_to_string(SOMAXCONN_FILE)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .filter(|backlog| *backlog > 0)
        .map_or(DEFAULT_BACKLOG, |backlog| backlog.min(i32::MAX as u32))
}

/// Raises this process's soft limit of open files to its hard limit, so connections
/// run out later; returns the limit now in force.
pub fn raise_open_files_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(max_connections: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_connections,
            handshake_timeout: Duration::from_millis(200),
            idle_timeout: Duration::from_millis(400),
            body_timeout: Duration::from_millis(400),
        }
    }

    async fn listener() -> (TcpListener, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
        let (listener, addr) = listener().await;
        let mut accepted = Box::pin(accept(listener, limits(4)));
        let _client = TcpStream::connect(addr).await.unwrap();
        let mut server = accepted.next().await.unwrap().unwrap();
        let mut byte = [0u8; 1];
        let read = server.read(&mut byte).await;
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_talking_connection_lives_and_an_idle_one_closes() {
        let (listener, addr) = listener().await;
        let mut accepted = Box::pin(accept(listener, limits(4)));
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut server = accepted.next().await.unwrap().unwrap();
        let mut byte = [0u8; 1];
        for _ in 0..5 {
            // Each exchange within the idle timeout keeps it open past the handshake one.
            tokio::time::sleep(Duration::from_millis(150)).await;
            client.write_all(b"x").await.unwrap();
            assert_eq!(server.read(&mut byte).await.unwrap(), 1);
        }
        let read = server.read(&mut byte).await;
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn at_the_cap_new_connections_wait_for_a_slot() {
        let (listener, addr) = listener().await;
        let mut accepted = Box::pin(accept(listener, limits(1)));
        let _first_client = TcpStream::connect(addr).await.unwrap();
        let first = accepted.next().await.unwrap().unwrap();
        let _second_client = TcpStream::connect(addr).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(100), accepted.next()).await;
        assert!(
            waiting.is_err(),
            "no second connection while the first holds the slot"
        );
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), accepted.next()).await;
        assert!(
            matches!(second, Ok(Some(Ok(_)))),
            "the freed slot takes the next"
        );
    }
}
