//! The QUIC server: one bidirectional stream per fetch.
//!
//! The edge sends one [`Message::Fetch`] frame and finishes its side. The origin answers with
//! a [`Message::ResponseHead`] followed by body chunks of at most 64 KiB (so a large segment
//! never sits whole in one message), or a [`Message::NotModified`] when the edge's ETag still
//! matches, then finishes the stream.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use shoal_cache_core::io::write_frame;
use shoal_cache_core::wire::{
    Ack, BodyChunk, BodyLength, ErrorCode, ErrorMessage, FetchRequest, FrameCodec, Hello,
    MAX_CHUNK, Message, NotModified, ResponseHead,
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
    match tokio::time::timeout(HELLO_TIMEOUT, hello(&conn, &state)).await {
        Ok(Ok(h)) => debug!(edge = %h.edge_id, region = %h.region, "edge connected"),
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
    }
    loop {
        let stream = tokio::select! {
            () = cancel.cancelled() => return,
            s = conn.accept_bi() => s,
        };
        match stream {
            Ok((send, recv)) => {
                let state = state.clone();
                tokio::spawn(async move {
                    if let Err(e) = fetch_stream(send, recv, &state).await {
                        debug!("fetch stream: {e}");
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

async fn fetch_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    state: &State,
) -> Result<(), OriginError> {
    let started = Instant::now();
    let codec = FrameCodec::default();
    let raw = recv
        .read_to_end(MAX_REQUEST)
        .await
        .map_err(|e| OriginError::Transport(e.to_string()))?;
    let fetch = match codec.decode(&raw) {
        Ok((Message::Fetch(f), _)) => f,
        Ok((other, _)) => {
            let msg = format!("expected a fetch request, got {}", other.name());
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
        Err(e) => {
            return reply_error(
                &mut send,
                &codec,
                None,
                ErrorCode::BadRequest,
                e.to_string(),
                state,
                started,
            )
            .await;
        }
    };
    if let Err(e) = respond(&mut send, &codec, &fetch, state).await {
        // Reset rather than finish: the edge must see a broken body, never a short one.
        let _ = send.reset(1u32.into());
        return Err(e);
    }
    send.finish()
        .map_err(|e| OriginError::Transport(e.to_string()))?;
    state.metrics.latency(started.elapsed().as_secs_f64());
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

fn httpdate_now() -> String {
    httpdate::fmt_http_date(SystemTime::now())
}

async fn respond(
    send: &mut quinn::SendStream,
    codec: &FrameCodec,
    f: &FetchRequest,
    state: &State,
) -> Result<(), OriginError> {
    // The target is what the edge's cache key holds: path and query. Objects here are
    // addressed by path; the query reaches the origin so one that serves by query could.
    let path = f.key.split('?').next().unwrap_or_default();
    let (result, head, body) = match state.store.get(path).await {
        Ok(obj) => {
            let cc = state.config.cache_control(path).to_string();
            let headers = vec![
                ("content-type".into(), obj.content_type.clone()),
                ("cache-control".into(), cc),
                ("etag".into(), obj.etag.clone()),
                ("date".into(), httpdate_now()),
            ];
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
    write_frame(send, codec, &Message::ResponseHead(head)).await?;
    let mut chunks = Chunks::open(&body).await?;
    let mut offset = 0u64;
    loop {
        let data = chunks.next(offset).await?;
        let end = offset + data.len() as u64;
        let last = end >= body.len();
        let chunk = Message::BodyChunk(BodyChunk {
            request_id: f.request_id,
            offset,
            data,
            last,
        });
        // Waits for QUIC flow control: a stalled reader stops the reads here.
        write_frame(send, codec, &chunk).await?;
        offset = end;
        if last {
            return Ok(());
        }
    }
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
