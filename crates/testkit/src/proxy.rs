//! A loopback TCP proxy that can lose a reply on purpose.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Forwards 127.0.0.1:[`port`] to a server, byte for byte, until told to
/// cut: then the next bytes the server sends back are dropped and that
/// connection is closed both ways. It can also stall every open connection
/// without closing it ([`ReplyCutter::stall_open_connections`]). The server has run the request; the
/// client never hears the answer. This is the one failure in which a
/// retry could apply a write twice, made on demand.
///
/// Threads stop when their connections close; the listener's thread ends
/// with the test process.
///
/// [`port`]: ReplyCutter::port
pub struct ReplyCutter {
    port: u16,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
    /// Connections numbered below this forward nothing any more, in either
    /// direction, and are not closed: what a NAT or a load balancer that
    /// forgot an idle connection looks like from the client.
    stalled_below: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

impl ReplyCutter {
    /// Starts forwarding to `127.0.0.1:target_port`.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    pub fn start(target_port: u16) -> Self {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a port for the proxy");
        let port = listener.local_addr().expect("the proxy's address").port();
        let armed = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let stalled_below = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (armed_for_loop, cuts_for_loop) = (Arc::clone(&armed), Arc::clone(&cuts));
        let (stalled_for_loop, accepted_for_loop) =
            (Arc::clone(&stalled_below), Arc::clone(&accepted));
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let number = accepted_for_loop.fetch_add(1, Ordering::SeqCst);
                let stall = Stall {
                    number,
                    below: Arc::clone(&stalled_for_loop),
                };
                let Ok(server) = TcpStream::connect((Ipv4Addr::LOCALHOST, target_port)) else {
                    continue; // the client sees its connection close
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (Ok(client_reader), Ok(server_writer)) =
                    (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                let upstream_stall = stall.clone();
                std::thread::spawn(move || {
                    forward(client_reader, server_writer, None, &upstream_stall);
                });
                let cut = Some((Arc::clone(&armed_for_loop), Arc::clone(&cuts_for_loop)));
                std::thread::spawn(move || forward(server, client, cut, &stall));
            }
        });
        Self {
            port,
            armed,
            cuts,
            stalled_below,
            accepted,
        }
    }

    /// Every connection open now goes silent: bytes are dropped both ways
    /// and nothing is closed, so a client waits for replies that never
    /// come. Connections opened later work.
    pub fn stall_open_connections(&self) {
        self.stalled_below
            .store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// How many connections the proxy has accepted.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Loses the next reply the server sends, on whichever connection.
    pub fn cut_next_reply(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// How many replies were lost so far.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

/// Which connection this is, and the number below which connections are
/// stalled.
#[derive(Clone)]
struct Stall {
    number: usize,
    below: Arc<AtomicUsize>,
}

impl Stall {
    fn stalled(&self) -> bool {
        self.number < self.below.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to` until either closes. With `cut`, a chunk that
/// arrives while armed is dropped and both connections are closed. Once the
/// connection is stalled, chunks are dropped and nothing is closed.
fn forward(
    mut from: TcpStream,
    mut to: TcpStream,
    cut: Option<(Arc<AtomicBool>, Arc<AtomicUsize>)>,
    stall: &Stall,
) {
    let mut buffer = [0_u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if stall.stalled() {
            continue;
        }
        if let Some((armed, cuts)) = &cut
            && armed.swap(false, Ordering::SeqCst)
        {
            cuts.fetch_add(1, Ordering::SeqCst);
            break;
        }
        if to.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
