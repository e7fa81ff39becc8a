//! `shoal play`: an HLS player over a [`RegionClient`]. It parses the master and media
//! playlists (m3u8-rs), picks a rendition for every segment with an [`abr`](crate::abr)
//! rule, downloads through the region's edges, verifies each segment (synthetic ladders),
//! keeps a playback buffer and accounts stalls, and follows live playlists.
//!
//! Time is media time: `speed` > 1 plays VOD in accelerated simulated time (every wall
//! second counts as `speed` media seconds, throughput included); live plays in real time.

use std::time::{Duration, Instant};

use m3u8_rs::MediaPlaylist;
use serde::Serialize;

use crate::abr::{self, Bola, Context, Estimator, Played, Qoe, Rule};
use crate::{ClientError, RegionClient};
use shoal_cache_core::cmcd::{Cmcd, ObjectType};

/// Player settings.
#[derive(Debug, Clone)]
pub struct PlayConfig {
    /// ABR rule.
    pub rule: Rule,
    /// Most segments to play (VOD stops at the end list sooner).
    pub segments: u64,
    /// Media seconds per wall second (VOD only; live is always 1).
    pub speed: f64,
    /// Buffer target, media seconds: no request while the buffer holds more.
    pub max_buffer: f64,
    /// Check every segment's synthetic header and checksum.
    pub verify: bool,
    /// Shape the download rate by a throughput trace (Pensieve's convention), on top of
    /// whatever the real network does.
    pub network: Option<Shaping>,
    /// Abandon a segment download part-way for a lower rung when finishing it would take
    /// more than 1.8 segment durations with under 18 s buffered (dash.js's default rule).
    pub abandon: bool,
    /// Send CTA-5004 CMCD with each segment request (query parameter `CMCD`), naming the
    /// next segment (`nor`) so an edge can prefetch it.
    pub cmcd: bool,
}

impl Default for PlayConfig {
    fn default() -> Self {
        Self {
            rule: Rule::Dynamic,
            segments: 30,
            speed: 1.0,
            max_buffer: 30.0,
            verify: true,
            cmcd: true,
            abandon: true,
            network: None,
        }
    }
}

/// A trace-shaped network for the player: each segment takes at least as long (in media
/// time) as `rtt` plus moving its bytes over `trace` from the session's current point, which
/// starts `start` seconds into the trace (pick it at random, seeded, as Pensieve does).
#[derive(Debug, Clone)]
pub struct Shaping {
    /// Throughput over time (wraps at its end).
    pub trace: abr::Trace,
    /// Seconds per request (Pensieve: 0.08).
    pub rtt: f64,
    /// Where in the trace the session starts, seconds.
    pub start: f64,
}

/// What a session did.
#[derive(Debug, Clone, Serialize)]
pub struct PlayReport {
    /// Segments played.
    pub segments: u64,
    /// Segments whose content checked out (with `verify`).
    pub verified: u64,
    /// Segments served from an edge's cache.
    pub hits: u64,
    /// Segments that joined another request's fill in flight (`Cache-Status: …; collapsed`).
    pub collapsed: u64,
    /// Body bytes of segments and initialisation sections.
    pub bytes: u64,
    /// Initialisation sections (EXT-X-MAP) fetched: one per rendition switch.
    pub init_fetches: u64,
    /// Rendition names chosen, in order.
    pub renditions: Vec<String>,
    /// Media playlist fetches (live reloads included).
    pub playlist_fetches: u64,
    /// Segment downloads abandoned part-way for a lower rung.
    pub abandoned: u64,
    /// QoE of the session.
    pub qoe: Qoe,
}

/// Errors of playback.
#[derive(Debug, thiserror::Error)]
pub enum PlayError {
    /// A request failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A playlist or segment answered with an error status.
    #[error("{path}: HTTP {status}")]
    Status {
        /// What was fetched.
        path: String,
        /// The status.
        status: u16,
    },
    /// A playlist did not parse.
    #[error("{path}: not a valid {kind} playlist: {reason}")]
    Playlist {
        /// What was fetched.
        path: String,
        /// Master or media.
        kind: &'static str,
        /// Why.
        reason: String,
    },
    /// A segment's content did not check out.
    #[error("{path}: {source}")]
    Segment {
        /// What was fetched.
        path: String,
        /// Why.
        source: shoal_cache_core::video::VideoError,
    },
    /// The settings cannot be played.
    #[error("{0}")]
    Config(String),
}

