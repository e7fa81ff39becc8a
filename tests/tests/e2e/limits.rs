//! Connection limits on a public listener: silent, half-sent and idle connections are
//! closed after the header-read timeout; connections over the per-client or the total cap
//! are closed at accept, and their slots come back when they close; a client that stops
//! reading a response is cut off after the send timeout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shoal_cache_core::server::Limits;
use shoal_cache_core::size::HumanDuration;
use shoal_loadgen::harness::cluster::Cluster;
use shoal_tests::{raw_http, request, spec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn cluster(limits: Limits) -> Cluster {
    let mut s = spec(1, 1, false);
    s.edge.limits = limits;
    Cluster::start(s).await.expect("cluster")
}

/// A connection from `from` (any 127.0.0.0/8 address) to `to`.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().expect("socket");
    s.bind(SocketAddr::from((from, 0))).expect("bind");
    s.connect(to).await.expect("connect")
}

/// Reads until the server closes; how long that took and what came. Panics after `limit`.
async fn until_closed(s: &mut TcpStream, limit: Duration) -> (Duration, Vec<u8>) {
    let t = Instant::now();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(limit, s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "connection still open after {limit:?}");
    (t.elapsed(), buf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_half_sent_and_idle_connections_are_closed() {
    let c = cluster(Limits {
        header_read_timeout: HumanDuration::millis(500),
        ..Limits::default()
    })
    .await;
    let edge = c.regions[0].addrs[0];
    let limit = Duration::from_secs(5);

    let mut silent = TcpStream::connect(edge).await.expect("connect");
    let (took, _) = until_closed(&mut silent, limit).await;
    assert!(
        took >= Duration::from_millis(400),
        "closed too early: {took:?}"
    );

    // A request line ending in a bare CR never completes.
    let mut cr = TcpStream::connect(edge).await.expect("connect");
    cr.write_all(b"GET / HTTP/1.1\r").await.expect("write");
    until_closed(&mut cr, limit).await;

    // Half an HTTP/2 preface.
    let mut h2 = TcpStream::connect(edge).await.expect("connect");
    h2.write_all(b"PRI * HTTP/2.0\r\n").await.expect("write");
    until_closed(&mut h2, limit).await;

    // Idle keep-alive after a complete exchange.
    let mut idle = TcpStream::connect(edge).await.expect("connect");
    let host = shoal_loadgen::harness::cluster::HOST;
    idle.write_all(format!("GET /nope HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let (_, got) = until_closed(&mut idle, limit).await;
    assert!(
        got.starts_with(b"HTTP/1.1 "),
        "answered before being closed"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_a_cap_are_refused_and_slots_come_back() {
    let c = cluster(Limits {
        header_read_timeout: HumanDuration::secs(10),
        max_connections: 3,
        max_connections_per_client: 2,
        ..Limits::default()
    })
    .await;
    let edge = c.regions[0].addrs[0];
    let quick = Duration::from_secs(2);
    let a1 = connect_from([127, 0, 0, 1], edge).await;
    let _a2 = connect_from([127, 0, 0, 1], edge).await;
    let mut a3 = connect_from([127, 0, 0, 1], edge).await;
    let (took, _) = until_closed(&mut a3, quick).await;
    assert!(
        took < quick,
        "third connection from one client refused at accept"
    );
    let _b1 = connect_from([127, 0, 0, 2], edge).await;
    let mut c1 = connect_from([127, 0, 0, 3], edge).await;
    until_closed(&mut c1, quick).await; // a fourth in all: over the total cap
    // Closing one gives its slot back: a request from a new client is served.
    drop(a1);
    let mut served = false;
    for _ in 0..40 {
        let mut s = connect_from([127, 0, 0, 4], edge).await;
        let host = shoal_loadgen::harness::cluster::HOST;
        let req = format!("GET /nope HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        if s.write_all(req.as_bytes()).await.is_ok() {
            let (_, got) = until_closed(&mut s, Duration::from_secs(5)).await;
            if got.starts_with(b"HTTP/1.1 404") {
                served = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "a freed slot is reused");
    // The admin port has its own caps: probes still answer.
    let admin = c.edge(0, 0).expect("edge").admin_addr;
    assert_eq!(
        raw_http(admin, &request("GET", "/healthz", &[]))
            .await
            .status,
        200
    );
    c.shutdown().await;
}

/// Over its rate, a client (by its connection's address) gets a 429 with `Retry-After`;
/// another client is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_gets_429_with_retry_after() {
    let mut s = spec(1, 1, false);
    s.edge.overload.client_rate = 3;
    let c = Cluster::start(s).await.expect("cluster");
    let edge = c.regions[0].addrs[0];
    let host = shoal_loadgen::harness::cluster::HOST;
    let req = format!("GET /nope HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..6 {
        let mut s = connect_from([127, 0, 0, 5], edge).await;
        s.write_all(req.as_bytes()).await.expect("write");
        let (_, got) = until_closed(&mut s, Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&got).to_string();
        statuses.push(text.get(9..12).unwrap_or("").to_string());
        if text.starts_with("HTTP/1.1 429") {
            retry_after = text
                .lines()
                .find_map(|l| l.strip_prefix("retry-after: ").map(str::to_string));
        }
    }
    assert!(
        statuses.iter().filter(|s| *s == "404").count() >= 3,
        "{statuses:?}"
    );
    assert!(statuses.contains(&"429".to_string()), "{statuses:?}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    let mut other = connect_from([127, 0, 0, 6], edge).await;
    other.write_all(req.as_bytes()).await.expect("write");
    let (_, got) = until_closed(&mut other, Duration::from_secs(5)).await;
    assert!(got.starts_with(b"HTTP/1.1 404"), "another client is served");
    c.shutdown().await;
}

/// A client that asks for a large object and stops reading is cut off once a write has
/// waited `send_timeout`: reading again later, it gets the end of the connection long
/// before the whole body. A client that keeps reading gets all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_after_the_send_timeout() {
    let c = cluster(Limits {
        send_timeout: HumanDuration::millis(500),
        ..Limits::default()
    })
    .await;
    let size = 32 << 20;
    c.store()
        .put("/big.bin", bytes::Bytes::from(vec![b'b'; size]), None)
        .expect("put");
    c.wait_ready(Duration::from_secs(10)).await.expect("ready");
    let edge = c.regions[0].addrs[0];
    let host = shoal_loadgen::harness::cluster::HOST;
    let req = format!("GET /big.bin HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");

    // A reader that keeps up gets every byte (and fills the cache on the way).
    let mut steady = TcpStream::connect(edge).await.expect("connect");
    steady.write_all(req.as_bytes()).await.expect("write");
    let (_, all) = until_closed(&mut steady, Duration::from_secs(30)).await;
    assert!(all.len() > size, "a steady reader got {} bytes", all.len());

    // A reader with a small window that stops reading.
    let sock = TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut stalled = sock.connect(edge).await.expect("connect");
    stalled.write_all(req.as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the stalled connection was never closed");
    assert!(
        got.len() < size,
        "the stalled reader still got the whole body ({} bytes)",
        got.len()
    );
    c.shutdown().await;
}
