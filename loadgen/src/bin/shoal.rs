//! `shoal`: one binary for every Shoal role and tool. Each subcommand parses its flags,
//! loads its config, and calls into the libraries.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use shoal_edge::config::HostPort;
use shoal_edge::{EdgeConfig, EdgeFlags};
use shoal_loadgen::replay::hitrate::{self, Capacity};
use shoal_loadgen::replay::trace::Trace;
use shoal_origin::{OriginConfig, OriginFlags};

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "Shoal: a CDN-style distributed caching tier"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the demo: an origin and 3 regions × 2 edges on loopback, every object fetched
    /// through every region twice, purges timed until every edge applied them, then a
    /// summary.
    Demo {
        /// Objects generated at the origin.
        #[arg(long, default_value_t = 120)]
        objects: usize,
        /// Concurrent clients per region.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Purges timed after the fetches (each until every edge applied it).
        #[arg(long, default_value_t = 1000)]
        purges: usize,
        /// Video viewers per region (0: none).
        #[arg(long, default_value_t = 8)]
        players: usize,
        /// Length of the object-traffic spike run, split evenly into baseline, 10× spike
        /// and after (the rest of the demo takes a few seconds); `0s`: no spike.
        #[arg(long, default_value = "15s")]
        duration: shoal_cache_core::size::HumanDuration,
        /// Baseline requests per second per region of the spike (10× during it).
        #[arg(long, default_value_t = 100.0)]
        spike_rate: f64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run an origin: objects over QUIC for edges, admin HTTP for writes and metrics.
    Origin(OriginFlags),
    /// Run an edge.
    Edge(EdgeFlags),
    /// Put Shoal in front of an HTTP server in one command: an origin that pulls through
    /// to UPSTREAM and one edge that passes every method through, on this machine. For a
    /// tier across machines and regions, run `shoal origin --upstream` and `shoal edge
    /// --pass-through` instead.
    Front {
        /// The HTTP server to front, `http://host:port`.
        upstream: String,
        /// Where clients connect.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The edge's admin listener (`/metrics`, `/healthz`, `/readyz`).
        #[arg(long, default_value = "127.0.0.1:9091")]
        admin_listen: SocketAddr,
        /// Cache capacity.
        #[arg(long, default_value = "256MiB")]
        capacity: shoal_cache_core::size::ByteSize,
    },
    /// GET URLs through a region's edges and print status, Cache-Status and timings.
    Get {
        /// Region edges, `id=addr` (repeatable); default: the edge config's node and peers,
        /// or else the URL's own host:port.
        #[arg(long = "edge", value_parser = shoal_edge::config::parse_peer)]
        edges: Vec<(String, HostPort)>,
        /// The region's edge config (TOML): routing uses its vnodes and key policy, so the
        /// owner is the one the edges agree on. Default: the edge defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// URLs (`http://host/path`).
        #[arg(required = true)]
        urls: Vec<String>,
    },
    /// Check a health endpoint (`/healthz`, `/readyz`): exit 0 on a 2xx within the timeout,
    /// 1 otherwise. For container health checks in images with no shell or curl.
    Probe {
        /// `http://host:port/path`.
        url: String,
        /// Milliseconds to wait for the answer.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Play an HLS master playlist through a region's edges with an ABR rule; prints QoE.
    Play {
        /// Region edges, `id=addr` (repeatable); as for `get`.
        #[arg(long = "edge", value_parser = shoal_edge::config::parse_peer)]
        edges: Vec<(String, HostPort)>,
        /// The region's edge config (TOML), for routing; as for `get`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// ABR rule: throughput, bba, bola, dynamic.
        #[arg(long, default_value = "dynamic")]
        rule: String,
        /// Most segments to play.
        #[arg(long, default_value_t = 30)]
        segments: u64,
        /// Media seconds per wall second for VOD (accelerated simulated time).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Do not check segments' synthetic header and checksum (for real media).
        #[arg(long)]
        no_verify: bool,
        /// Shape downloads by this throughput trace (`time_s<TAB>Mbit/s`, as in
        /// ../shared/abr-traces), 80 ms per request, from a seeded random point in it.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Seed for the trace's starting point.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The master playlist's URL.
        url: String,
    },
    /// Print a signed URL for a path under `[signed_urls]` (HMAC-SHA256, expiring).
    Sign {
        /// The path to sign (`/video/seg_1.ts`).
        #[arg(long)]
        path: String,
        /// Key id, as named in the edges' `[signed_urls.keys]`.
        #[arg(long)]
        key_id: String,
        /// The key's secret (or SHOAL_SIGNING_SECRET).
        #[arg(long, env = "SHOAL_SIGNING_SECRET", hide_env_values = true)]
        secret: String,
        /// How long the URL is valid.
        #[arg(long, default_value = "1h")]
        ttl: shoal_cache_core::size::HumanDuration,
        /// Bind the URL to this client address.
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
    },
    /// Purge objects at every edge through the origin's admin API (by key, prefix or tag).
    Purge {
        /// The origin's admin address.
        #[arg(long, default_value = "127.0.0.1:9090")]
        origin: SocketAddr,
        /// The origin's admin token (or SHOAL_ADMIN_TOKEN).
        #[arg(long, env = "SHOAL_ADMIN_TOKEN", hide_env_values = true)]
        token: String,
        /// Paths to purge (every query variant; `/p?q` for one). Repeatable.
        #[arg(long = "key", conflicts_with_all = ["prefix", "tag"], required_unless_present_any = ["prefix", "tag"])]
        keys: Vec<String>,
        /// Purge every path under this prefix.
        #[arg(long, conflicts_with = "tag")]
        prefix: Option<String>,
        /// Purge every object carrying this surrogate key.
        #[arg(long)]
        tag: Option<String>,
        /// Mark stale instead of dropping (stale-while-revalidate and stale-if-error still
        /// apply).
        #[arg(long)]
        soft: bool,
        /// Return once every subscribed edge has applied it.
        #[arg(long)]
        wait: bool,
    },
    /// Measure the consistency modes: writers and readers in 2 regions, region 1 cut off
    /// from the origin for a while; prints the CAP table.
    Cap {
        /// Length of each phase (connected, cut off, healed).
        #[arg(long, default_value = "3s")]
        phase: shoal_cache_core::size::HumanDuration,
        /// Share of packets dropped, duplicated and reordered (each) on every link to the
        /// origin, both ways, for the whole run.
        #[arg(long, default_value_t = 0.0)]
        faults: f64,
        /// Seed of the fault generators (a failing run replays with the same seed).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Open-loop load through a region: a 10× spike of Zipf requests by default, or the
    /// phases of a scenario file; prints a table per phase and writes JSON and HTML reports.
    Loadgen {
        /// Region edges, `id=addr` (repeatable); as for `get`.
        #[arg(long = "edge", value_parser = shoal_edge::config::parse_peer)]
        edges: Vec<(String, HostPort)>,
        /// The region's edge config (TOML), for routing; as for `get`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Send to the edges in turn instead of to each key's owner.
        #[arg(long)]
        round_robin: bool,
        /// HTTP/2 (h2c) instead of HTTP/1.1.
        #[arg(long)]
        http2: bool,
        /// Scenario file: `[[phase]]` tables (name, duration, rate, rate_to, burst, keys).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Baseline requests per second of the default spike.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Spike factor of the default spike.
        #[arg(long, default_value_t = 10.0)]
        factor: f64,
        /// Length of each of the default spike's three phases.
        #[arg(long, default_value = "10s")]
        phase: shoal_cache_core::size::HumanDuration,
        /// Objects the default spike's Zipf keys range over (`<URL path><n>`).
        #[arg(long, default_value_t = 1000)]
        objects: u64,
        /// Zipf skew of the default spike.
        #[arg(long, default_value_t = 0.9)]
        alpha: f64,
        /// Edge admin addresses (`host:port`) to scrape `/metrics` from each second
        /// (repeatable).
        #[arg(long = "metrics")]
        metrics: Vec<HostPort>,
        /// Where the JSON and HTML reports go.
        #[arg(long, default_value = "target/loadgen")]
        out: PathBuf,
        /// Seed of the key draws.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// `http://host/prefix/`: the Host requests carry, and the default keys' prefix.
        url: String,
    },
    /// Play a cold audience through a region twice, edges without and with CMCD prefetch,
    /// and compare segment hit ratio, startup and origin fetches.
    Prefetch {
        /// Viewers.
        #[arg(long, default_value_t = 8)]
        players: usize,
        /// Milliseconds between two viewers' joins.
        #[arg(long, default_value_t = 500)]
        stagger_ms: u64,
        /// Segments each viewer plays (of 2 s).
        #[arg(long, default_value_t = 20)]
        segments: u64,
        /// One-way delay to the origin, milliseconds.
        #[arg(long, default_value_t = 25)]
        delay_ms: u64,
        /// Print the reports as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Overload one edge ten times over with distinct misses in front of a distant origin:
    /// capacity, goodput during the overload, how fast refusals come, and recovery.
    Overload {
        /// The overload as a multiple of the measured capacity.
        #[arg(long, default_value_t = 10.0)]
        factor: f64,
        /// The edge's fill slots.
        #[arg(long, default_value_t = 32)]
        max_fills: usize,
        /// The edge's fill queue.
        #[arg(long, default_value_t = 128)]
        max_fill_queue: usize,
        /// One-way delay to the origin, milliseconds.
        #[arg(long, default_value_t = 25)]
        delay_ms: u64,
        /// Seconds of the overload (the baseline lasts half of it, the after phase as long).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Where the JSON and HTML reports go.
        #[arg(long, default_value = "target/overload")]
        out: PathBuf,
    },
    /// Play every ABR rule over real throughput traces in simulated time and print QoE.
    Abr {
        /// Directory of `time_s<TAB>Mbit/s` traces (one level of subdirectories).
        #[arg(long, default_value = "../shared/abr-traces")]
        traces: PathBuf,
        /// Rules (throughput, bba, bola, dynamic, mpc); comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "throughput,bba,bola,dynamic,mpc"
        )]
        rules: Vec<String>,
        /// Rung bitrates in bits/s, ascending; default the origin's synthetic ladder.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "400000,800000,2500000,5000000"
        )]
        bitrates: Vec<u64>,
        /// 2 s segments per session.
        #[arg(long, default_value_t = 150)]
        segments: u64,
        /// Also play every rule with mid-segment abandonment (rows `<rule>+abandon`).
        #[arg(long)]
        abandon: bool,
        /// Print every session as JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Replay a request trace through every cache policy and print hit ratios.
    Hitrate {
        /// Trace file (`timestamp,object_id,size` CSV, gzip or plain).
        #[arg(long)]
        trace: PathBuf,
        /// Capacity: bytes (`64MiB`), share of unique bytes (`1%`), objects (`1435obj`) or
        /// share of distinct objects (`1%obj`). Comma-separated for several runs.
        #[arg(long, value_delimiter = ',', required = true)]
        capacity: Vec<String>,
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = matches!(
        cli.command,
        Command::Demo { .. }
            | Command::Get { .. }
            | Command::Probe { .. }
            | Command::Hitrate { .. }
            | Command::Sign { .. }
            | Command::Purge { .. }
            | Command::Cap { .. }
            | Command::Abr { .. }
            | Command::Play { .. }
            | Command::Prefetch { .. }
            | Command::Overload { .. }
            | Command::Loadgen { .. }
    );
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // `cap` cuts a region off on purpose: the edges' warnings about it are expected.
        let level = match (&cli.command, quiet) {
            (Command::Cap { .. }, _) => "error",
            (_, true) => "warn",
            _ => "info",
        };
        tracing_subscriber::EnvFilter::new(level)
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A client for the region behind `url`: routing uses the edges' config (its vnodes, key
/// policy and peers) when given, else the listed edges, else the URL's own host.
async fn region_client(
    edges: &[(String, HostPort)],
    config: Option<&std::path::Path>,
    url: &str,
) -> anyhow::Result<(shoal_client::RegionClient, String)> {
    // Only the routing part of the edges' config matters here.
    let region = match config {
        Some(p) => EdgeConfig::from_toml(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )?,
        None => EdgeConfig::default(),
    };
    let uri: http::Uri = url.parse().with_context(|| format!("URL {url:?}"))?;
    let host = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .context("URL needs a host")?;
    // Names through hickory, not the C library: the static image has no NSS.
    let list = if !edges.is_empty() {
        let mut listed = Vec::new();
        for (id, hp) in edges {
            let addr = shoal_edge::lookup(hp)
                .await
                .with_context(|| format!("edge {id}"))?;
            listed.push((id.clone(), addr));
        }
        listed
    } else if !region.peers.is_empty() {
        let mut configured = vec![(region.node_id.clone(), region.listen)];
        for (id, hp) in region.peers.iter().filter(|(id, _)| **id != region.node_id) {
            let addr = shoal_edge::lookup(hp)
                .await
                .with_context(|| format!("peer {id}"))?;
            configured.push((id.clone(), addr));
        }
        configured
    } else {
        let addr = tokio::net::lookup_host(&host)
            .await?
            .next()
            .context("host did not resolve")?;
        vec![(host.clone(), addr)]
    };
    let map = shoal_cache_core::RegionMap::new(
        region.vnodes,
        list.iter().map(|(id, _)| id.as_str()),
        region.key_policy(),
    )?;
    let client = shoal_client::RegionClient::new(list, &host, map)?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    Ok((client, path))
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo {
            objects,
            concurrency,
            purges,
            players,
            duration,
            spike_rate,
            json,
        } => {
            let phase = duration.get() / 3;
            let spike = (!phase.is_zero()).then(|| shoal_loadgen::demo::SpikeConfig {
                rate: spike_rate,
                phase,
                ..Default::default()
            });
            let report = shoal_loadgen::demo::run(shoal_loadgen::demo::DemoConfig {
                objects,
                concurrency: concurrency.max(1),
                purges,
                players,
                spike,
                ..Default::default()
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", shoal_loadgen::demo::render(&report));
            }
            let errors: u64 = report.regions.iter().map(|r| r.errors).sum();
            if errors > 0 {
                bail!("{errors} requests failed");
            }
            let failed: u64 = report.video.iter().map(|v| v.failed).sum();
            if failed > 0 {
                bail!("{failed} viewers failed");
            }
            if let Some(f) = report.front.as_ref().filter(|f| f.errors > 0) {
                bail!("{} requests in front of the HTTP server failed", f.errors);
            }
            let spike_errors: u64 = report
                .spike
                .iter()
                .flat_map(|s| &s.results.phases)
                .map(|p| p.errors)
                .sum();
            if spike_errors > 0 {
                bail!("{spike_errors} spike requests failed");
            }
            if report.purge.incomplete > 0 {
                bail!(
                    "{} purges were not applied at every edge in time",
                    report.purge.incomplete
                );
            }
            Ok(())
        }
        Command::Origin(flags) => {
            let origin = shoal_origin::Origin::start(OriginConfig::load(flags)?, None).await?;
            println!(
                "origin: quic {} admin {} fingerprint {}",
                origin.quic_addr, origin.admin_addr, origin.fingerprint
            );
            let token = origin.shutdown_token();
            tokio::spawn(async move {
                shutdown_signal().await;
                token.cancel();
            });
            origin.wait().await;
            Ok(())
        }
        Command::Edge(flags) => {
            let edge = shoal_edge::Edge::start(EdgeConfig::load(flags)?).await?;
            println!(
                "edge {}: http {} admin {}",
                edge.node_id(),
                edge.http_addr,
                edge.admin_addr
            );
            shutdown_signal().await;
            edge.shutdown().await;
            Ok(())
        }
        Command::Front {
            upstream,
            listen,
            admin_listen,
            capacity,
        } => {
            let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
            let mut oc = OriginConfig {
                quic_listen: loopback,
                admin_listen: loopback,
                ..OriginConfig::default()
            };
            oc.upstream = Some(shoal_origin::UpstreamConfig {
                url: upstream.clone(),
                ..Default::default()
            });
            oc.validate()?;
            let origin = shoal_origin::Origin::start(oc, None).await?;
            let mut ec = EdgeConfig {
                listen,
                admin_listen,
                pass_through: true,
                ..EdgeConfig::default()
            };
            ec.origin.addr = origin.quic_addr.into();
            ec.origin.fingerprint = Some(origin.fingerprint.clone());
            ec.cache.capacity = capacity;
            let edge = shoal_edge::Edge::start(ec).await?;
            println!(
                "shoal in front of {upstream}: http://{} (admin {}, origin quic {})",
                edge.http_addr, edge.admin_addr, origin.quic_addr
            );
            shutdown_signal().await;
            edge.shutdown().await;
            origin.shutdown().await;
            Ok(())
        }
        Command::Probe { url, timeout_ms } => {
            let uri: http::Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
            if uri.scheme_str() != Some("http") || uri.host().is_none() {
                bail!("probe needs an http://host:port/path URL, got {url:?}");
            }
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Empty<bytes::Bytes>>();
            let limit = std::time::Duration::from_millis(timeout_ms);
            let status = tokio::time::timeout(limit, client.get(uri))
                .await
                .map_err(|_| anyhow::anyhow!("{url}: no answer within {timeout_ms} ms"))?
                .with_context(|| url.clone())?
                .status();
            if !status.is_success() {
                bail!("{url}: {status}");
            }
            Ok(())
        }
        Command::Get {
            edges,
            config,
            urls,
        } => {
            for url in urls {
                let (client, path) = region_client(&edges, config.as_deref(), &url).await?;
                let f = client.get(&path).await?;
                println!(
                    "{url}\n  edge {}  status {}  cache-status {:?}  age {:?}  bytes {}  ttfb {:.2} ms  total {:.2} ms  failovers {}",
                    f.edge,
                    f.status,
                    f.cache_status.unwrap_or_default(),
                    f.age,
                    f.body.len(),
                    f.ttfb.as_secs_f64() * 1e3,
                    f.total.as_secs_f64() * 1e3,
                    f.failovers
                );
            }
            Ok(())
        }
        Command::Cap {
            phase,
            faults,
            seed,
            json,
        } => {
            if !(0.0..=1.0).contains(&faults) {
                bail!("--faults must be between 0 and 1, got {faults}");
            }
            let rows = shoal_loadgen::cap::run(shoal_loadgen::cap::CapConfig {
                phase: phase.get(),
                faults: shoal_loadgen::harness::relay::Faults {
                    drop: faults,
                    duplicate: faults,
                    reorder: faults,
                    reorder_window: std::time::Duration::from_millis(5),
                    ..Default::default()
                },
                seed,
                ..Default::default()
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", shoal_loadgen::cap::render(&rows));
            }
            Ok(())
        }
        Command::Play {
            edges,
            config,
            rule,
            segments,
            speed,
            no_verify,
            trace,
            seed,
            url,
        } => {
            let (client, path) = region_client(&edges, config.as_deref(), &url).await?;
            let network = match trace {
                Some(file) => {
                    let trace = shoal_client::abr::Trace::read(&file)?;
                    let start = fastrand::Rng::with_seed(seed).f64() * trace.period();
                    Some(shoal_client::player::Shaping {
                        trace,
                        rtt: 0.08,
                        start,
                    })
                }
                None => None,
            };
            let cfg = shoal_client::player::PlayConfig {
                rule: rule.parse()?,
                segments,
                speed,
                verify: !no_verify,
                network,
                ..Default::default()
            };
            let r = shoal_client::player::play(&client, &path, &cfg).await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        Command::Loadgen {
            edges,
            config,
            round_robin,
            http2,
            scenario,
            rate,
            factor,
            phase,
            objects,
            alpha,
            metrics,
            out,
            seed,
            url,
        } => {
            use shoal_loadgen::load::{self, Keys, Plan, Target};
            let (client, prefix) = region_client(&edges, config.as_deref(), &url).await?;
            let plan = match scenario {
                Some(file) => Plan::from_toml(
                    &std::fs::read_to_string(&file)
                        .with_context(|| format!("reading {}", file.display()))?,
                )?,
                None => {
                    let keys = Keys::Zipf {
                        prefix,
                        objects,
                        alpha,
                    };
                    let plan = Plan::spike(rate, factor, [phase.get(); 3], keys);
                    plan.check()?;
                    plan
                }
            };
            let mut plan = plan;
            plan.http2 |= http2;
            let target = if round_robin {
                let addrs = if edges.is_empty() {
                    bail!("--round-robin needs the region's edges (--edge id=addr)");
                } else {
                    client.edges().iter().map(|e| e.1).collect()
                };
                Target::RoundRobin(client.with_timeout(plan.timeout.get()), addrs)
            } else {
                Target::Region(client.with_timeout(plan.timeout.get()))
            };
            eprintln!(
                "loadgen: {} phases, {:.0} s, open loop",
                plan.phases.len(),
                plan.duration().as_secs_f64()
            );
            let mut scraped = Vec::new();
            for hp in &metrics {
                scraped.push(
                    shoal_edge::lookup(hp)
                        .await
                        .with_context(|| format!("--metrics {hp}"))?,
                );
            }
            let opts = load::Options {
                metrics: scraped,
                progress: true,
                seed,
            };
            // On the runtime's workers, not the main thread: with one worker the dispatcher
            // and the connections then share a thread, and a request queued is not a
            // wake-up of another thread (a context switch per request on one core).
            let r = tokio::spawn(async move { load::run::run(&plan, &target, &opts).await })
                .await
                .context("the load run stopped")??;
            print!("{}", load::report::table(&r));
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let json = out.join("loadgen.json");
            std::fs::write(&json, serde_json::to_string_pretty(&r)?)?;
            let html = out.join("loadgen.html");
            std::fs::write(&html, load::report::html("Shoal loadgen", &r))?;
            println!("\nreports: {} {}", json.display(), html.display());
            Ok(())
        }
        Command::Prefetch {
            players,
            stagger_ms,
            segments,
            delay_ms,
            json,
        } => {
            use shoal_loadgen::audience;
            let cfg = audience::AudienceConfig {
                players,
                stagger: std::time::Duration::from_millis(stagger_ms),
                segments,
                link_delay: std::time::Duration::from_millis(delay_ms),
                ..Default::default()
            };
            let runs = vec![
                audience::run(&cfg, false).await?,
                audience::run(&cfg, true).await?,
            ];
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
            } else {
                print!("{}", audience::render(&cfg, &runs));
            }
            Ok(())
        }
        Command::Overload {
            factor,
            max_fills,
            max_fill_queue,
            delay_ms,
            seconds,
            out,
        } => {
            use shoal_loadgen::overload;
            if !(1.0..=100.0).contains(&factor) || seconds == 0 || seconds > 600 {
                bail!("--factor must be 1 to 100 and --seconds 1 to 600");
            }
            let secs = std::time::Duration::from_secs;
            let cfg = overload::OverloadConfig {
                factor,
                max_fills,
                max_fill_queue,
                link_delay: std::time::Duration::from_millis(delay_ms),
                phases: [secs(seconds.div_ceil(2)), secs(seconds), secs(seconds)],
                ..Default::default()
            };
            let r = overload::run(&cfg).await?;
            println!("{}", overload::render(&cfg, &r));
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            std::fs::write(out.join("overload.json"), serde_json::to_string_pretty(&r)?)?;
            let html = out.join("overload.html");
            let title = format!("Shoal: {factor}× overload of one edge");
            std::fs::write(&html, shoal_loadgen::load::report::html(&title, &r.run))?;
            println!(
                "reports: {} {}",
                out.join("overload.json").display(),
                html.display()
            );
            Ok(())
        }
        Command::Abr {
            traces,
            rules,
            bitrates,
            segments,
            abandon,
            json,
        } => {
            let rules = rules
                .iter()
                .map(|r| r.parse())
                .collect::<Result<Vec<shoal_client::abr::Rule>, _>>()?;
            if bitrates.is_empty() || bitrates.windows(2).any(|w| w[1] <= w[0]) {
                bail!("--bitrates must be ascending and not empty");
            }
            if segments == 0 || segments > 100_000 {
                bail!("--segments must be between 1 and 100000");
            }
            let mut sessions =
                shoal_loadgen::abr::evaluate(&traces, &rules, &bitrates, segments, false)?;
            if abandon {
                sessions.extend(shoal_loadgen::abr::evaluate(
                    &traces, &rules, &bitrates, segments, true,
                )?);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&sessions)?);
            } else {
                print!("{}", shoal_loadgen::abr::render(&sessions));
            }
            Ok(())
        }
        Command::Purge {
            origin,
            token,
            keys,
            prefix,
            tag,
            soft,
            wait,
        } => {
            let client = shoal_client::AdminClient::new(origin, token);
            let p = shoal_client::Purge {
                keys,
                prefix,
                tag,
                soft,
                wait,
            };
            let r = client.purge(&p).await?;
            let how = if soft { "soft purge" } else { "purge" };
            if wait {
                println!(
                    "{how} seq {}: applied at {}/{} subscribed edges{}",
                    r.seq,
                    r.acked,
                    r.subscribers,
                    if r.everywhere {
                        ""
                    } else {
                        " (the rest apply it when they return, or reset)"
                    }
                );
                if !r.everywhere {
                    anyhow::bail!("not every edge applied seq {} in time", r.seq);
                }
            } else {
                println!(
                    "{how} seq {}: sent to {} subscribed edges",
                    r.seq, r.subscribers
                );
            }
            Ok(())
        }
        Command::Sign {
            path,
            key_id,
            secret,
            ttl,
            ip,
        } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .context("the clock is before 1970")?;
            let expires = (now + ttl.get()).as_secs();
            let query = shoal_edge::request::sign::sign(&path, expires, ip, &key_id, &secret);
            println!("{path}?{query}");
            Ok(())
        }
        Command::Hitrate {
            trace,
            capacity,
            json,
        } => {
            let caps = capacity
                .iter()
                .map(|c| Ok((c.clone(), c.parse::<Capacity>()?)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let trace = Trace::load(&trace)?;
            let report = hitrate::run(&trace, &caps)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).context("encoding the report")?
                );
            } else {
                print!("{}", hitrate::render(&report));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand that takes `--edge` parses it into the type it reads (clap checks
    /// that only when the arguments are read, so a mismatch would panic at run time).
    #[test]
    fn edges_parse_by_address_and_by_name() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        for sub in ["get", "play", "loadgen"] {
            let cli = Cli::try_parse_from([
                "shoal",
                sub,
                "--edge",
                "eu-1=127.0.0.1:8081",
                "--edge",
                "eu-2=eu-2.shoal.test:8080",
                "http://example.test/",
            ])
            .unwrap_or_else(|e| panic!("{sub}: {e}"));
            let (Command::Get { edges, .. }
            | Command::Play { edges, .. }
            | Command::Loadgen { edges, .. }) = cli.command
            else {
                panic!("{sub} parsed as another command");
            };
            let shown: Vec<String> = edges.iter().map(|(id, hp)| format!("{id}={hp}")).collect();
            assert_eq!(
                shown,
                ["eu-1=127.0.0.1:8081", "eu-2=eu-2.shoal.test:8080"],
                "{sub}"
            );
        }
        let bad = Cli::try_parse_from(["shoal", "get", "--edge", "eu-1", "http://x/"]);
        assert!(bad.is_err_and(|e| e.to_string().contains("expected id=addr")));
    }
}
