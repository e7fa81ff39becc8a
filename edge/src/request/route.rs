//! Phase 2, **route**: send the request to its owner edge in the region, or serve it here.
//!
//! The region's [`shoal_cache_core::RegionMap`] gives the candidates for a key: the owner,
//! then the nodes that inherit its keys. A non-owner forwards to the first live candidate
//! and keeps no copy; when a candidate fails it is skipped for `peer_down_for` and the next
//! is tried. Reaching this edge in the list means serving here.
//!
//! **Loop prevention**: a forwarding edge marks the request with [`FORWARDED`], and a
//! marked request is always served where it lands, never forwarded again, so two edges
//! whose rings briefly disagree cannot bounce a request between them.

use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, Response, header};
use bytes::Bytes;
use http_body_util::Full;
use shoal_cache_core::CacheKey;
use tracing::warn;

use super::Ctx;
use super::validate::Target;
use crate::error::EdgeError;
use crate::peers::Peer;
use crate::state::EdgeState;

/// Header a forwarding edge sets, so the owner serves instead of forwarding again.
pub const FORWARDED: &str = "x-shoal-forwarded";

/// Shoal's own request headers a forward carries to the owner beside the end-to-end ones
/// (which it carries all, with `Forwarded`/`X-Forwarded-For` naming the client, so the
/// owner's fill asks the upstream as the client did).
const SHOAL_HEADERS: [&str; 1] = [super::MIN_VERSION];

/// The owner's response, when another edge owns the key and answered; `None` to serve here.
pub(crate) async fn to_owner(
    st: &EdgeState,
    ctx: &Ctx,
    target: &Target,
    key: &CacheKey,
    body: &Bytes,
) -> Option<Response<Body>> {
    // Hot path: most keys an edge sees are its own; skip the candidate walk for them.
    if ctx.headers.contains_key(FORWARDED) {
        return None;
    }
    // One snapshot of the region for the whole walk, even if discovery changes it meanwhile.
    let members = st.peers.now();
    if members.region.owner(key) == Some(&st.config.node_id) {
        return None;
    }
    for node in members.region.candidates(key) {
        if node == st.config.node_id {
            return None;
        }
        let Some(peer) = members.get(node) else {
            continue;
        };
        if peer.is_down(Instant::now()) {
            continue;
        }
        match forward(st, peer, node, ctx, target, body.clone()).await {
            Ok(r) => {
                st.metrics.peer_forward("ok");
                return Some(r);
            }
            Err(e) => {
                warn!("forward failed, trying the next node: {e}");
                st.metrics.peer_forward("error");
                peer.mark_down(Instant::now(), st.peers.down_for);
            }
        }
    }
    None
}

async fn forward(
    st: &EdgeState,
    peer: &Peer,
    node: &str,
    ctx: &Ctx,
    target: &Target,
    body: Bytes,
) -> Result<Response<Body>, EdgeError> {
    let fail = |reason: String| EdgeError::Peer {
        peer: node.to_string(),
        reason,
    };
    let mut b = Request::builder()
        .method(ctx.method.clone())
        .uri(format!("http://{}{}", peer.addr, target.path_and_query))
        .header(header::HOST, &target.host)
        .header(FORWARDED, st.node_header.clone());
    for h in SHOAL_HEADERS {
        for v in ctx.headers.get_all(h) {
            b = b.header(h, v);
        }
    }
    for (n, v) in crate::headers::forwarded(&ctx.headers, ctx.client, false, false) {
        if n != "host" {
            b = b.header(n, v);
        }
    }
    let req = b.body(Full::new(body)).map_err(|e| fail(e.to_string()))?;
    // A dead peer shows at connect (bounded by the connector's `peer` timeout); the head
    // may legitimately wait for the owner's own origin fetch.
    let wait = st.config.peer_head_wait();
    let gone = peer.gone();
    let resp = tokio::select! {
        r = tokio::time::timeout(wait, st.peers.client.request(req)) => r
            .map_err(|_| fail(format!("no response head within {wait:?}")))?
            .map_err(|e| fail(e.to_string()))?,
        () = gone => return Err(fail("found down while waiting for its answer".into())),
    };
    let (mut parts, body) = resp.into_parts();
    for h in [header::CONNECTION, header::TRANSFER_ENCODING] {
        parts.headers.remove(h);
    }
    parts.headers.remove("keep-alive");
    Ok(Response::from_parts(parts, Body::new(body)))
}
