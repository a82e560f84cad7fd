//! Network faults for tests (feature `test-util`): peers that accept a TCP
//! connection and then misbehave, and a proxy to a real broker that can go
//! silent, or stop as a broker node that dies. Each binds its own ephemeral
//! port (on 127.0.0.1 unless told otherwise) and stops (closing every
//! socket it holds) when dropped.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use celeriac_common::netfault::{Peer, Proxy, ProxyMode};
//! // A half-dead node: accepts, never speaks AMQP.
//! let silent = Peer::silent().await?;
//! let url = silent.url(); // amqp://guest:guest@127.0.0.1:PORT/%2f
//! // The real broker, until `freeze`: then nothing more crosses, either way.
//! let proxy = Proxy::start("amqp://guest:guest@127.0.0.1:5672/%2f", ProxyMode::Forward).await?;
//! proxy.freeze();
//! # Ok(()) }
//! ```

use futures_util::FutureExt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The 8 bytes an AMQP 0-9-1 client opens with.
pub const AMQP_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// What a [`Peer`] does with each connection it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMode {
    /// Reads and drops whatever comes, never writes or closes (a half-dead
    /// node, a black-holed route).
    Silent,
    /// Reads the client's protocol header, writes these bytes (for example
    /// half a frame, or nothing), then closes.
    HangUp(Vec<u8>),
}

/// A listener on 127.0.0.1 that accepts connections and misbehaves.
#[derive(Debug)]
pub struct Peer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    tasks: JoinSet<()>,
}

impl Peer {
    /// A peer in `mode`.
    pub async fn start(mode: PeerMode) -> io::Result<Peer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        let (count, ended) = (accepted.clone(), closed.clone());
        tasks.spawn(async move {
            let mut held = JoinSet::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let mode = mode.clone();
                let ended = ended.clone();
                // Each connection lives in `held`, dropped with the peer.
                held.spawn(async move {
                    match mode {
                        PeerMode::Silent => {
                            let mut sink = [0u8; 1024];
                            while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
                            ended.fetch_add(1, Ordering::SeqCst);
                        }
                        PeerMode::HangUp(reply) => {
                            let mut header = [0u8; AMQP_HEADER.len()];
                            let _ = socket.read_exact(&mut header).await;
                            let _ = socket.write_all(&reply).await;
                            let _ = socket.shutdown().await;
                        }
                    }
                    drop(socket);
                });
                while held.try_join_next().is_some() {}
            }
        });
        Ok(Peer {
            addr,
            accepted,
            closed,
            tasks,
        })
    }

    /// A peer that accepts and then says nothing, for ever.
    pub async fn silent() -> io::Result<Peer> {
        Peer::start(PeerMode::Silent).await
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// An AMQP URL pointing at it (guest/guest, default vhost).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// How many connections it accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// How many connections the client closed so far ([`PeerMode::Silent`]).
    pub fn closed_by_client(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }

    /// Stops listening and closes every connection.
    pub fn stop(&mut self) {
        self.tasks.abort_all();
    }
}

/// What a [`Proxy`] does with each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forwards both ways (until [`Proxy::freeze`]).
    Forward,
    /// Forwards the client's bytes, and this many of the broker's, then
    /// nothing more either way, holding the connection open: a broker
    /// frozen during the handshake.
    FreezeAfter(usize),
    /// Forwards this many of the broker's bytes, then resets both sides
    /// (RST): a broker stopped during the handshake.
    ResetAfter(usize),
    /// Forwards both ways, each byte this long after it arrived: a broker
    /// far away (twice this is the round trip). Not frozen by
    /// [`Proxy::freeze`].
    Latency(Duration),
}

