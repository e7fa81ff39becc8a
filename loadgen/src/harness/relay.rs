//! A loopback UDP relay between edges and the origin that injects faults into real QUIC
//! connections in tests (the kernel here has no netem): per direction, delay, drop,
//! duplicate, reorder within a window, and cut (a partition) and heal. Each client address
//! gets its own upstream socket, so the origin sees one peer per edge, as without the relay.
//!
//! Delay is a FIFO delay line per direction (one task sleeping until each packet is due), so
//! packets keep their order as on a real link: per-packet timers would reorder packets due
//! in the same timer tick, which QUIC reads as loss. A reordered packet leaves the line and
//! is sent on its own, up to the reorder window later.
//!
//! The random choices come from one seeded generator ([`Relay::seed`]): a failing run can
//! be replayed with the same sequence of drop/duplicate/reorder decisions (packet timing on
//! a busy machine still varies).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// A direction of traffic through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Edge → origin.
    ToOrigin,
    /// Origin → edge.
    ToEdge,
}

/// Faults applied to one direction. Probabilities are per packet, in `0.0..=1.0`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Added one-way delay (order kept).
    pub delay: Duration,
    /// Share of packets dropped.
    pub drop: f64,
    /// Share of packets sent twice.
    pub duplicate: f64,
    /// Share of packets held back by up to `reorder_window`, so later ones overtake them.
    pub reorder: f64,
    /// How far a reordered packet may fall behind.
    pub reorder_window: Duration,
    /// Drop everything: a partition in this direction.
    pub cut: bool,
}

#[derive(Debug)]
struct Knobs {
    faults: std::sync::Mutex<[Faults; 2]>,
    rng: std::sync::Mutex<fastrand::Rng>,
    dropped: AtomicU64,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            faults: std::sync::Mutex::new([Faults::default(); 2]),
            rng: std::sync::Mutex::new(fastrand::Rng::with_seed(0x0053_484f_414c)),
            dropped: AtomicU64::new(0),
        }
    }
}

/// What happens to one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fate {
    /// When it is due on the delay line; `None`: dropped.
    due: Option<Instant>,
    /// Send a second copy.
    duplicate: bool,
    /// Held back this much more, off the line.
    late: Option<Duration>,
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
    fn faults(&self) -> std::sync::MutexGuard<'_, [Faults; 2]> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides one packet's fate in direction `dir`.
    fn admit(&self, dir: Direction) -> Fate {
        let f = self.faults()[dir as usize];
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let roll = |rng: &mut fastrand::Rng, p: f64| p > 0.0 && rng.f64() < p;
        if f.cut || roll(&mut rng, f.drop) {
            self.dropped.fetch_add(1, Ordering::SeqCst);
            return Fate {
                due: None,
                duplicate: false,
                late: None,
            };
        }
        let duplicate = roll(&mut rng, f.duplicate);
        let late = roll(&mut rng, f.reorder).then(|| {
            let window = f.reorder_window.as_micros().max(1) as u64;
            Duration::from_micros(rng.u64(1..=window))
        });
        Fate {
            due: Some(Instant::now() + f.delay),
            duplicate,
            late,
        }
    }
}

