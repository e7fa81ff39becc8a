//! Ring discovery through real DNS: edges that find the origin and each other by name, on
//! a UDP DNS server this test runs (a stand-in for a Kubernetes headless Service's
//! records), with edges joining, leaving and the DNS failing while they serve.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use shoal_cache_core::RegionMap;
use shoal_cache_core::size::HumanDuration;
use shoal_edge::{Edge, EdgeConfig};
use shoal_origin::{Origin, OriginConfig};
use shoal_tests::{eventually, raw_http, request};
use tokio::net::{TcpListener, UdpSocket};

/// What the stub answers: A records, SRV records, or SERVFAIL for everything.
#[derive(Debug, Default)]
struct Zone {
    a: HashMap<String, Ipv4Addr>,
    srv: HashMap<String, Vec<(String, u16)>>,
    failing: bool,
}

/// A DNS server on a loopback UDP port answering from a [`Zone`] the test edits.
struct DnsStub {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    task: tokio::task::JoinHandle<()>,
}

impl DnsStub {
    async fn start() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind dns");
        let addr = sock.local_addr().expect("dns addr");
        let zone = Arc::new(Mutex::new(Zone::default()));
        let z = zone.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let answer = answer(&query, &z.lock().expect("zone"));
                if let Ok(bytes) = answer.to_vec() {
                    let _ = sock.send_to(&bytes, from).await;
                }
            }
        });
        Self { addr, zone, task }
    }

    fn zone(&self) -> std::sync::MutexGuard<'_, Zone> {
        self.zone.lock().expect("zone")
    }
}

impl Drop for DnsStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(query: &Message, zone: &Zone) -> Message {
    let mut m = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.recursion_desired = query.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.authoritative = true;
    let Some(q) = query.queries.first() else {
        m.metadata.response_code = ResponseCode::FormErr;
        return m;
    };
    m.add_query(q.clone());
    if zone.failing {
        m.metadata.response_code = ResponseCode::ServFail;
        return m;
    }
    let name = q.name().to_ascii().to_ascii_lowercase();
    let name = name.trim_end_matches('.');
    let record = |rdata| Record::from_rdata(q.name().clone(), 0, rdata);
    let mut known = false;
    if let Some(ip) = zone.a.get(name) {
        known = true;
        if q.query_type() == RecordType::A {
            m.add_answer(record(RData::A(A(*ip))));
        }
    }
    if let Some(targets) = zone.srv.get(name) {
        known = true;
        if q.query_type() == RecordType::SRV {
            for (target, port) in targets {
                let target = Name::from_ascii(format!("{target}.")).expect("target name");
                m.add_answer(record(RData::SRV(SRV::new(0, 50, *port, target))));
            }
        }
    }
    if !known {
        m.metadata.response_code = ResponseCode::NXDomain;
    }
    m
}

const SRV_NAME: &str = "_http._tcp.edges.shoal.test";

fn pod(i: usize) -> String {
    format!("edge-{i}")
}

/// The ring members edge `admin` reports.
async fn ring_members(admin: SocketAddr) -> Option<u64> {
    let r = raw_http(admin, &request("GET", "/metrics", &[])).await;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("shoal_edge_ring_members "))
        .and_then(|v| v.trim().parse().ok())
}

