//! A loopback UDP relay between edges and the origin that can delay or black-hole traffic:
//! how latency and partitions are injected into real QUIC connections in tests (the kernel
//! here has no netem). Each client address gets its own upstream socket, so the origin sees
//! one peer per edge, as without the relay.
//!
//! Delay is a FIFO delay line per direction (one task sleeping until each packet is due), so
//! packets keep their order as on a real link: per-packet timers would reorder packets due
//! in the same timer tick, which QUIC reads as loss.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The relay's tasks, aborted when the relay is dropped.
#[derive(Debug, Default)]
struct Tasks(std::sync::Mutex<Vec<tokio::task::AbortHandle>>);

impl Tasks {
    fn add(&self, h: tokio::task::AbortHandle) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(h);
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for h in self.0.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            h.abort();
        }
    }
}

#[derive(Debug, Default)]
struct Knobs {
    delay_ms: AtomicU64,
    blackhole: AtomicBool,
    dropped: AtomicU64,
}

/// A running relay.
#[derive(Debug)]
pub struct Relay {
    /// Where edges should send (in place of the origin).
    pub addr: SocketAddr,
    knobs: Arc<Knobs>,
    _tasks: Arc<Tasks>,
}

/// Where a delay line delivers.
enum Sink {
    /// To the origin, on a connected socket.
    Up(Arc<UdpSocket>),
    /// Back to an edge, from the front socket.
    Down(Arc<UdpSocket>, SocketAddr),
}

/// Starts a delay line: packets sent into it leave in order, each `delay` after it entered.
fn delay_line(sink: Sink, tasks: &Tasks) -> mpsc::UnboundedSender<(Instant, Vec<u8>)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let h = tokio::spawn(async move {
        while let Some((due, pkt)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            let _ = match &sink {
                Sink::Up(s) => s.send(&pkt).await,
                Sink::Down(s, to) => s.send_to(&pkt, *to).await,
            };
        }
    });
    tasks.add(h.abort_handle());
    tx
}

impl Knobs {
    /// Admits a packet: `None` if black-holed, else when it is due.
    fn admit(&self) -> Option<Instant> {
        if self.blackhole.load(Ordering::SeqCst) {
            self.dropped.fetch_add(1, Ordering::SeqCst);
            return None;
        }
        Some(Instant::now() + Duration::from_millis(self.delay_ms.load(Ordering::SeqCst)))
    }
}

impl Relay {
    /// Starts a relay on `127.0.0.1:0` forwarding to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let knobs = Arc::new(Knobs::default());
        let tasks = Arc::new(Tasks::default());
        let (k, t) = (knobs.clone(), tasks.clone());
        let main = tokio::spawn(async move {
            let mut lines: HashMap<SocketAddr, mpsc::UnboundedSender<(Instant, Vec<u8>)>> =
                HashMap::new();
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok((n, from)) = front.recv_from(&mut buf).await else {
                    return;
                };
                let line = match lines.get(&from) {
                    Some(l) => l.clone(),
                    None => {
                        let Ok(up) = UdpSocket::bind("127.0.0.1:0").await else {
                            continue;
                        };
                        if up.connect(target).await.is_err() {
                            continue;
                        }
                        let up = Arc::new(up);
                        let line = delay_line(Sink::Up(up.clone()), &t);
                        lines.insert(from, line.clone());
                        // Origin → edge direction.
                        let down = delay_line(Sink::Down(front.clone(), from), &t);
                        let k2 = k.clone();
                        let back = tokio::spawn(async move {
                            let mut b = vec![0u8; 65_536];
                            while let Ok(n) = up.recv(&mut b).await {
                                if let Some(due) = k2.admit() {
                                    let _ = down.send((due, b[..n].to_vec()));
                                }
                            }
                        });
                        t.add(back.abort_handle());
                        line
                    }
                };
                if let Some(due) = k.admit() {
                    let _ = line.send((due, buf[..n].to_vec()));
                }
            }
        });
        tasks.add(main.abort_handle());
        Ok(Self {
            addr,
            knobs,
            _tasks: tasks,
        })
    }

    /// Delays every packet, both ways, by `d` (order is kept).
    pub fn set_delay(&self, d: Duration) {
        self.knobs
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Drops every packet, both ways, while on: a partition.
    pub fn set_blackhole(&self, on: bool) {
        self.knobs.blackhole.store(on, Ordering::SeqCst);
    }

    /// Packets dropped so far.
    pub fn dropped(&self) -> u64 {
        self.knobs.dropped.load(Ordering::SeqCst)
    }
}