/// Joins a playlist-relative URI to the directory of `base` (a path).
/// A segment or map URI of a checked playlist as a path (checked again: it cannot fail
/// for a playlist that [`crate::playlist::media`] accepted).
fn join(base: &str, uri: &str) -> Result<String, PlayError> {
    crate::playlist::join(base, uri).map_err(|reason| PlayError::Playlist {
        path: base.into(),
        kind: "media",
        reason,
    })
}

struct Rendition {
    bitrate: u64,
    path: String,
    name: String,
    playlist: Option<MediaPlaylist>,
}

/// Plays `master` (a path on the region) until `cfg.segments` are played or the VOD ends.
pub async fn play(
    client: &RegionClient,
    master: &str,
    cfg: &PlayConfig,
) -> Result<PlayReport, PlayError> {
    if !(cfg.speed > 0.0 && cfg.speed <= 1000.0) || cfg.max_buffer <= 0.0 {
        return Err(PlayError::Config(
            "speed must be in (0, 1000] and max_buffer positive".into(),
        ));
    }
    let started = Instant::now();
    let session = format!("{:016x}", fastrand::u64(..));
    let body = fetch(client, master).await?.body;
    let mut rungs: Vec<Rendition> = crate::playlist::ladder(master, &body)?
        .into_iter()
        .map(|r| Rendition {
            bitrate: r.bitrate,
            path: r.path,
            name: r.name,
            playlist: None,
        })
        .collect();
    let bitrates: Vec<u64> = rungs.iter().map(|r| r.bitrate).collect();
    let bola = Bola::new(&bitrates);
    let mut state = abr::RuleState::default();
    let mut est = Estimator::default();
    let mut report = PlayReport {
        segments: 0,
        verified: 0,
        hits: 0,
        collapsed: 0,
        bytes: 0,
        init_fetches: 0,
        renditions: Vec::new(),
        playlist_fetches: 0,
        abandoned: 0,
        qoe: abr::qoe(&[], 0),
    };
    // Every rendition's playlist numbers the same segments; the first one decides where
    // playback starts (live: three segments behind the newest, as hls.js does).
    let first = load(client, &mut rungs[0], &mut report).await?;
    let live = !first.end_list;
    let speed = if live { 1.0 } else { cfg.speed };
    let mut next = if live {
        (first.media_sequence + first.segments.len() as u64).saturating_sub(3)
    } else {
        first.media_sequence
    };
    let segment_s = first
        .segments
        .first()
        .map_or(first.target_duration as f64, |s| f64::from(s.duration));
    let mut playback = Playback::new(speed);
    let mut played: Vec<Played> = Vec::new();
    let mut last_rung: Option<usize> = None;
    let mut current_init: Option<String> = None;
    let mut forced: Option<usize> = None;
    while report.segments < cfg.segments {
        let ctx = Context {
            buffer: playback.buffer,
            throughput: est.estimate(),
            last: last_rung,
            segment: segment_s,
            index: report.segments,
        };
        // A download abandoned for a lower rung is retried at that rung.
        let q = match forced.take() {
            Some(q) => q,
            None => abr::choose(cfg.rule, &bitrates, &bola, &mut state, &ctx),
        };
        // Find segment `next` in the chosen rendition's playlist, reloading a live one
        // (every half target duration) until it lists it.
        let uri = loop {
            if rungs[q].playlist.is_none() {
                load(client, &mut rungs[q], &mut report).await?;
            }
            let pl = rungs[q]
                .playlist
                .as_ref()
                .ok_or_else(|| PlayError::Config("a playlist vanished while playing".into()))?;
            let base = pl.media_sequence;
            if next < base {
                // Fell out of a live window: jump to its start.
                next = base;
            }
            let i = (next - base) as usize;
            if let Some(s) = pl.segments.get(i) {
                // The initialisation section (EXT-X-MAP) in force for this segment.
                let map = pl.segments[..=i]
                    .iter()
                    .rev()
                    .find_map(|s| s.map.as_ref())
                    .map(|m| m.uri.clone());
                let following = pl.segments.get(i + 1).map(|s| s.uri.clone());
                break Some((s.uri.clone(), map, following));
            }
            if pl.end_list {
                break None;
            }
            if started.elapsed() > Duration::from_secs(600) {
                return Err(PlayError::Config("live playlist stopped advancing".into()));
            }
            let wait = (pl.target_duration as f64 / 2.0).max(0.1);
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            rungs[q].playlist = None;
            let _ = playback.advance(report.segments);
        };
        let Some((uri, map, following)) = uri else {
            break;
        };
        // A new rendition (or a new map) needs its initialisation section first.
        if let Some(m) = map {
            let init = join(&rungs[q].path, &m)?;
            if current_init.as_deref() != Some(init.as_str()) {
                let f = fetch(client, &init).await?;
                report.bytes += f.body.len() as u64;
                report.init_fetches += 1;
                current_init = Some(init);
            }
        }
        let path = join(&rungs[q].path, &uri)?;
        let target = if cfg.cmcd {
            let data = Cmcd {
                // CTA-5004 rounds the buffer to 100 ms.
                buffer_ms: Some((playback.buffer * 10.0).round() as u64 * 100),
                bitrate_kbps: Some(bitrates[q] / 1000),
                duration_ms: Some((segment_s * 1000.0).round() as u64),
                throughput_kbps: est.estimate().map(|bps| (bps / 1000.0).round() as u64),
                // Relative to this segment's URL, as the playlist lists it.
                next: following,
                object: Some(ObjectType::Video),
                session: Some(session.clone()),
                startup: report.segments == 0,
                top_kbps: bitrates.last().map(|b| b / 1000),
            };
            let sep = if path.contains('?') { '&' } else { '?' };
            format!("{path}{sep}{}", data.to_query())
        } else {
            path.clone()
        };
        let asked = Instant::now();
        // Buffer left at the first byte decides abandonment (dash.js's AbandonRequestsRule).
        let buffered = playback.buffer;
        let mut switch_to = None;
        let fetched = if cfg.abandon && cfg.network.is_none() {
            let mut watch = |p: crate::Progress| {
                let elapsed = p.since_first_byte.as_secs_f64() * speed;
                let left = buffered - asked.elapsed().as_secs_f64() * speed;
                switch_to = abr::abandon_for(
                    &bitrates,
                    q,
                    segment_s,
                    left.max(0.0),
                    elapsed,
                    p.received as f64,
                );
                switch_to.is_none()
            };
            client.get_watched(&target, &[], &mut watch).await
        } else {
            client.get(&target).await
        };
        let f = match (fetched, switch_to) {
            (Err(ClientError::Abandoned { .. }), Some(to)) => {
                report.abandoned += 1;
                forced = Some(to);
                continue;
            }
            (r, _) => checked(&target, r?)?,
        };
        let mut transfer = (f.total.saturating_sub(f.ttfb)).as_secs_f64().max(1e-6) * speed;
        if let Some(net) = &cfg.network {
            // Media time of the request on the trace's clock; the segment may not arrive
            // sooner than the trace allows (a trace that never moves a byte ends the session).
            let at = net.start + asked.duration_since(started).as_secs_f64() * speed;
            let moved = net
                .trace
                .transfer(at + net.rtt, f.body.len() as f64)
                .ok_or_else(|| PlayError::Config("the network trace never moves a byte".into()))?;
            let took = asked.elapsed().as_secs_f64() * speed;
            // On the trace, the download may be dropped part-way for a lower rung.
            let dropped = cfg.abandon.then(|| {
                let left = buffered - net.rtt;
                abr::abandon_point(
                    &net.trace,
                    at + net.rtt,
                    moved,
                    &bitrates,
                    q,
                    segment_s,
                    left,
                )
            });
            let (due, abandoned) = match dropped.flatten() {
                Some((elapsed, to)) => (net.rtt + elapsed, Some(to)),
                None => (net.rtt + moved, None),
            };
            if due > took {
                tokio::time::sleep(Duration::from_secs_f64((due - took) / speed)).await;
            }
            if let Some(to) = abandoned {
                report.abandoned += 1;
                forced = Some(to);
                continue;
            }
            transfer = transfer.max(moved);
        }
        est.sample(f.body.len() as f64 * 8.0, transfer);
        state.mpc.sample(f.body.len() as f64 * 8.0 / transfer);
        if cfg.verify {
            shoal_cache_core::video::verify_segment(&f.body).map_err(|source| {
                PlayError::Segment {
                    path: path.clone(),
                    source,
                }
            })?;
            report.verified += 1;
        }
        let stall = playback.advance(report.segments);
        playback.buffer += segment_s;
        played.push(Played {
            bitrate: bitrates[q],
            duration: segment_s,
            stall,
        });
        report.segments += 1;
        report.hits += u64::from(f.is_hit());
        report.collapsed += u64::from(
            f.cache_status
                .as_deref()
                .is_some_and(|c| c.contains("collapsed")),
        );
        report.bytes += f.body.len() as u64;
        report.renditions.push(rungs[q].name.clone());
        last_rung = Some(q);
        next += 1;
        if playback.buffer > cfg.max_buffer {
            let over = playback.buffer - cfg.max_buffer;
            tokio::time::sleep(Duration::from_secs_f64(over / speed)).await;
            let _ = playback.advance(report.segments);
        }
    }
    report.qoe = abr::qoe(&played, bitrates[bitrates.len() - 1]);
    Ok(report)
}

