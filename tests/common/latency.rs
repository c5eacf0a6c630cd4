//! A TCP proxy that adds a fixed delay each way, to measure and test pulls
//! over far-away servers on a machine whose kernel has no `netem`. Used by
//! the tests (`#[path = "common/latency.rs"] mod latency;`) and, through
//! `examples/latency-proxy.rs`, by `bench/net.sh`.
//!
//! Every byte from the client reaches the server `one_way` after the proxy
//! read it, and every byte back likewise: a round trip costs `2 × one_way`.
//! A new connection costs one more round trip before its first byte is
//! forwarded, as TCP's handshake does on a real path, so that opening
//! connections is not free here either. Bandwidth is not limited, and each
//! direction buffers at most 64 chunks (about 4 MiB) ahead of a reader
//! that does not read, so a client's flow control still works.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub struct LatencyProxy {
    pub port: u16,
    /// Connections accepted so far.
    pub connections: Arc<AtomicU64>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl LatencyProxy {
    /// Listens on `listen` (port 0: any free port) and forwards to
    /// `upstream`.
    pub fn start(listen: SocketAddr, upstream: SocketAddr, one_way: Duration) -> LatencyProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("latency-proxy")
            .enable_all()
            .build()
            .expect("tokio runtime");
        let listener = runtime
            .block_on(TcpListener::bind(listen))
            .expect("bind the latency proxy");
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicU64::new(0));
        let count = connections.clone();
        runtime.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(relay(client, upstream, one_way));
            }
        });
        LatencyProxy {
            port,
            connections,
            runtime: Some(runtime),
        }
    }

    /// Runs until the process is killed (for the bench helper).
    pub fn serve_forever(self) -> ! {
        loop {
            std::thread::park();
        }
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, one_way: Duration) {
    let accepted = Instant::now();
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    // The client's first bytes wait for the handshake's round trip.
    let up = pipe(cr, sw, one_way, accepted + one_way * 2);
    let down = pipe(sr, cw, one_way, accepted);
    tokio::join!(up, down);
}

/// Copies `r` to `w`, each chunk `delay` after it was read (and not before
/// `not_before + delay`); end of stream likewise.
async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    not_before: Instant,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>(64);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = r.read(&mut buf).await.unwrap_or(0);
            let at = Instant::now().max(not_before) + delay;
            let data = (n > 0).then(|| buf[..n].to_vec());
            let end = data.is_none();
            if tx.send((at, data)).await.is_err() || end {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((at, data)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            match data {
                Some(d) => {
                    if w.write_all(&d).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = w.shutdown().await;
                    return;
                }
            }
        }
    };
    tokio::join!(reader, writer);
}
