//! A TCP proxy on loopback that can freeze a connection to a real service: the fault a slow
//! or hung store causes, without stopping the service other tests share.
//!
//! While running, bytes are forwarded both ways as they come. While paused, nothing is
//! forwarded: what clients send is held (and can be inspected), so a client request stays
//! unanswered until [`Proxy::resume`].

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A pausable loopback proxy in front of `upstream` (see the module docs).
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    paused: AtomicBool,
    /// Client bytes received while paused and not yet forwarded.
    held: Mutex<Vec<u8>>,
}

impl Proxy {
    /// Listens on an ephemeral loopback port and forwards every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let (to_server, to_client) = (theirs.clone(), theirs.clone());
                std::thread::spawn(move || pump(client, server, &to_server, true));
                std::thread::spawn(move || pump(s2, c2, &to_client, false));
            }
        });
        Self { addr, shared }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops forwarding (in both directions) until [`Proxy::resume`].
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
    }

    /// Forwards again, held bytes first.
    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
    }

    /// True when client bytes held while paused contain `needle` (a request that is stuck).
    pub fn holds(&self, needle: &[u8]) -> bool {
        let held = self.shared.held.lock().unwrap_or_else(|e| e.into_inner());
        held.windows(needle.len().max(1)).any(|w| w == needle)
    }
}

/// Copies `from` to `to` until either side closes; while paused, holds what it reads.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, from_client: bool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if shared.paused.load(Ordering::SeqCst) {
            if from_client {
                let mut held = shared.held.lock().unwrap_or_else(|e| e.into_inner());
                held.extend_from_slice(&buf[..n]);
            }
            while shared.paused.load(Ordering::SeqCst) {
                std::thread::park_timeout(Duration::from_millis(10));
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