/// A TCP proxy on 127.0.0.1 to the broker of a URL.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    upstream_url: url::Url,
    accepted: Arc<AtomicUsize>,
    from_broker: Arc<AtomicUsize>,
    frozen: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Proxy {
    /// A proxy to the host and port of `broker_url`, in `mode`.
    pub async fn start(broker_url: &str, mode: ProxyMode) -> io::Result<Proxy> {
        Proxy::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), broker_url, mode).await
    }

    /// A proxy listening on `listen` (port 0: any free port), for example
    /// the host side of a network namespace's link, to the host and port of
    /// `broker_url`, in `mode`.
    pub async fn start_on(
        listen: SocketAddr,
        broker_url: &str,
        mode: ProxyMode,
    ) -> io::Result<Proxy> {
        let upstream_url = url::Url::parse(broker_url).map_err(io::Error::other)?;
        let host = upstream_url.host_str().unwrap_or("127.0.0.1").to_owned();
        let upstream = (host, upstream_url.port().unwrap_or(5672));
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let from_broker = Arc::new(AtomicUsize::new(0));
        let (frozen, frozen_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let count = accepted.clone();
        let forwarded = from_broker.clone();
        tasks.spawn(async move {
            let mut held = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let upstream = upstream.clone();
                let frozen = frozen_rx.clone();
                let forwarded = forwarded.clone();
                held.spawn(async move {
                    if *frozen.borrow() {
                        // Frozen: accepted by the kernel, then nothing.
                        return hold(client).await;
                    }
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        if let ProxyMode::Latency(delay) = mode {
                            return late(client, server, delay).await;
                        }
                        relay(client, server, mode, frozen, &forwarded).await;
                    }
                });
                while held.try_join_next().is_some() {}
            }
        });
        Ok(Proxy {
            addr,
            upstream_url,
            accepted,
            from_broker,
            frozen,
            tasks,
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The broker URL with the proxy in place of the broker's host and port.
    pub fn url(&self) -> String {
        let mut url = self.upstream_url.clone();
        let _ = url.set_ip_host(self.addr.ip());
        let _ = url.set_port(Some(self.addr.port()));
        url.to_string()
    }

    /// How many connections it accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// How many bytes it passed from the broker to its clients so far.
    pub fn forwarded_from_broker(&self) -> usize {
        self.from_broker.load(Ordering::SeqCst)
    }

    /// From now on nothing crosses, either way, on open connections, and
    /// new ones are accepted and left silent; nothing is closed (packets
    /// dropped, no RST).
    pub fn freeze(&self) {
        let _ = self.frozen.send(true);
    }

    /// New connections are forwarded again; those open while it was
    /// frozen stay silent for good, as the sockets of a host that failed
    /// over to another.
    pub fn thaw(&self) {
        let _ = self.frozen.send(false);
    }

    /// Stops listening and closes every connection.
    pub fn stop(&mut self) {
        self.tasks.abort_all();
    }
}

/// Copies bytes both ways until either side closes, `mode` says to stop,
/// or the proxy freezes.
async fn relay(
    mut client: TcpStream,
    mut server: TcpStream,
    mode: ProxyMode,
    mut frozen: watch::Receiver<bool>,
    forwarded: &AtomicUsize,
) {
    let mut budget = match mode {
        ProxyMode::Forward | ProxyMode::Latency(_) => usize::MAX,
        ProxyMode::FreezeAfter(n) | ProxyMode::ResetAfter(n) => n,
    };
    let (mut up, mut down) = ([0u8; 8192], [0u8; 8192]);
    loop {
        if budget == 0 {
            if let ProxyMode::ResetAfter(_) = mode {
                let _ = client.set_zero_linger();
                let _ = server.set_zero_linger();
                return;
            }
            break;
        }
        tokio::select! {
            r = client.read(&mut up) => match r {
                Ok(n) if n > 0 => {
                    if server.write_all(&up[..n]).await.is_err() {
                        return;
                    }
                }
                _ => return,
            },
            r = server.read(&mut down) => match r {
                Ok(n) if n > 0 => {
                    let n = n.min(budget);
                    budget -= n;
                    if client.write_all(&down[..n]).await.is_err() {
                        return;
                    }
                    forwarded.fetch_add(n, Ordering::SeqCst);
                }
                _ => return,
            },
            _ = frozen.wait_for(|f| *f).map(|_| ()) => break,
        }
    }
    // Frozen: both sockets stay open, nothing is read or written.
    hold((client, server)).await;
}

/// Copies bytes both ways, each chunk `delay` after it was read, without
/// holding up the reads behind it (a long link, not a slow one).
async fn late(client: TcpStream, server: TcpStream, delay: Duration) {
    let (client_rx, client_tx) = client.into_split();
    let (server_rx, server_tx) = server.into_split();
    tokio::join!(
        delayed(client_rx, server_tx, delay),
        delayed(server_rx, client_tx, delay)
    );
}

/// One direction of [`late`].
async fn delayed(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0
                || tx
                    .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
    };
    let write = async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

/// Keeps `sockets` open, silent, until the task is aborted.
async fn hold<T>(sockets: T) {
    std::future::pending::<()>().await;
    drop(sockets);
}
