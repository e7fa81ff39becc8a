//! Following the origin's invalidations.
//!
//! Whenever the origin link is up, one long-lived QUIC stream carries the subscription:
//! `Subscribe` with this edge's position in the origin's log, then `Subscribed`, the
//! replay of what it missed, and live invalidations, each applied to the cache (whoever owns
//! the key on the ring) and acknowledged. When the origin cannot replay what was missed (its
//! log moved on, or it restarted with a new epoch), or on the first subscription, the edge
//! drops everything it holds: it never keeps an object it may have missed an invalidation
//! for. Heartbeats both ways; three silent intervals end the stream, and the edge
//! subscribes again as soon as the link is up, resuming where it was.
//!
//! While the subscription is down (a partition), cached objects are served until their TTL
//! runs out: staleness is bounded by propagation delay while connected, by TTL while cut
//! off.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use shoal_cache_core::CachedObject;
use shoal_cache_core::invalidation::{Position, Step, matcher};
use shoal_cache_core::io::{FrameReader, write_frame};
use shoal_cache_core::store::Purge;
use shoal_cache_core::wire::{
    Ack, FrameCodec, Heartbeat, Invalidation, Message, Subscribe, Subscribed,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::state::EdgeState;
use crate::upstream::{Link, OriginClient};

/// Pause before subscribing again on a connection that is still up.
const RETRY: Duration = Duration::from_millis(200);

/// Follows the origin's invalidations until `cancel`.
pub(crate) async fn follow(
    client: Arc<OriginClient>,
    state: Arc<EdgeState>,
    cancel: CancellationToken,
) {
    let mut link = client.link();
    let mut pos = Position::default();
    loop {
        let conn = loop {
            if let Link::Up(c) = &*link.borrow_and_update()
                && c.close_reason().is_none()
            {
                break c.clone();
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                r = link.changed() => if r.is_err() { return },
            }
        };
        let r = tokio::select! {
            () = cancel.cancelled() => return,
            r = subscription(&conn, &client, &state, &mut pos) => r,
        };
        state.metrics.subscribed(false);
        if let Err(e) = r {
            warn!(seq = pos.seq(), "invalidation subscription ended: {e}");
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// One subscription on `conn`, until it fails.
async fn subscription(
    conn: &quinn::Connection,
    client: &OriginClient,
    state: &EdgeState,
    pos: &mut Position,
) -> Result<(), String> {
    let codec = FrameCodec::default();
    let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let (edge_id, region) = client.identity();
    let sub = Message::Subscribe(Subscribe {
        edge_id: edge_id.to_string(),
        region: region.to_string(),
        resume: pos.resume(),
    });
    write_frame(&mut send, &codec, &sub)
        .await
        .map_err(|e| e.to_string())?;
    let mut reader = FrameReader::new(recv, codec);
    let limit = state.config.timeouts.origin_connect.get();
    let answer = tokio::time::timeout(limit, reader.next())
        .await
        .map_err(|_| format!("no answer to Subscribe within {limit:?}"))?;
    let Subscribed {
        epoch,
        seq,
        reset,
        heartbeat_ms,
        modes,
    } = match answer {
        Ok(Some(Message::Subscribed(s))) => s,
        Ok(Some(Message::Error(e))) => return Err(e.message),
        Ok(Some(m)) => return Err(format!("{} in answer to Subscribe", m.name())),
        Ok(None) => return Err("stream closed before Subscribed".into()),
        Err(e) => return Err(e.to_string()),
    };
    // A new epoch, or a log that no longer reaches back: what we hold may have missed
    // invalidations we will never be told of. (On first contact we hold nothing: fetches
    // wait for the first subscription.)
    let lost = reset || pos.resume().is_some_and(|r| r.epoch != epoch);
    if lost {
        let dropped = state
            .store
            .invalidate(Arc::new(|_: &str, _: &CachedObject| true), Purge::Remove)
            .await;
        state.metrics.invalidation_reset(seq);
        info!(epoch, seq, dropped, reset, "invalidation position reset");
    }
    state.set_modes(modes);
    pos.subscribed(epoch, seq, reset);
    state.metrics.subscribed(true);
    client.set_following();
    debug!(
        epoch,
        seq,
        position = pos.seq(),
        "subscribed to invalidations"
    );
    let beat = Duration::from_millis(heartbeat_ms.clamp(20, 60_000));
    let mut ticker = tokio::time::interval(beat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = Instant::now();
    // Send times of heartbeats not yet answered by a lease: a lease runs from when its
    // heartbeat was sent, which is before the origin granted it, so this edge's lease
    // always ends before the origin's view of it.
    let mut asked: std::collections::VecDeque<Instant> = std::collections::VecDeque::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if heard.elapsed() > beat * 3 {
                    return Err(format!("no heartbeat from the origin for {:?}", heard.elapsed()));
                }
                let hb = Message::Heartbeat(Heartbeat { seq: pos.seq() });
                asked.push_back(Instant::now());
                write_frame(&mut send, &codec, &hb).await.map_err(|e| e.to_string())?;
            }
            // Cancel-safe (see FrameReader::next).
            m = reader.next() => {
                heard = Instant::now();
                match m {
                    Ok(Some(Message::Invalidate(inv))) => match pos.step(inv.seq) {
                        Step::Apply => {
                            apply(state, &inv).await;
                            state.metrics.invalidation(inv.seq);
                            ack(&mut send, &codec, edge_id, inv.seq).await?;
                        }
                        Step::Duplicate => {}
                        Step::Gap { expected, got } => {
                            return Err(format!("invalidation {got} arrived before {expected}"));
                        }
                    },
                    // The origin's position is ahead of ours only if entries went missing.
                    Ok(Some(Message::Heartbeat(h))) if h.seq > pos.seq() => {
                        return Err(format!("origin is at {} but we applied {}", h.seq, pos.seq()));
                    }
                    Ok(Some(Message::Heartbeat(_))) => {}
                    Ok(Some(Message::Lease(l))) => {
                        let Some(sent) = asked.pop_front() else {
                            return Err("a lease nobody asked for".into());
                        };
                        if l.duration_ms > 0 {
                            state.extend_lease(sent + Duration::from_millis(l.duration_ms));
                        }
                    }
                    Ok(Some(Message::Error(e))) => return Err(e.message),
                    Ok(Some(m)) => return Err(format!("{} on the subscription stream", m.name())),
                    Ok(None) => return Err("the origin ended the subscription".into()),
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
    }
}

async fn ack(
    send: &mut quinn::SendStream,
    codec: &FrameCodec,
    edge_id: &str,
    seq: u64,
) -> Result<(), String> {
    let ack = Message::Ack(Ack {
        edge_id: edge_id.to_string(),
        seq,
    });
    write_frame(send, codec, &ack)
        .await
        .map_err(|e| e.to_string())
}

/// Applies one invalidation to the cache.
pub(crate) async fn apply(state: &EdgeState, inv: &Invalidation) -> usize {
    let purge = if inv.soft {
        Purge::Replace(Box::new(|o: &CachedObject| {
            let mut o = o.clone();
            o.freshness.mark_stale(SystemTime::now());
            o
        }))
    } else {
        Purge::Remove
    };
    let n = state.invalidate(matcher(&inv.target), purge).await;
    debug!(seq = inv.seq, soft = inv.soft, target = ?inv.target, n, "applied invalidation");
    n
}
