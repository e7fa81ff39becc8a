//! A loopback UDP relay between edges and the origin that can delay or black-hole traffic:
//! how latency and partitions are injected into real QUIC connections in tests (the kernel
//! here has no netem). Each client address gets its own upstream socket, so the origin sees
//! one peer per edge, as without the relay.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::Mutex;

/// The relay's tasks, aborted when the relay is dropped.
#[derive(Debug, Default)]
struct Cancel(std::sync::Mutex<Vec<tokio::task::AbortHandle>>);

impl Drop for Cancel {
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
    tasks: Arc<Cancel>,
}

impl Relay {
    /// Starts a relay on `127.0.0.1:0` forwarding to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let knobs = Arc::new(Knobs::default());
        let tasks = Arc::new(Cancel::default());
        let upstreams: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
        let (k, t) = (knobs.clone(), tasks.clone());
        let main = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok((n, from)) = front.recv_from(&mut buf).await else {
                    return;
                };
                let up = {
                    let mut map = upstreams.lock().await;
                    if let Some(u) = map.get(&from) {
                        u.clone()
                    } else {
                        let Ok(u) = UdpSocket::bind("127.0.0.1:0").await else {
                            continue;
                        };
                        if u.connect(target).await.is_err() {
                            continue;
                        }
                        let u = Arc::new(u);
                        map.insert(from, u.clone());
                        // Origin → edge direction.
                        let (u2, f2, k2) = (u.clone(), front.clone(), k.clone());
                        let back = tokio::spawn(async move {
                            let mut b = vec![0u8; 65_536];
                            while let Ok(n) = u2.recv(&mut b).await {
                                let pkt = b[..n].to_vec();
                                let f = f2.clone();
                                forward(&k2, pkt, move |p| async move {
                                    let _ = f.send_to(&p, from).await;
                                })
                                .await;
                            }
                        });
                        t.0.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(back.abort_handle());
                        u
                    }
                };
                let pkt = buf[..n].to_vec();
                forward(&k, pkt, move |p| async move {
                    let _ = up.send(&p).await;
                })
                .await;
            }
        });
        tasks
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(main.abort_handle());
        Ok(Self { addr, knobs, tasks })
    }

    /// Delays every packet, both ways, by `d`.
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

    /// Number of tasks (for leak checks).
    pub fn tasks(&self) -> usize {
        self.tasks.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

async fn forward<F, Fut>(k: &Knobs, pkt: Vec<u8>, send: F)
where
    F: FnOnce(Vec<u8>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    if k.blackhole.load(Ordering::SeqCst) {
        k.dropped.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let d = k.delay_ms.load(Ordering::SeqCst);
    if d == 0 {
        send(pkt).await;
    } else {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(d)).await;
            send(pkt).await;
        });
    }
}
