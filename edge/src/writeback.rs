//! The `write-back` buffer: the course's write-back thought experiment, made real and
//! labelled unsafe.
//!
//! A PUT to a `write-back` path is acknowledged once it is here, on the path's owner edge,
//! with a version this edge gives it. Reads of the path on this edge (and so, through owner
//! routing, in the whole region) are served from the buffer until the write has reached
//! the origin. A flusher writes each path to the origin, carrying that version:
//!
//! - `delay` after the path was first written since its last flush (a path written without
//!   pause still reaches the origin that often);
//! - at once when the buffer is over `max_bytes` (eviction: the oldest paths go first);
//! - on graceful shutdown (drain).
//!
//! A failed flush stays buffered and is retried. What is buffered when the edge dies is
//! lost: that is the mode's promise, and `shoal cap` measures it. The origin keeps a
//! flushed version unless it already holds a newer one (last writer wins), and pushes the
//! invalidation to every edge, as in `invalidate`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use shoal_cache_core::CachedObject;
use shoal_cache_core::wire::WriteMethod;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::WriteBackSection;
use crate::error::EdgeError;
use crate::metrics::Metrics;
use crate::upstream::{Origin, Write};

/// One path's unflushed write.
#[derive(Debug, Clone)]
struct Dirty {
    /// What reads of the path get until it is flushed (body, headers, version).
    obj: Arc<CachedObject>,
    content_type: Option<String>,
    tags: Vec<String>,
    /// When it is to be written to the origin.
    due: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    dirty: HashMap<String, Dirty>,
    /// Body bytes held.
    bytes: u64,
}

/// How one flush ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// The origin stored it.
    Stored,
    /// The origin held a newer version already; this one is dropped (last writer wins).
    Superseded,
    /// The origin refused it for good (bad path, over its size limit): dropped, logged.
    Refused,
    /// The origin could not be reached: kept, retried later.
    Failed,
}

impl Flushed {
    fn label(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Superseded => "superseded",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }
}

/// The buffer of one edge.
#[derive(Debug)]
pub(crate) struct WriteBack {
    inner: std::sync::Mutex<Inner>,
    /// Wakes the flusher: a path was first dirtied, or became due early.
    wake: Notify,
    /// Told when a path leaves the buffer, so a write waiting for room can go on.
    room: Notify,
    /// Held while one path is written to the origin: a DELETE of a path waits for its
    /// flush rather than racing it (a late flush would bring the object back).
    flushing: tokio::sync::Mutex<()>,
    last_version: AtomicU64,
    delay: Duration,
    max_bytes: u64,
}

fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl WriteBack {
    pub(crate) fn new(cfg: &WriteBackSection) -> Self {
        Self {
            inner: std::sync::Mutex::new(Inner::default()),
            wake: Notify::new(),
            room: Notify::new(),
            flushing: tokio::sync::Mutex::new(()),
            last_version: AtomicU64::new(0),
            delay: cfg.delay.get(),
            max_bytes: cfg.max_bytes.bytes(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A version for a new write: microseconds since the epoch, like the origin's, and
    /// above `above` (the version this edge last saw of the path) and every one given here.
    pub(crate) fn next_version(&self, above: u64) -> u64 {
        let mut given = 0;
        let _ = self
            .last_version
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                given = micros_now().max(last + 1).max(above + 1);
                Some(given)
            });
        given
    }

    /// The unflushed write of `path`, if any.
    pub(crate) fn get(&self, path: &str) -> Option<Arc<CachedObject>> {
        self.lock().dirty.get(path).map(|d| d.obj.clone())
    }

    /// The version of `path`'s unflushed write, if any.
    pub(crate) fn version(&self, path: &str) -> Option<u64> {
        self.lock().dirty.get(path).map(|d| d.obj.version)
    }

    /// Body bytes and paths held.
    pub(crate) fn held(&self) -> (u64, usize) {
        let g = self.lock();
        (g.bytes, g.dirty.len())
    }

    /// Buffers a write of `path`. When the buffer has no room, the oldest paths are
    /// flushed first; if the origin does not take them within `wait`, the write is
    /// refused (503) and nothing is buffered.
    pub(crate) async fn accept(
        &self,
        path: &str,
        obj: Arc<CachedObject>,
        content_type: Option<String>,
        tags: Vec<String>,
        wait: Duration,
    ) -> Result<(), EdgeError> {
        let deadline = Instant::now() + wait;
        let len = obj.body.len() as u64;
        loop {
            let room = self.room.notified();
            {
                let mut g = self.lock();
                let replaced = g.dirty.get(path).map_or(0, |d| d.obj.body.len() as u64);
                if g.bytes - replaced + len <= self.max_bytes {
                    let now = Instant::now();
                    // A rewrite keeps the path's place in line: it is flushed `delay`
                    // after it was first dirtied, however often it is written meanwhile.
                    let due = g.dirty.get(path).map_or(now + self.delay, |d| d.due);
                    let first = !g.dirty.contains_key(path);
                    g.bytes = g.bytes - replaced + len;
                    g.dirty.insert(
                        path.to_string(),
                        Dirty {
                            obj,
                            content_type,
                            tags,
                            due,
                        },
                    );
                    drop(g);
                    if first {
                        self.wake.notify_one();
                    }
                    return Ok(());
                }
                // Evict: make the oldest paths due now until the write would fit.
                let mut order: Vec<(Instant, String, u64)> = g
                    .dirty
                    .iter()
                    .map(|(p, d)| (d.due, p.clone(), d.obj.body.len() as u64))
                    .collect();
                order.sort();
                let now = Instant::now();
                let mut freed = 0;
                for (_, p, n) in order {
                    if g.bytes - freed + len <= self.max_bytes {
                        break;
                    }
                    if let Some(d) = g.dirty.get_mut(&p) {
                        d.due = d.due.min(now);
                    }
                    freed += n;
                }
            }
            self.wake.notify_one();
            if tokio::time::timeout_at(deadline.into(), room)
                .await
                .is_err()
            {
                return Err(EdgeError::Overloaded(
                    "write-back buffer full and the origin is not taking its flushes",
                ));
            }
        }
    }

    /// Writes `path`'s buffered write (if any) to the origin now. Used before a DELETE of
    /// the path is forwarded, so the two reach the origin in order.
    pub(crate) async fn flush_path(&self, origin: &dyn Origin, metrics: &Metrics, path: &str) {
        self.flush(origin, metrics, path).await;
    }

    /// Writes one path's buffered write, then forgets it unless it was rewritten meanwhile.
    async fn flush(&self, origin: &dyn Origin, metrics: &Metrics, path: &str) -> Flushed {
        let _one = self.flushing.lock().await;
        let Some(d) = self.lock().dirty.get(path).cloned() else {
            return Flushed::Stored;
        };
        let version = d.obj.version;
        let outcome = match origin
            .write(Write {
                path: path.to_string(),
                method: WriteMethod::Put,
                content_type: d.content_type.clone(),
                tags: d.tags.clone(),
                body: d.obj.body.clone(),
                version: Some(version),
            })
            .await
        {
            Ok(w) if (200..300).contains(&w.status) => Flushed::Stored,
            Ok(w) if w.status == 409 => Flushed::Superseded,
            Ok(w) => {
                warn!(
                    path,
                    version,
                    status = w.status,
                    "write-back flush refused by the origin, dropped: {}",
                    w.message
                );
                Flushed::Refused
            }
            Err(e) => {
                debug!(path, version, "write-back flush failed, will retry: {e}");
                Flushed::Failed
            }
        };
        metrics.write_back_flush(outcome.label());
        let mut g = self.lock();
        if outcome == Flushed::Failed {
            if let Some(cur) = g.dirty.get_mut(path) {
                // Retried after a pause, not in a tight loop against a dead origin.
                cur.due = Instant::now() + self.delay.min(Duration::from_millis(500));
            }
            return outcome;
        }
        if g.dirty
            .get(path)
            .is_some_and(|cur| cur.obj.version == version)
        {
            let n = d.obj.body.len() as u64;
            g.dirty.remove(path);
            g.bytes -= n;
            drop(g);
            self.room.notify_waiters();
        }
        outcome
    }

    /// Paths due by `now`, and when the next one falls due.
    fn due(&self, now: Instant) -> (Vec<String>, Option<Instant>) {
        let g = self.lock();
        let due = g
            .dirty
            .iter()
            .filter(|(_, d)| d.due <= now)
            .map(|(p, _)| p.clone())
            .collect();
        let next = g.dirty.values().map(|d| d.due).filter(|t| *t > now).min();
        (due, next)
    }

    /// The flusher: writes paths as they fall due, until cancelled.
    pub(crate) async fn run(
        &self,
        origin: &dyn Origin,
        metrics: &Metrics,
        cancel: CancellationToken,
    ) {
        loop {
            let woken = self.wake.notified();
            let (due, next) = self.due(Instant::now());
            for path in &due {
                if cancel.is_cancelled() {
                    return;
                }
                self.flush(origin, metrics, path).await;
            }
            if !due.is_empty() {
                // A flush may have rescheduled a path: look again before sleeping.
                continue;
            }
            let until = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                () = cancel.cancelled() => return,
                () = woken => {}
                () = tokio::time::sleep_until(until.into()) => {}
            }
        }
    }

    /// On graceful shutdown: flushes everything, retrying failed paths until `limit`.
    /// Returns how many paths could not be written (lost).
    pub(crate) async fn drain(
        &self,
        origin: &dyn Origin,
        metrics: &Metrics,
        limit: Duration,
    ) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let paths: Vec<String> = self.lock().dirty.keys().cloned().collect();
            if paths.is_empty() || Instant::now() >= deadline {
                return paths.len();
            }
            for p in &paths {
                self.flush(origin, metrics, p).await;
            }
            if !self.lock().dirty.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use futures_util::FutureExt;
    use futures_util::future::BoxFuture;
    use shoal_cache_core::size::{ByteSize, HumanDuration};
    use shoal_cache_core::wire::Written;

    use super::*;
    use crate::upstream::{Fetch, OriginReply};

    /// An origin that stores versions per path (last writer wins), or is unreachable.
    #[derive(Debug, Default)]
    struct Versions {
        down: AtomicBool,
        held: std::sync::Mutex<HashMap<String, u64>>,
    }

    impl Origin for Versions {
        fn fetch(&self, _: Fetch) -> BoxFuture<'_, Result<OriginReply, EdgeError>> {
            async { Err(EdgeError::OriginDown("not used".into())) }.boxed()
        }
        fn write(&self, req: Write) -> BoxFuture<'_, Result<Written, EdgeError>> {
            async move {
                if self.down.load(Ordering::SeqCst) {
                    return Err(EdgeError::OriginDown("cut off".into()));
                }
                let v = req.version.unwrap_or(1);
                let mut held = self.held.lock().unwrap();
                let cur = held.get(&req.path).copied().unwrap_or(0);
                let status = if cur >= v { 409 } else { 201 };
                if status == 201 {
                    held.insert(req.path.clone(), v);
                }
                Ok(Written {
                    request_id: 1,
                    status,
                    version: v.max(cur),
                    etag: None,
                    seq: None,
                    headers: vec![],
                    message: String::new(),
                })
            }
            .boxed()
        }
        fn is_up(&self) -> bool {
            !self.down.load(Ordering::SeqCst)
        }
    }

    fn obj(wb: &WriteBack, body: &'static [u8]) -> Arc<CachedObject> {
        let version = wb.next_version(0);
        Arc::new(CachedObject {
            status: 200,
            headers: vec![],
            body: bytes::Bytes::from_static(body),
            etag: None,
            version,
            freshness: shoal_cache_core::Freshness::fixed(SystemTime::now(), Duration::ZERO),
            tags: vec![],
        })
    }

    fn buffer(max: u64) -> WriteBack {
        WriteBack::new(&WriteBackSection {
            delay: HumanDuration::secs(60),
            max_bytes: ByteSize(max),
        })
    }

    #[tokio::test]
    async fn a_full_buffer_flushes_the_oldest_or_refuses_when_the_origin_is_away() {
        let (wb, origin, metrics) = (buffer(10), Versions::default(), Metrics::default());
        let wait = Duration::from_millis(200);
        let a = obj(&wb, b"aaaaaa");
        wb.accept("/a", a.clone(), None, vec![], wait)
            .await
            .unwrap();
        assert_eq!(wb.held(), (6, 1));
        assert_eq!(wb.get("/a").map(|o| o.version), Some(a.version));
        // No room for /b, and the origin is unreachable: refused, nothing lost or added.
        origin.down.store(true, Ordering::SeqCst);
        let cancel = CancellationToken::new();
        let run = wb.run(&origin, &metrics, cancel.clone());
        let refused = async {
            let r = wb
                .accept("/b", obj(&wb, b"bbbbbb"), None, vec![], wait)
                .await;
            assert!(matches!(r, Err(EdgeError::Overloaded(_))), "{r:?}");
            assert_eq!(wb.held(), (6, 1));
            assert!(wb.get("/b").is_none());
            // Once the origin is back, the oldest path is flushed to make room.
            origin.down.store(false, Ordering::SeqCst);
            let b = obj(&wb, b"bbbbbb");
            wb.accept("/b", b.clone(), None, vec![], Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(wb.held(), (6, 1));
            assert!(wb.get("/a").is_none(), "/a was evicted to the origin");
            assert_eq!(origin.held.lock().unwrap().get("/a"), Some(&a.version));
            cancel.cancel();
        };
        tokio::join!(run, refused);
        assert!(metrics.write_back_flushes("failed") >= 1);
        assert_eq!(metrics.write_back_flushes("stored"), 1);
    }

    #[tokio::test]
    async fn a_rewrite_replaces_the_buffered_version_and_drain_flushes_the_newest() {
        let (wb, origin, metrics) = (buffer(1 << 20), Versions::default(), Metrics::default());
        let wait = Duration::from_secs(1);
        let first = obj(&wb, b"one");
        let second = obj(&wb, b"two!");
        assert!(second.version > first.version, "versions only grow");
        assert!(
            wb.next_version(u64::MAX - 5) == u64::MAX - 4,
            "above what was seen"
        );
        wb.accept("/a", first, None, vec![], wait).await.unwrap();
        wb.accept("/a", second.clone(), None, vec![], wait)
            .await
            .unwrap();
        assert_eq!(wb.held(), (4, 1));
        // The origin already holds a newer version of /b: the flush is superseded.
        let b = obj(&wb, b"b");
        origin
            .held
            .lock()
            .unwrap()
            .insert("/b".into(), b.version + 1);
        wb.accept("/b", b, None, vec![], wait).await.unwrap();
        assert_eq!(wb.drain(&origin, &metrics, wait).await, 0);
        assert_eq!(wb.held(), (0, 0));
        assert_eq!(origin.held.lock().unwrap().get("/a"), Some(&second.version));
        assert_eq!(metrics.write_back_flushes("superseded"), 1);
        // Unreachable origin: drain gives up at its limit and says what is lost.
        origin.down.store(true, Ordering::SeqCst);
        wb.accept("/c", obj(&wb, b"c"), None, vec![], wait)
            .await
            .unwrap();
        assert_eq!(
            wb.drain(&origin, &metrics, Duration::from_millis(100))
                .await,
            1
        );
    }
}
