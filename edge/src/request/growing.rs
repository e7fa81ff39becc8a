//! Fills shared as their bytes arrive.
//!
//! A body longer than [`STREAM_FILLS_OVER`] is not collected before anyone sees it: as soon
//! as the origin's response head arrives, the fill registers a [`Growing`] body under its
//! key and a task (the *driver*) appends the origin's chunks to it. The request that ran
//! the fill and every request that joins it — during the fetch, or later while the body is
//! still arriving — read the same chunks from the start at their own pace, so a flash crowd
//! on a new segment makes one origin fetch per edge, and a joiner's first byte comes when
//! the filler's does. When the last chunk is in, a storable body is stored (unless an
//! invalidation arrived meanwhile) *before* the entry leaves the map, so no request falls
//! between the two and fetches again.
//!
//! Bodies over the maximum object size are shared the same way up to
//! `cache.max_shared_fill`, then dropped with the fill (never stored). Per-client answers
//! (`private`, `Set-Cookie`, unshared `Authorization`) never get here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use shoal_cache_core::{CacheKey, CachedObject, Matcher, NoStoreReason};
use tokio::sync::{OwnedSemaphorePermit, watch};

use crate::state::EdgeState;
use crate::upstream::OriginBody;

/// Bodies at most this long are read whole before anyone is served (a small object's
/// transfer time is below a round trip, and one `Bytes` is cheaper to store and serve);
/// longer ones are shared as they arrive.
pub(crate) const STREAM_FILLS_OVER: u64 = 64 << 10;

/// How a growing body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// Every announced byte is in.
    Complete,
    /// The origin stream failed or stalled: readers see an error where the bytes stop.
    Failed(String),
}

#[derive(Debug, Default)]
struct Chunks {
    chunks: Vec<Bytes>,
    end: Option<End>,
}

/// One response body being filled: its chunks so far, shared by every reader.
#[derive(Debug)]
pub(crate) struct Growing {
    key: CacheKey,
    /// The object with an empty body: status, headers, ETag, version, freshness.
    pub(crate) shell: Arc<CachedObject>,
    /// The announced body length.
    pub(crate) length: u64,
    /// Whether the complete body will be stored, or why not.
    pub(crate) stored: Result<(), NoStoreReason>,
    /// The store's invalidation generation when the fetch began.
    since: u64,
    chunks: Mutex<Chunks>,
    /// Chunks available; bumped on every append and at the end.
    progress: watch::Sender<usize>,
}

/// What a fill knows when its response head arrives.
#[derive(Debug)]
pub(crate) struct Fill {
    pub(crate) key: CacheKey,
    /// The object with an empty body.
    pub(crate) shell: Arc<CachedObject>,
    /// The announced body length.
    pub(crate) length: u64,
    /// Whether the complete body is to be stored, or why not.
    pub(crate) stored: Result<(), NoStoreReason>,
    /// The store's invalidation generation when the fetch began.
    pub(crate) since: u64,
}

