//! `shoal`: one binary for every Shoal role and tool. Each subcommand parses its flags,
//! loads its config, and calls into the libraries.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use shoal_loadgen::hitrate::{self, Capacity};
use shoal_loadgen::trace::Trace;

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
    /// through every region twice, then a per-region summary.
    Demo {
        /// Objects generated at the origin.
        #[arg(long, default_value_t = 120)]
        objects: usize,
        /// Concurrent clients per region.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run an origin: objects over QUIC for edges, admin HTTP for writes and metrics.
    Origin {
        /// TOML config file (flags override it).
        #[arg(long)]
        config: Option<PathBuf>,
        /// QUIC listen address.
        #[arg(long)]
        quic_listen: Option<SocketAddr>,
        /// Admin HTTP listen address.
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
        /// Content directory served read-only.
        #[arg(long)]
        content_dir: Option<PathBuf>,
        /// Bearer token for PUT/DELETE (or SHOAL_ADMIN_TOKEN).
        #[arg(long, env = "SHOAL_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Write the (generated) certificate here, for edges to pin.
        #[arg(long)]
        cert_out: Option<PathBuf>,
    },
    /// Run an edge.
    Edge {
        /// TOML config file (flags override it).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Client HTTP listen address.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Admin listen address.
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
        /// Node id on the ring.
        #[arg(long)]
        node_id: Option<String>,
        /// Region name.
        #[arg(long)]
        region: Option<String>,
        /// A region peer, `id=addr` (repeatable).
        #[arg(long = "peer")]
        peers: Vec<String>,
        /// Origin QUIC address.
        #[arg(long)]
        origin: Option<SocketAddr>,
        /// Origin certificate (PEM) to pin.
        #[arg(long)]
        origin_cert: Option<PathBuf>,
        /// Origin certificate SHA-256 (hex) to pin.
        #[arg(long)]
        origin_fingerprint: Option<String>,
        /// Cache capacity (`256MiB`).
        #[arg(long)]
        capacity: Option<String>,
        /// Eviction policy: s3fifo, lru, tinylfu.
        #[arg(long)]
        policy: Option<String>,
    },
    /// GET URLs through a region's edges and print status, Cache-Status and timings.
    Get {
        /// Region edges, `id=addr` (repeatable); default: the URL's own host:port.
        #[arg(long = "edge")]
        edges: Vec<String>,
        /// URLs (`http://host/path`).
        #[arg(required = true)]
        urls: Vec<String>,
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
        Command::Demo { .. } | Command::Get { .. } | Command::Hitrate { .. }
    );
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if quiet { "warn" } else { "info" })
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

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn id_addr(s: &str) -> anyhow::Result<(String, SocketAddr)> {
    let Some((id, addr)) = s.split_once('=') else {
        bail!("expected id=addr, got {s:?}");
    };
    Ok((
        id.to_string(),
        addr.parse().with_context(|| format!("address in {s:?}"))?,
    ))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo {
            objects,
            concurrency,
            json,
        } => {
            let report = shoal_loadgen::demo::run(shoal_loadgen::demo::DemoConfig {
                objects,
                concurrency: concurrency.max(1),
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
            Ok(())
        }
        Command::Origin {
            config,
            quic_listen,
            admin_listen,
            content_dir,
            admin_token,
            cert_out,
        } => {
            let mut c = match &config {
                Some(p) => shoal_origin::OriginConfig::from_toml(&read(p)?)?,
                None => shoal_origin::OriginConfig::default(),
            };
            c.quic_listen = quic_listen.unwrap_or(c.quic_listen);
            c.admin_listen = admin_listen.unwrap_or(c.admin_listen);
            c.content_dir = content_dir.or(c.content_dir);
            c.admin_token = admin_token.or(c.admin_token);
            c.cert_out = cert_out.or(c.cert_out);
            let origin = shoal_origin::Origin::start(c, None).await?;
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
        Command::Edge {
            config,
            listen,
            admin_listen,
            node_id,
            region,
            peers,
            origin,
            origin_cert,
            origin_fingerprint,
            capacity,
            policy,
        } => {
            let mut c = match &config {
                Some(p) => shoal_edge::EdgeConfig::from_toml(&read(p)?)?,
                None => shoal_edge::EdgeConfig::default(),
            };
            c.listen = listen.unwrap_or(c.listen);
            c.admin_listen = admin_listen.unwrap_or(c.admin_listen);
            c.node_id = node_id.unwrap_or(c.node_id);
            c.region = region.unwrap_or(c.region);
            for p in &peers {
                let (id, addr) = id_addr(p)?;
                c.peers.insert(id, addr);
            }
            c.origin.addr = origin.unwrap_or(c.origin.addr);
            c.origin.cert_file = origin_cert.or(c.origin.cert_file);
            c.origin.fingerprint = origin_fingerprint.or(c.origin.fingerprint);
            c.cache.capacity = capacity.unwrap_or(c.cache.capacity);
            c.cache.policy = policy.unwrap_or(c.cache.policy);
            let edge = shoal_edge::Edge::start(c.settings()?).await?;
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
        Command::Get { edges, urls } => {
            for url in urls {
                let uri: http::Uri = url.parse().with_context(|| format!("URL {url:?}"))?;
                let host = uri
                    .authority()
                    .map(|a| a.as_str().to_string())
                    .context("URL needs a host")?;
                let list = if edges.is_empty() {
                    let addr = tokio::net::lookup_host(&host)
                        .await?
                        .next()
                        .context("host did not resolve")?;
                    vec![(host.clone(), addr)]
                } else {
                    edges
                        .iter()
                        .map(|e| id_addr(e))
                        .collect::<anyhow::Result<_>>()?
                };
                let client = shoal_client::RegionClient::new(
                    list,
                    &host,
                    shoal_cache_core::ring::DEFAULT_VNODES,
                )?;
                let path = uri.path_and_query().map_or("/", |p| p.as_str());
                let f = client.get(path).await?;
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