async fn metric(admin: SocketAddr, name: &str) -> u64 {
    let r = raw_http(admin, &request("GET", "/metrics", &[])).await;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Who served each of `paths` when asked through `edge`.
async fn served_by(edge: SocketAddr, paths: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for p in paths {
        let r = raw_http(edge, &request("GET", p, &[])).await;
        assert_eq!(r.status, 200, "{p}: {}", String::from_utf8_lossy(&r.body));
        out.push(r.header("x-shoal-node").unwrap_or_default().to_string());
    }
    out
}

fn owners(nodes: &[String], paths: &[String], template: &EdgeConfig) -> Vec<String> {
    let map = RegionMap::new(
        template.vnodes,
        nodes.iter().map(String::as_str),
        template.key_policy(),
    )
    .expect("map");
    paths
        .iter()
        .map(|p| {
            let key = map
                .key(shoal_loadgen::harness::cluster::HOST, p)
                .expect("key");
            map.owner(&key).expect("owner").to_string()
        })
        .collect()
}

/// Three edges find the origin by name and each other from an SRV record (as a
/// StatefulSet's pods do from a headless Service): a pod that joins the record joins every
/// ring and takes its keys, one that leaves is dropped and its keys served by their next
/// owner, and a failing DNS leaves the ring as it was. No edge restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_follow_the_srv_record_as_pods_join_and_leave() {
    let dir = std::env::temp_dir().join(format!("shoal-e2e-discovery-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let paths: Vec<String> = (0..60).map(|i| format!("/o/{i}.txt")).collect();
    for p in &paths {
        let f = dir.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(f.parent().expect("parent")).expect("dir");
        std::fs::write(f, p.as_bytes()).expect("write");
    }
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let origin = Origin::start(
        OriginConfig {
            quic_listen: loopback,
            admin_listen: loopback,
            content_dir: Some(dir.clone()),
            ..OriginConfig::default()
        },
        None,
    )
    .await
    .expect("origin");

    let dns = DnsStub::start().await;
    dns.zone()
        .a
        .insert("origin.shoal.test".into(), Ipv4Addr::LOCALHOST);
    let mut listeners = Vec::new();
    for i in 0..3 {
        let http = TcpListener::bind(loopback).await.expect("bind");
        let admin = TcpListener::bind(loopback).await.expect("bind");
        let host = format!("{}.edges.shoal.test", pod(i));
        dns.zone().a.insert(host, Ipv4Addr::LOCALHOST);
        listeners.push((http, admin));
    }
    let ports: Vec<u16> = listeners
        .iter()
        .map(|(h, _)| h.local_addr().expect("addr").port())
        .collect();
    let publish = |members: &[usize]| {
        let targets = members
            .iter()
            .map(|i| (format!("{}.edges.shoal.test", pod(*i)), ports[*i]))
            .collect();
        dns.zone().srv.insert(SRV_NAME.into(), targets);
    };
    // edge-2 starts outside the record (a pod not yet ready).
    publish(&[0, 1]);

    let mut template = EdgeConfig::default();
    template.origin.addr = format!("origin.shoal.test:{}", origin.quic_addr.port())
        .parse()
        .expect("origin name");
    template.origin.fingerprint = Some(origin.fingerprint.clone());
    template.discovery.srv = Some(SRV_NAME.into());
    template.discovery.nameserver = Some(dns.addr);
    template.discovery.every = HumanDuration::millis(200);
    template.discovery.timeout = HumanDuration::millis(500);
    template.timeouts.origin_connect = HumanDuration::millis(500);
    template.timeouts.peer = HumanDuration::millis(500);
    template.timeouts.peer_down_for = HumanDuration::millis(500);
    template.cache.default_ttl = HumanDuration::millis(1);
    let mut edges = Vec::new();
    for (i, (http, admin)) in listeners.into_iter().enumerate() {
        let mut c = template.clone();
        c.node_id = pod(i);
        c.listen = http.local_addr().expect("addr");
        c.admin_listen = admin.local_addr().expect("addr");
        edges.push(Edge::start_with(c, http, admin).await.expect("edge starts"));
    }
    let (front, front_admin) = (edges[0].http_addr, edges[0].admin_addr);
    // The origin was found by name: the edge gets ready and serves.
    eventually(Duration::from_secs(10), "edge-0 ready", || async {
        raw_http(front_admin, &request("GET", "/readyz", &[]))
            .await
            .status
            == 200
    })
    .await;
    assert_eq!(ring_members(front_admin).await, Some(2));
    let two: Vec<String> = vec![pod(0), pod(1)];
    assert_eq!(
        served_by(front, &paths).await,
        owners(&two, &paths, &template)
    );

    // edge-2 becomes ready and is published: it joins edge-0's ring without a restart,
    // and the keys it now owns are served by it.
    let changes = metric(front_admin, "shoal_edge_ring_changes_total").await;
    publish(&[0, 1, 2]);
    eventually(
        Duration::from_secs(10),
        "edge-2 on edge-0's ring",
        || async { ring_members(front_admin).await == Some(3) },
    )
    .await;
    let three: Vec<String> = (0..3).map(pod).collect();
    let now = owners(&three, &paths, &template);
    let before = owners(&two, &paths, &template);
    let moved = now.iter().zip(&before).filter(|(n, b)| n != b).count();
    assert!(
        now.iter()
            .zip(&before)
            .all(|(n, b)| n == b || n == "edge-2"),
        "keys moved only to the node that joined"
    );
    assert!(moved > 5, "edge-2 took a share of the keys ({moved})");
    assert_eq!(served_by(front, &paths).await, now);
    assert_eq!(
        metric(front_admin, "shoal_edge_ring_changes_total").await,
        changes + 1
    );

    // edge-1 is scaled away: it leaves the record and edge-0's ring, and its keys are
    // served by their next owner, never by it.
    publish(&[0, 2]);
    eventually(
        Duration::from_secs(10),
        "edge-1 off edge-0's ring",
        || async { ring_members(front_admin).await == Some(2) },
    )
    .await;
    let left: Vec<String> = vec![pod(0), pod(2)];
    let after = owners(&left, &paths, &template);
    assert!(
        after.iter().zip(&now).all(|(a, n)| a == n || n == "edge-1"),
        "only the keys of the node that left moved"
    );
    assert_eq!(served_by(front, &paths).await, after);

    // The DNS fails: the ring stays as it was and the failures are counted.
    dns.zone().failing = true;
    eventually(Duration::from_secs(10), "failed rounds counted", || async {
        metric(front_admin, "shoal_edge_discovery_errors_total").await >= 2
    })
    .await;
    assert_eq!(ring_members(front_admin).await, Some(2));
    assert_eq!(served_by(front, &paths).await, after);
    dns.zone().failing = false;

    for e in edges {
        e.shutdown().await;
    }
    origin.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