impl Growing {
    fn new(f: Fill) -> Self {
        Self {
            key: f.key,
            shell: f.shell,
            length: f.length,
            stored: f.stored,
            since: f.since,
            chunks: Mutex::default(),
            progress: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Chunks> {
        self.chunks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, chunk: Bytes) {
        let n = {
            let mut c = self.lock();
            c.chunks.push(chunk);
            c.chunks.len()
        };
        self.progress.send_replace(n);
    }

    fn end(&self, end: End) {
        let n = {
            let mut c = self.lock();
            c.end = Some(end);
            c.chunks.len()
        };
        // A change even when no chunk was added: waiting readers must see the end.
        self.progress.send_modify(|v| *v = n);
    }

    /// Chunk `i`, or what happened if there is none yet: `Err(None)` means wait.
    fn chunk(&self, i: usize) -> Result<Option<Bytes>, Option<String>> {
        let c = self.lock();
        match (c.chunks.get(i), &c.end) {
            (Some(b), _) => Ok(Some(b.clone())),
            (None, Some(End::Complete)) => Ok(None),
            (None, Some(End::Failed(e))) => Err(Some(e.clone())),
            (None, None) => Err(None),
        }
    }

    /// The body from its first byte, as it arrives.
    pub(crate) fn reader(
        self: Arc<Self>,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let rx = self.progress.subscribe();
        futures_util::stream::unfold((self, rx, 0usize), |(g, mut rx, i)| async move {
            if i == usize::MAX {
                return None;
            }
            loop {
                match g.chunk(i) {
                    Ok(Some(b)) => return Some((Ok(b), (g, rx, i + 1))),
                    Ok(None) => return None,
                    Err(Some(e)) => {
                        let err = std::io::Error::other(format!("origin body failed: {e}"));
                        // Ends the stream after the error (the index can never be served).
                        return Some((Err(err), (g, rx, usize::MAX)));
                    }
                    Err(None) => {
                        if rx.changed().await.is_err() {
                            return None;
                        }
                    }
                }
            }
        })
    }

    /// Waits until the body is complete or has failed.
    pub(crate) async fn done(&self) {
        let mut rx = self.progress.subscribe();
        while self.lock().end.is_none() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// The whole body once it is in (for a Range request), or why it never will be.
    pub(crate) async fn complete(&self) -> Result<Bytes, String> {
        let mut rx = self.progress.subscribe();
        loop {
            {
                let c = self.lock();
                match &c.end {
                    Some(End::Complete) => return Ok(concat(&c.chunks)),
                    Some(End::Failed(e)) => return Err(e.clone()),
                    None => {}
                }
            }
            if rx.changed().await.is_err() {
                return Err("the fill was abandoned".into());
            }
        }
    }
}

fn concat(chunks: &[Bytes]) -> Bytes {
    if let [one] = chunks {
        return one.clone();
    }
    let mut b = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
    for c in chunks {
        b.extend_from_slice(c);
    }
    b.freeze()
}

/// The fills whose bodies are arriving, by key.
#[derive(Debug, Default)]
pub(crate) struct GrowingFills(Mutex<HashMap<CacheKey, Arc<Growing>>>);

impl GrowingFills {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Arc<Growing>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fill of `key` in progress, to join.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Arc<Growing>> {
        self.map().get(key).cloned()
    }

    fn remove(&self, g: &Arc<Growing>) {
        let mut m = self.map();
        if m.get(&g.key).is_some_and(|x| Arc::ptr_eq(x, g)) {
            m.remove(&g.key);
        }
    }

    /// Forgets the fills an invalidation names: later requests fetch anew (the driver's
    /// store is refused by the store's own invalidation check).
    pub(crate) fn invalidate(&self, matcher: &Matcher<CachedObject>) {
        self.map().retain(|k, g| !matcher(k.as_str(), &g.shell));
    }
}

/// Registers the body of `fill` arriving on `body` and starts its driver; returns what
/// readers share.
pub(crate) fn start(
    st: &Arc<EdgeState>,
    fill: Fill,
    body: OriginBody,
    slot: OwnedSemaphorePermit,
) -> Arc<Growing> {
    let g = Arc::new(Growing::new(fill));
    st.growing.map().insert(g.key.clone(), g.clone());
    st.metrics.fill_arriving(1);
    let stall = st.config.timeouts.origin_fetch.get();
    tokio::spawn(drive(st.clone(), g.clone(), body, stall, slot));
    g
}

/// Reads the origin body into `g`, then stores it (when storable) and unregisters it. The
/// origin fill slot is held until the last byte. A body no one reads any more and that
/// will not be stored is abandoned.
async fn drive(
    st: Arc<EdgeState>,
    g: Arc<Growing>,
    mut body: OriginBody,
    stall: Duration,
    _slot: OwnedSemaphorePermit,
) {
    let end = loop {
        // Only the map and this task hold it: no one reads what follows, and it will not
        // be stored.
        if g.stored.is_err() && Arc::strong_count(&g) <= 2 {
            break End::Failed("abandoned: no reader left".into());
        }
        match tokio::time::timeout(stall, body.next_chunk()).await {
            Ok(Ok(Some(c))) => g.push(c),
            Ok(Ok(None)) => break End::Complete,
            Ok(Err(e)) => break End::Failed(e.to_string()),
            Err(_) => {
                break End::Failed(format!(
                    "no body bytes for {stall:?} after {} B",
                    body.received()
                ));
            }
        }
    };
    if end == End::Complete && g.stored.is_ok() {
        let whole = concat(&g.lock().chunks);
        let obj = CachedObject {
            body: whole,
            ..(*g.shell).clone()
        };
        let key = g.key.as_arc().clone();
        if let Err(r) = st
            .store
            .insert_unless_invalidated(key, Arc::new(obj), g.since)
            .await
        {
            tracing::debug!("fill of {} not stored: {}", g.key, r.as_str());
        }
    }
    if let End::Failed(e) = &end {
        tracing::debug!("fill of {} failed mid-body: {e}", g.key);
    }
    st.growing.remove(&g);
    st.metrics.fill_arriving(-1);
    g.end(end);
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn growing() -> Arc<Growing> {
        let now = std::time::SystemTime::now();
        let shell = CachedObject {
            status: 200,
            headers: Vec::new(),
            body: Bytes::new(),
            etag: None,
            version: 1,
            freshness: shoal_cache_core::Freshness::fixed(now, Duration::from_secs(60)),
            tags: Vec::new(),
        };
        Arc::new(Growing::new(Fill {
            key: CacheKey::from_normalised("h/a"),
            shell: Arc::new(shell),
            length: 5,
            stored: Ok(()),
            since: 0,
        }))
    }

    async fn read_all(g: Arc<Growing>) -> Vec<u8> {
        let chunks: Vec<_> = g.reader().collect().await;
        chunks
            .into_iter()
            .flat_map(|c| c.expect("no error").to_vec())
            .collect()
    }

    #[tokio::test]
    async fn readers_that_join_late_get_every_byte_from_the_start() {
        let g = growing();
        g.push(Bytes::from_static(b"ab"));
        let early = tokio::spawn(read_all(g.clone()));
        g.push(Bytes::from_static(b"cd"));
        let late = tokio::spawn(read_all(g.clone()));
        tokio::task::yield_now().await;
        g.push(Bytes::from_static(b"e"));
        g.end(End::Complete);
        assert_eq!(&early.await.expect("join")[..], b"abcde");
        assert_eq!(&late.await.expect("join")[..], b"abcde");
        assert_eq!(&g.complete().await.expect("complete")[..], b"abcde");
        // After the end, a new reader still gets it all.
        let after: Vec<_> = g.clone().reader().collect().await;
        assert_eq!(after.len(), 3);
    }

    #[tokio::test]
    async fn a_failed_fill_ends_every_reader_with_an_error_after_the_bytes_it_had() {
        let g = growing();
        g.push(Bytes::from_static(b"ab"));
        let r = tokio::spawn(g.clone().reader().collect::<Vec<_>>());
        tokio::task::yield_now().await;
        g.end(End::Failed("reset".into()));
        let got = r.await.expect("join");
        assert_eq!(got.len(), 2);
        assert!(matches!(&got[0], Ok(b) if &b[..] == b"ab"));
        assert!(
            got[1]
                .as_ref()
                .is_err_and(|e| e.to_string().contains("reset"))
        );
        assert_eq!(g.complete().await, Err("reset".into()));
    }
}
