//! The QUIC server: one bidirectional stream per fetch, and one long-lived stream per edge
//! for invalidations.
//!
//! **Fetch.** The edge sends one [`Message::Fetch`] frame and finishes its side. The origin
//! answers with a [`Message::ResponseHead`] followed by body chunks of at most 64 KiB (so a
//! large segment never sits whole in one message), or a [`Message::NotModified`] when the
//! edge's ETag still matches, then finishes the stream.
//!
//! **Subscription.** The edge sends [`Message::Subscribe`] with its position in the log and
//! keeps its side open. The origin answers [`Message::Subscribed`] (epoch, newest sequence
//! number, whether the edge must reset), replays what the edge missed, then sends live
//! [`Message::Invalidate`]s. The edge answers each with an [`Message::Ack`]; both sides
//! send a [`Message::Heartbeat`] every `heartbeat`, and either ends the stream after three
//! silent intervals.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use shoal_cache_core::invalidation::Replay;
use shoal_cache_core::io::{FrameReader, write_frame};
use shoal_cache_core::wire::{
    Ack, BodyChunk, BodyLength, ErrorCode, ErrorMessage, FetchRequest, FrameCodec, Heartbeat,
    Hello, Invalidation, InvalidationTarget, MAX_CHUNK, Message, NotModified, ResponseHead,
    Subscribe, Subscribed,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use crate::State;
use crate::error::OriginError;
use crate::metrics::FetchResult;
use crate::store::Body;

/// Largest fetch request frame accepted.
const MAX_REQUEST: usize = 64 * 1024;

/// Accepts connections until `cancel`, then closes the endpoint and waits for in-flight
/// streams.
pub(crate) async fn serve(endpoint: quinn::Endpoint, state: Arc<State>, cancel: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        let incoming = tokio::select! {
            () = cancel.cancelled() => break,
            i = endpoint.accept() => i,
        };
        let Some(incoming) = incoming else { break };
        let state = state.clone();
        let cancel = cancel.clone();
        let peer = incoming.remote_address();
        tracker.spawn(
            async move {
                match incoming.await {
                    Ok(conn) => connection(conn, state, cancel).await,
                    Err(e) => debug!("handshake failed: {e}"),
                }
            }
            .instrument(info_span!("conn", %peer)),
        );
    }
    endpoint.close(0u32.into(), b"origin shutting down");
    tracker.close();
    tracker.wait().await;
    // Let the close reach the edges and the socket be released, so a restarted origin can
    // bind the same port.
    endpoint.wait_idle().await;
}

/// How long a new connection has to present its `Hello`.
const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the edge's `Hello` from the connection's first stream and checks its token.
async fn hello(conn: &quinn::Connection, state: &State) -> Result<Hello, OriginError> {
    let codec = FrameCodec::default();
    let transport = |e: String| OriginError::Transport(e);
    let (mut send, mut recv) = conn
        .accept_bi()
        .await
        .map_err(|e| transport(e.to_string()))?;
    let raw = recv
        .read_to_end(MAX_REQUEST)
        .await
        .map_err(|e| transport(e.to_string()))?;
    let refuse = |code, message: &str| {
        Message::Error(ErrorMessage {
            request_id: None,
            code,
            message: message.to_string(),
        })
    };
    let (reply, verdict) = match codec.decode(&raw) {
        Ok((Message::Hello(h), _)) => match &state.config.edge_token {
            Some(t) if !h.token.as_deref().is_some_and(|g| crate::same_secret(g, t)) => (
                refuse(ErrorCode::Unauthorized, "edge token missing or wrong"),
                Err(OriginError::Unauthorized(h.edge_id)),
            ),
            _ => (
                Message::Ack(Ack {
                    edge_id: h.edge_id.clone(),
                    seq: 0,
                }),
                Ok(h),
            ),
        },
        Ok((other, _)) => (
            refuse(ErrorCode::BadRequest, "the first message must be Hello"),
            Err(OriginError::Transport(format!(
                "{} before Hello",
                other.name()
            ))),
        ),
        Err(e) => (
            refuse(ErrorCode::BadRequest, &e.to_string()),
            Err(OriginError::Transport(e.to_string())),
        ),
    };
    write_frame(&mut send, &codec, &reply).await?;
    let _ = send.finish();
    verdict
}