/// The playback buffer in media time.
struct Playback {
    /// Media seconds buffered.
    buffer: f64,
    /// When the buffer was last drained.
    clock: Instant,
    /// Media seconds per wall second.
    speed: f64,
    /// Stall not yet charged to a segment.
    pending: f64,
}

impl Playback {
    fn new(speed: f64) -> Self {
        Self {
            buffer: 0.0,
            clock: Instant::now(),
            speed,
            pending: 0.0,
        }
    }

    /// Drains the buffer by the media time since the last call; returns the stall (the
    /// buffer ran dry, or playback has not started: `played` is 0) accumulated since the
    /// last segment was added.
    fn advance(&mut self, played: u64) -> f64 {
        let dt = self.clock.elapsed().as_secs_f64() * self.speed;
        self.clock = Instant::now();
        let dry = if played == 0 {
            dt
        } else {
            (dt - self.buffer).max(0.0)
        };
        self.buffer = (self.buffer - dt).max(0.0);
        self.pending += dry;
        std::mem::take(&mut self.pending)
    }
}

async fn fetch(client: &RegionClient, path: &str) -> Result<crate::Fetched, PlayError> {
    checked(path, client.get(path).await?)
}

/// A fetched object, or the error its status names.
fn checked(path: &str, f: crate::Fetched) -> Result<crate::Fetched, PlayError> {
    if !f.status.is_success() {
        return Err(PlayError::Status {
            path: path.into(),
            status: f.status.as_u16(),
        });
    }
    Ok(f)
}

async fn load(
    client: &RegionClient,
    r: &mut Rendition,
    report: &mut PlayReport,
) -> Result<MediaPlaylist, PlayError> {
    let body = fetch(client, &r.path).await?.body;
    report.playlist_fetches += 1;
    let pl = crate::playlist::media(&r.path, &body)?;
    r.playlist = Some(pl.clone());
    Ok(pl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_drains_in_media_time_and_dry_time_is_stall() {
        let mut p = Playback::new(2.0);
        p.clock = Instant::now() - Duration::from_millis(500);
        // Before the first segment, all waiting is startup.
        let s = p.advance(0);
        assert!((s - 1.0).abs() < 0.05, "{s}");
        p.speed = 1.0;
        p.buffer = 0.4;
        p.clock = Instant::now() - Duration::from_millis(500);
        let s = p.advance(3);
        assert!((s - 0.1).abs() < 0.05, "{s}");
        assert_eq!(p.buffer, 0.0);
    }
}