/// Sends a packet by its fate: onto the delay line, or (reordered) on its own, later.
fn dispatch(
    fate: Fate,
    pkt: &[u8],
    line: &mpsc::UnboundedSender<(Instant, Vec<u8>)>,
    tasks: &Tasks,
) {
    let Some(due) = fate.due else { return };
    let copies = 1 + usize::from(fate.duplicate);
    for _ in 0..copies {
        match fate.late {
            None => {
                let _ = line.send((due, pkt.to_vec()));
            }
            Some(extra) => {
                let (line, pkt) = (line.clone(), pkt.to_vec());
                let h = tokio::spawn(async move {
                    tokio::time::sleep_until(due + extra).await;
                    // Due now: the line sends it at once, behind what overtook it.
                    let _ = line.send((Instant::now(), pkt));
                });
                tasks.add(h.abort_handle());
            }
        }
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
                        let (k2, t2) = (k.clone(), t.clone());
                        let back = tokio::spawn(async move {
                            let mut b = vec![0u8; 65_536];
                            while let Ok(n) = up.recv(&mut b).await {
                                dispatch(k2.admit(Direction::ToEdge), &b[..n], &down, &t2);
                            }
                        });
                        t.add(back.abort_handle());
                        line
                    }
                };
                dispatch(k.admit(Direction::ToOrigin), &buf[..n], &line, &t);
            }
        });
        tasks.add(main.abort_handle());
        Ok(Self {
            addr,
            knobs,
            _tasks: tasks,
        })
    }

    /// Sets the faults of one direction.
    pub fn set_faults(&self, dir: Direction, faults: Faults) {
        self.knobs.faults()[dir as usize] = faults;
    }

    /// The faults of one direction.
    pub fn faults(&self, dir: Direction) -> Faults {
        self.knobs.faults()[dir as usize]
    }

    /// Restarts the fault generator from `seed`.
    pub fn seed(&self, seed: u64) {
        *self.knobs.rng.lock().unwrap_or_else(|e| e.into_inner()) = fastrand::Rng::with_seed(seed);
    }

    /// Delays every packet, both ways, by `d` (order is kept).
    pub fn set_delay(&self, d: Duration) {
        for f in self.knobs.faults().iter_mut() {
            f.delay = d;
        }
    }

    /// Drops every packet, both ways, while on: a partition.
    pub fn set_blackhole(&self, on: bool) {
        for f in self.knobs.faults().iter_mut() {
            f.cut = on;
        }
    }

    /// Packets dropped so far.
    pub fn dropped(&self) -> u64 {
        self.knobs.dropped.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server, its count of packets received, and a client through `relay`.
    async fn setup() -> (Relay, UdpSocket, Arc<AtomicU64>) {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        let seen = Arc::new(AtomicU64::new(0));
        let s = seen.clone();
        tokio::spawn(async move {
            let mut b = [0u8; 64];
            while let Ok((n, from)) = echo.recv_from(&mut b).await {
                s.fetch_add(1, Ordering::SeqCst);
                let _ = echo.send_to(&b[..n], from).await;
            }
        });
        let relay = Relay::start(target).await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(relay.addr).await.unwrap();
        (relay, client, seen)
    }

    /// Sends packets 0..n, then collects echoes until 300 ms pass without one.
    async fn exchange(client: &UdpSocket, n: u32) -> Vec<u32> {
        for i in 0..n {
            client.send(&i.to_be_bytes()).await.unwrap();
        }
        let mut got = Vec::new();
        let mut b = [0u8; 64];
        while let Ok(Ok(k)) =
            tokio::time::timeout(Duration::from_millis(300), client.recv(&mut b)).await
        {
            if k == 4 {
                got.push(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            }
        }
        got
    }

    #[tokio::test]
    async fn drops_are_seeded_and_replayable() {
        let lost = |got: &[u32]| (0..300).filter(|i| !got.contains(i)).collect::<Vec<u32>>();
        let mut runs = Vec::new();
        for _ in 0..2 {
            let (relay, client, _) = setup().await;
            relay.seed(42);
            relay.set_faults(
                Direction::ToOrigin,
                Faults {
                    drop: 0.3,
                    ..Faults::default()
                },
            );
            runs.push(lost(&exchange(&client, 300).await));
        }
        assert!(
            (45..135).contains(&runs[0].len()),
            "{} of 300 lost",
            runs[0].len()
        );
        assert_eq!(runs[0], runs[1], "the same seed loses the same packets");
    }

    #[tokio::test]
    async fn duplicates_reorders_and_one_way_cuts() {
        let (relay, client, seen) = setup().await;
        let dup = Faults {
            duplicate: 1.0,
            ..Faults::default()
        };
        relay.set_faults(Direction::ToEdge, dup);
        assert_eq!(exchange(&client, 50).await.len(), 100, "every echo twice");
        relay.set_faults(Direction::ToEdge, Faults::default());
        relay.set_faults(
            Direction::ToOrigin,
            Faults {
                reorder: 0.5,
                reorder_window: Duration::from_millis(20),
                ..Faults::default()
            },
        );
        let got = exchange(&client, 100).await;
        assert_eq!(got.len(), 100, "reordered, not lost");
        assert!(
            got.windows(2).any(|w| w[0] > w[1]),
            "some packets overtaken"
        );
        relay.set_faults(Direction::ToOrigin, Faults::default());
        relay.set_faults(
            Direction::ToEdge,
            Faults {
                cut: true,
                ..Faults::default()
            },
        );
        let before = seen.load(Ordering::SeqCst);
        assert!(
            exchange(&client, 20).await.is_empty(),
            "no answer comes back"
        );
        assert_eq!(
            seen.load(Ordering::SeqCst),
            before + 20,
            "but every request arrives"
        );
        assert!(relay.dropped() >= 20);
    }
}