async fn connection(conn: quinn::Connection, state: Arc<State>, cancel: CancellationToken) {
    // Nothing is served before the edge has said who it is and shown its token.
    let edge_id = match tokio::time::timeout(HELLO_TIMEOUT, hello(&conn, &state)).await {
        Ok(Ok(h)) => {
            debug!(edge = %h.edge_id, region = %h.region, "edge connected");
            Arc::<str>::from(h.edge_id)
        }
        Ok(Err(e)) => {
            warn!("refusing connection: {e}");
            // Let the refusal reach the edge before the close does.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            conn.close(1u32.into(), b"unauthorized");
            return;
        }
        Err(_) => {
            conn.close(1u32.into(), b"no hello");
            return;
        }
    };
    loop {
        let stream = tokio::select! {
            () = cancel.cancelled() => return,
            s = conn.accept_bi() => s,
        };
        match stream {
            Ok((send, recv)) => {
                let state = state.clone();
                let (edge_id, cancel) = (edge_id.clone(), cancel.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve_stream(send, recv, &state, &edge_id, cancel).await {
                        debug!("stream: {e}");
                    }
                });
            }
            Err(e) => {
                debug!("connection ended: {e}");
                return;
            }
        }
    }
}

/// One stream: a fetch or a subscription, as its first frame says.
async fn serve_stream(
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    state: &Arc<State>,
    edge_id: &str,
    cancel: CancellationToken,
) -> Result<(), OriginError> {
    let started = Instant::now();
    let codec = FrameCodec::default();
    // Frames up to the default limit: a forwarded write's body chunks follow its head.
    let mut reader = FrameReader::new(recv, FrameCodec::default());
    let first = reader.next().await;
    let fetch = match first {
        Ok(Some(Message::Fetch(f))) => f,
        Ok(Some(Message::Subscribe(s))) => {
            return subscription(send, reader, s, state, edge_id, cancel).await;
        }
        Ok(Some(Message::Write(w))) => {
            let answer = write(reader, &w, state).await;
            write_frame(&mut send, &codec, &Message::Written(answer)).await?;
            let _ = send.finish();
            return Ok(());
        }
        other => {
            let msg = match other {
                Ok(Some(m)) => format!("expected Fetch or Subscribe, got {}", m.name()),
                Ok(None) => "empty stream".to_string(),
                Err(e) => e.to_string(),
            };
            return reply_error(
                &mut send,
                &codec,
                None,
                ErrorCode::BadRequest,
                msg,
                state,
                started,
            )
            .await;
        }
    };
    // A passed-through request's body follows its head; it is read whole (bounded by
    // `max_object_bytes`) before the upstream is asked, so a broken one is never half sent.
    let body = if fetch.body_length > 0 {
        let limit = state.config.max_object_bytes as u64;
        let read = if fetch.body_length > limit {
            Err(format!(
                "request body of {} bytes exceeds the {limit}-byte limit",
                fetch.body_length
            ))
        } else {
            shoal_cache_core::io::BodyStream::new(reader, Some(fetch.body_length))
                .collect()
                .await
                .map_err(|e| format!("request body: {e}"))
        };
        match read {
            Ok(b) => b,
            Err(msg) => {
                let status = if fetch.body_length > limit { 413 } else { 400 };
                let (h, b) = simple(fetch.request_id, status, format!("{msg}\n"));
                state.metrics.fetch(FetchResult::BadRequest, 0);
                send_whole(&mut send, &codec, h, &Body::Memory(b), fetch.request_id).await?;
                let _ = send.finish();
                return Ok(());
            }
        }
    } else {
        Bytes::new()
    };
    if let Err(e) = respond(&mut send, &codec, &fetch, body, state).await {
        // Reset rather than finish: the edge must see a broken body, never a short one.
        let _ = send.reset(1u32.into());
        return Err(e);
    }
    send.finish()
        .map_err(|e| OriginError::Transport(e.to_string()))?;
    state.metrics.latency(started.elapsed().as_secs_f64());
    Ok(())
}

