//! A cold audience, with and without CMCD prefetch: what `shoal prefetch` measures.
//!
//! One region of edges in front of an origin reached over a link with a round trip of
//! `2 × link_delay` (a relay on loopback), a VOD ladder nobody has watched, and `players`
//! viewers joining `stagger` apart. Each plays in accelerated time with a small buffer
//! target, so in steady state it asks for a segment only when its buffer has room: the
//! time a prefetch has to bring the next segment in. The run is repeated on a fresh
//! cluster with `prefetch.enabled`, and the two are compared on segment hit ratio (hits
//! only: a request that joined a fill in progress counts as a miss), startup and origin
//! fetches.

use std::time::Duration;

use serde::Serialize;
use shoal_cache_core::video::LadderConfig;
use shoal_client::player::{PlayConfig, play};

use crate::LoadgenError;
use crate::harness::cluster::{Cluster, ClusterSpec};

/// The audience.
#[derive(Debug, Clone)]
pub struct AudienceConfig {
    /// Viewers.
    pub players: usize,
    /// Wall time between two viewers' joins.
    pub stagger: Duration,
    /// Segments each viewer plays.
    pub segments: u64,
    /// Media seconds per wall second.
    pub speed: f64,
    /// Buffer target, media seconds.
    pub max_buffer: f64,
    /// One-way delay added between the edges and the origin.
    pub link_delay: Duration,
}

impl Default for AudienceConfig {
    fn default() -> Self {
        Self {
            players: 8,
            stagger: Duration::from_millis(500),
            segments: 20,
            speed: 4.0,
            max_buffer: 6.0,
            link_delay: Duration::from_millis(25),
        }
    }
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct AudienceReport {
    /// Whether the edges prefetched.
    pub prefetch: bool,
    /// Viewers that finished.
    pub players: usize,
    /// Viewers that failed.
    pub failed: usize,
    /// Segments played.
    pub segments: u64,
    /// Of which cache hits.
    pub hits: u64,
    /// Of which joined a fill in progress.
    pub collapsed: u64,
    /// Startup (media seconds waited before the first segment could play), median.
    pub startup_p50_s: f64,
    /// Startup, worst viewer.
    pub startup_max_s: f64,
    /// Mean QoE per 4 s of media.
    pub qoe_4s: f64,
    /// Origin fetches the region made.
    pub origin_fetches: u64,
    /// Prefetches the edges completed.
    pub prefetched: u64,
}

impl AudienceReport {
    /// Hits ÷ segments.
    pub fn hit_ratio(&self) -> f64 {
        self.hits as f64 / self.segments.max(1) as f64
    }
}

const LADDER: &str = "cold";

/// Plays the audience on a fresh cluster, edges prefetching or not.
pub async fn run(cfg: &AudienceConfig, prefetch: bool) -> Result<AudienceReport, LoadgenError> {
    let mut spec = ClusterSpec {
        regions: vec!["r0".into()],
        relay: true,
        ..ClusterSpec::default()
    };
    spec.origin.ladders = vec![LadderConfig::named(LADDER)];
    spec.edge.prefetch.enabled = prefetch;
    let cluster = Cluster::start(spec).await?;
    cluster.wait_ready(Duration::from_secs(10)).await?;
    if let Some(r) = &cluster.relay {
        r.set_delay(cfg.link_delay);
    }
    let client = cluster.client(0)?;
    let play_cfg = PlayConfig {
        segments: cfg.segments,
        speed: cfg.speed,
        max_buffer: cfg.max_buffer,
        ..PlayConfig::default()
    };
    let master = format!("/video/{LADDER}/master.m3u8");
    let mut set = tokio::task::JoinSet::new();
    for i in 0..cfg.players {
        let (client, master, play_cfg) = (client.clone(), master.clone(), play_cfg.clone());
        let wait = cfg.stagger * u32::try_from(i).unwrap_or(u32::MAX);
        set.spawn(async move {
            tokio::time::sleep(wait).await;
            play(&client, &master, &play_cfg).await
        });
    }
    let mut r = AudienceReport {
        prefetch,
        players: 0,
        failed: 0,
        segments: 0,
        hits: 0,
        collapsed: 0,
        startup_p50_s: 0.0,
        startup_max_s: 0.0,
        qoe_4s: 0.0,
        origin_fetches: 0,
        prefetched: 0,
    };
    let (mut startups, mut qoe) = (Vec::new(), 0.0);
    while let Some(done) = set.join_next().await {
        match done {
            Ok(Ok(p)) => {
                r.players += 1;
                r.segments += p.segments;
                r.hits += p.hits;
                r.collapsed += p.collapsed;
                startups.push(p.qoe.startup_s);
                qoe += p.qoe.qoe_4s;
            }
            Ok(Err(e)) => {
                tracing::warn!("viewer failed: {e}");
                r.failed += 1;
            }
            Err(e) => return Err(LoadgenError::Task(e.to_string())),
        }
    }
    startups.sort_by(f64::total_cmp);
    r.startup_p50_s = startups.get(startups.len() / 2).copied().unwrap_or(0.0);
    r.startup_max_s = startups.last().copied().unwrap_or(0.0);
    r.qoe_4s = qoe / r.players.max(1) as f64;
    for e in cluster.regions[0].edges.iter().flatten() {
        r.origin_fetches += e.origin_fetches("ok");
        r.prefetched += e.prefetches("fetched");
    }
    cluster.shutdown().await;
    Ok(r)
}

/// The comparison as a table.
pub fn render(cfg: &AudienceConfig, runs: &[AudienceReport]) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "cold audience: {} viewers joining {:.1} s apart, {} segments each at {}x, buffer target {} s, origin RTT {} ms\n\n",
        cfg.players,
        cfg.stagger.as_secs_f64(),
        cfg.segments,
        cfg.speed,
        cfg.max_buffer,
        2 * cfg.link_delay.as_millis()
    );
    let _ = writeln!(
        out,
        "{:<9} {:>9} {:>10} {:>10} {:>16} {:>8} {:>14} {:>11}",
        "prefetch",
        "segments",
        "hit ratio",
        "collapsed",
        "startup p50/max",
        "QoE/4s",
        "origin fetches",
        "prefetched"
    );
    for r in runs {
        let _ = writeln!(
            out,
            "{:<9} {:>9} {:>9.1}% {:>10} {:>9.2}/{:<5.2}s {:>8.2} {:>14} {:>11}{}",
            if r.prefetch { "on" } else { "off" },
            r.segments,
            100.0 * r.hit_ratio(),
            r.collapsed,
            r.startup_p50_s,
            r.startup_max_s,
            r.qoe_4s,
            r.origin_fetches,
            r.prefetched,
            if r.failed > 0 {
                format!("  ({} viewers failed)", r.failed)
            } else {
                String::new()
            }
        );
    }
    out
}