/// Carries out a write an edge forwarded; every failure becomes a status for the client.
async fn write(
    reader: FrameReader<quinn::RecvStream>,
    w: &shoal_cache_core::wire::WriteRequest,
    state: &Arc<State>,
) -> shoal_cache_core::wire::Written {
    use shoal_cache_core::wire::{WriteMethod, Written};
    let answer = |status: u16, message: String| Written {
        request_id: w.request_id,
        status,
        version: 0,
        etag: None,
        seq: None,
        headers: Vec::new(),
        message,
    };
    let writer = crate::Writer {
        state: state.clone(),
    };
    match w.method {
        WriteMethod::Put => {
            let limit = state.config.max_object_bytes as u64;
            if w.length > limit {
                return answer(
                    413,
                    format!("body of {} bytes exceeds the {limit}-byte limit", w.length),
                );
            }
            let body = match shoal_cache_core::io::BodyStream::new(reader, Some(w.length))
                .collect()
                .await
            {
                Ok(b) => b,
                Err(e) => return answer(400, format!("write body: {e}")),
            };
            let put = writer.put_versioned(
                &w.key,
                body,
                w.content_type.clone(),
                w.tags.clone(),
                w.version,
            );
            if let Ok((_, inv)) = &put {
                writer.settle(&w.key, inv.as_ref()).await;
            }
            match put {
                Ok((obj, inv)) => Written {
                    request_id: w.request_id,
                    status: 201,
                    version: obj.version,
                    etag: Some(obj.etag.clone()),
                    seq: inv.map(|i| i.seq),
                    headers: object_headers(state, &w.key, &obj),
                    message: String::new(),
                },
                Err(e @ (OriginError::BadPath { .. } | OriginError::BadTags(_))) => {
                    answer(400, e.to_string())
                }
                Err(e @ OriginError::Superseded { current, .. }) => Written {
                    version: current,
                    ..answer(409, e.to_string())
                },
                Err(e) => answer(500, e.to_string()),
            }
        }
        WriteMethod::Delete => match writer.delete(&w.key) {
            Ok((true, inv)) => {
                writer.settle(&w.key, inv.as_ref()).await;
                Written {
                    seq: inv.map(|i| i.seq),
                    ..answer(204, String::new())
                }
            }
            Ok((false, _)) => answer(404, format!("no object at {}", w.key)),
            Err(e) => answer(400, e.to_string()),
        },
    }
}

/// Serves one edge's subscription until it ends, then forgets the subscriber.
async fn subscription(
    mut send: quinn::SendStream,
    mut reader: FrameReader<quinn::RecvStream>,
    sub: Subscribe,
    state: &State,
    edge_id: &str,
    cancel: CancellationToken,
) -> Result<(), OriginError> {
    let inv = &state.invalidator;
    // The connection's Hello named the edge; a Subscribe cannot speak for another.
    let start = inv.subscribe(edge_id, sub.resume);
    let id = start.id;
    state.metrics.subscribers(inv.subscriber_count());
    let r = follow(&mut send, &mut reader, start, sub, edge_id, state, cancel).await;
    inv.unsubscribe(id);
    state.metrics.subscribers(inv.subscriber_count());
    if r.is_err() {
        let _ = send.reset(1u32.into());
    } else {
        let _ = send.finish();
    }
    r
}

async fn follow(
    send: &mut quinn::SendStream,
    reader: &mut FrameReader<quinn::RecvStream>,
    start: crate::invalidation::Start,
    sub: Subscribe,
    edge_id: &str,
    state: &State,
    cancel: CancellationToken,
) -> Result<(), OriginError> {
    let codec = FrameCodec::default();
    let inv = &state.invalidator;
    let beat = inv.heartbeat;
    let reset = matches!(start.replay, Replay::Reset);
    debug!(edge = %sub.edge_id, region = %sub.region, reset, seq = start.last_seq, "subscribed");
    write_frame(
        send,
        &codec,
        &Message::Subscribed(Subscribed {
            epoch: start.epoch,
            seq: start.last_seq,
            reset,
            heartbeat_ms: beat.as_millis() as u64,
            modes: state.modes.clone(),
        }),
    )
    .await?;
    let mut sent = match (&start.replay, sub.resume) {
        (Replay::Entries(_), Some(r)) => r.seq,
        _ => start.last_seq,
    };
    // What the edge has applied: where it resumed, or everything when it resets.
    let mut acked = sent;
    if let Replay::Entries(missed) = start.replay {
        send_all(send, &codec, missed, &mut sent).await?;
    }
    let mut live = start.live;
    let mut ticker = tokio::time::interval(beat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            m = live.recv() => match m {
                Ok(i) => send_all(send, &codec, vec![i], &mut sent).await?,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    match inv.catch_up(start.epoch, sent) {
                        Replay::Entries(missed) => send_all(send, &codec, missed, &mut sent).await?,
                        // Ending the stream makes the edge resubscribe, and be reset.
                        Replay::Reset => {
                            return Err(OriginError::Transport("subscriber fell behind the log".into()))
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = ticker.tick() => {
                if heard.elapsed() > beat * 3 {
                    return Err(OriginError::Transport(format!(
                        "no heartbeat from {} for {:?}", sub.edge_id, heard.elapsed()
                    )));
                }
                let hb = Message::Heartbeat(Heartbeat { seq: sent });
                write_frame(send, &codec, &hb).await?;
            }
            // Cancel-safe (see FrameReader::next).
            m = reader.next() => match m {
                Ok(Some(Message::Ack(a))) => {
                    heard = Instant::now();
                    acked = acked.max(a.seq);
                    inv.ack(start.id, a.seq);
                }
                // Each edge heartbeat is answered with a lease (zero: not renewed, as the
                // edge has not applied everything published yet).
                Ok(Some(Message::Heartbeat(_))) => {
                    heard = Instant::now();
                    let granted = inv.grant(edge_id, acked);
                    let lease = Message::Lease(shoal_cache_core::wire::Lease {
                        edge_id: edge_id.to_string(),
                        seq: sent,
                        duration_ms: granted.as_millis() as u64,
                    });
                    write_frame(send, &codec, &lease).await?;
                }
                Ok(Some(other)) => {
                    return Err(OriginError::Transport(format!(
                        "{} on a subscription stream", other.name()
                    )))
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(OriginError::Transport(e.to_string())),
            },
        }
    }
}

/// Sends the entries after `sent` (a replay may overlap the live feed), advancing `sent`.
async fn send_all(
    send: &mut quinn::SendStream,
    codec: &FrameCodec,
    entries: Vec<Invalidation>,
    sent: &mut u64,
) -> Result<(), OriginError> {
    for i in entries {
        if i.seq <= *sent {
            continue;
        }
        let seq = i.seq;
        write_frame(send, codec, &Message::Invalidate(i)).await?;
        *sent = seq;
    }
    Ok(())
}

async fn reply_error(
    send: &mut quinn::SendStream,
    codec: &FrameCodec,
    request_id: Option<u64>,
    code: ErrorCode,
    message: String,
    state: &State,
    started: Instant,
) -> Result<(), OriginError> {
    warn!(?code, %message, "rejecting stream");
    let msg = Message::Error(ErrorMessage {
        request_id,
        code,
        message,
    });
    write_frame(send, codec, &msg).await?;
    let _ = send.finish();
    state.metrics.fetch(FetchResult::BadRequest, 0);
    state.metrics.latency(started.elapsed().as_secs_f64());
    Ok(())
}

/// A small response with a text body (404, 400, 500).
fn simple(request_id: u64, status: u16, text: String) -> (ResponseHead, Bytes) {
    let body = Bytes::from(text);
    let head = ResponseHead {
        request_id,
        status,
        headers: vec![
            ("content-type".into(), "text/plain; charset=utf-8".into()),
            ("cache-control".into(), "no-store".into()),
            ("date".into(), httpdate_now()),
        ],
        length: BodyLength::Known(body.len() as u64),
        version: 0,
    };
    (head, body)
}

/// The headers an object is served with.
fn object_headers(state: &State, path: &str, obj: &crate::store::Object) -> Vec<(String, String)> {
    let mut headers = vec![
        ("content-type".into(), obj.content_type.clone()),
        (
            "cache-control".into(),
            obj.cache_control
                .clone()
                .unwrap_or_else(|| state.config.cache_control(path).to_string()),
        ),
        ("etag".into(), obj.etag.clone()),
        ("date".into(), httpdate_now()),
    ];
    if !obj.tags.is_empty() {
        headers.push(("surrogate-key".into(), obj.tags.join(" ")));
    }
    headers
}

fn httpdate_now() -> String {
    httpdate::fmt_http_date(SystemTime::now())
}

async fn respond(
    send: &mut quinn::SendStream,
    codec: &FrameCodec,
    f: &FetchRequest,
    request_body: Bytes,
    state: &State,
) -> Result<(), OriginError> {
    // The target is what the edge's cache key holds: path and query. Objects here are
    // addressed by path; the query reaches the origin so one that serves by query could.
    let path = f.key.split('?').next().unwrap_or_default();
    let read = f.method == "GET" || f.method == "HEAD";
    let held = if read {
        state.object(path).await
    } else {
        Err(OriginError::NotFound(path.to_string()))
    };
    if let Some(up) = &state.upstream
        && matches!(
            held,
            Err(OriginError::NotFound(_) | OriginError::BadPath { .. })
        )
    {
        return match up.forward(send, codec, f, request_body).await? {
            Ok(answered) => {
                state.metrics.fetch(FetchResult::Upstream, answered.bytes);
                if !answered.changed.is_empty() {
                    // The edge that passed it on has dropped its copies; every other
                    // edge learns of the change here, as of any purge.
                    state.invalidate(InvalidationTarget::Keys(answered.changed), false);
                }
                Ok(())
            }
            Err(failure) => {
                warn!("{} {}: {}", f.method, f.key, failure.message);
                state.metrics.fetch(FetchResult::UpstreamError, 0);
                // As an error, not a response: the edge may serve a stale copy instead.
                let msg = Message::Error(ErrorMessage {
                    request_id: Some(f.request_id),
                    code: failure.code,
                    message: failure.message,
                });
                write_frame(send, codec, &msg).await?;
                Ok(())
            }
        };
    }
    if !read {
        let (h, b) = simple(
            f.request_id,
            405,
            format!("{} is not served: this origin has no upstream\n", f.method),
        );
        state.metrics.fetch(FetchResult::BadRequest, 0);
        return send_whole(send, codec, h, &Body::Memory(b), f.request_id).await;
    }
    let (result, head, body) = match held {
        Ok(obj) => {
            let headers = object_headers(state, path, &obj);
            if f.if_none_match.as_deref() == Some(obj.etag.as_str()) {
                let nm = Message::NotModified(NotModified {
                    request_id: f.request_id,
                    etag: obj.etag.clone(),
                    headers,
                });
                state.metrics.fetch(FetchResult::NotModified, 0);
                write_frame(send, codec, &nm).await?;
                return Ok(());
            }
            let head = ResponseHead {
                request_id: f.request_id,
                status: 200,
                headers,
                length: BodyLength::Known(obj.body.len()),
                version: obj.version,
            };
            (FetchResult::Ok, head, obj.body.clone())
        }
        Err(OriginError::NotFound(p)) => {
            let (h, b) = simple(f.request_id, 404, format!("no object at {p}\n"));
            (FetchResult::NotFound, h, Body::Memory(b))
        }
        Err(e @ OriginError::BadPath { .. }) => {
            let (h, b) = simple(f.request_id, 400, format!("{e}\n"));
            (FetchResult::BadRequest, h, Body::Memory(b))
        }
        Err(e) => {
            warn!("fetch {}: {e}", f.key);
            let (h, b) = simple(
                f.request_id,
                500,
                "origin failed to read the object\n".into(),
            );
            (FetchResult::Error, h, Body::Memory(b))
        }
    };
    state.metrics.fetch(result, body.len());
    send_whole(send, codec, head, &body, f.request_id).await
}

/// A response head and its whole body, in chunks of at most [`MAX_CHUNK`].
async fn send_whole(
    send: &mut quinn::SendStream,
    codec: &FrameCodec,
    head: ResponseHead,
    body: &Body,
    request_id: u64,
) -> Result<(), OriginError> {
    write_frame(send, codec, &Message::ResponseHead(head)).await?;
    let mut chunks = Chunks::open(body).await?;
    let mut offset = 0u64;
    loop {
        let data = chunks.next(offset).await?;
        let last = offset + data.len() as u64 >= body.len();
        // Waits for QUIC flow control: a stalled reader stops the reads here.
        offset = send_chunk(send, codec, request_id, offset, data, last).await?;
        if last {
            return Ok(());
        }
    }
}

/// One body chunk at `offset`; returns the offset after it.
pub(crate) async fn send_chunk(
    send: &mut quinn::SendStream,
    codec: &FrameCodec,
    request_id: u64,
    offset: u64,
    data: Bytes,
    last: bool,
) -> Result<u64, OriginError> {
    let end = offset + data.len() as u64;
    let msg = Message::BodyChunk(BodyChunk {
        request_id,
        offset,
        data,
        last,
    });
    write_frame(send, codec, &msg).await?;
    Ok(end)
}

/// A body, one chunk of at most [`MAX_CHUNK`] bytes at a time.
enum Chunks<'a> {
    Memory(&'a Bytes),
    File {
        file: tokio::fs::File,
        len: u64,
        path: &'a std::path::Path,
    },
}

impl<'a> Chunks<'a> {
    async fn open(body: &'a Body) -> Result<Self, OriginError> {
        Ok(match body {
            Body::Memory(b) => Self::Memory(b),
            Body::File { path, len } => Self::File {
                file: tokio::fs::File::open(path)
                    .await
                    .map_err(|source| file_error(path, source))?,
                len: *len,
                path,
            },
        })
    }

    /// The chunk at `offset` (empty only for an empty body).
    async fn next(&mut self, offset: u64) -> Result<Bytes, OriginError> {
        match self {
            Self::Memory(b) => {
                let start = usize::try_from(offset).unwrap_or(b.len()).min(b.len());
                Ok(b.slice(start..(start + MAX_CHUNK).min(b.len())))
            }
            Self::File { file, len, path } => {
                use tokio::io::AsyncReadExt;
                let want = (*len - offset.min(*len)).min(MAX_CHUNK as u64) as usize;
                let mut buf = vec![0u8; want];
                file.read_exact(&mut buf)
                    .await
                    .map_err(|source| file_error(path, source))?;
                Ok(Bytes::from(buf))
            }
        }
    }
}

/// A file that shrank or vanished mid-fetch: the stream breaks, so the edge never stores a
/// partial body as complete.
fn file_error(path: &std::path::Path, source: std::io::Error) -> OriginError {
    OriginError::Io {
        path: path.display().to_string(),
        source,
    }
}
