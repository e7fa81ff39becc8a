//! The edge ↔ origin wire protocol: versioned serde messages in length-prefixed frames.
//!
//! A frame is an 8-byte header followed by the body:
//!
//! ```text
//! +------+------+---------+-------+-------------------+------------------+
//! | 'S'  | 'H'  | version | flags | body length (u32, big endian)        |
//! +------+------+---------+-------+-------------------+------------------+
//! | body: one [`Message`], encoded by the codec below (bincode today)   |
//! ```
//!
//! The header is checked (magic, version, flags, `length <= max_frame`) *before* any buffer
//! for the body exists, and the body decoder runs under a byte limit equal to the frame
//! length, so hostile input can neither panic the decoder nor make it allocate beyond the
//! frame limit. All bincode use is in the private `codec` module: swapping the encoding
//! (postcard, say) is a change to that module and a version bump.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::error::WireError;

/// The protocol version this build speaks; carried in every frame header.
pub const PROTOCOL_VERSION: u8 = 5;
/// ALPN id of the edge ↔ origin protocol over QUIC.
pub const ALPN: &[u8] = b"shoal/1";
/// Frame magic: ASCII `SH`.
pub const MAGIC: [u8; 2] = *b"SH";
/// Bytes in a frame header.
pub const HEADER_LEN: usize = 8;
/// Largest body chunk a sender puts in one [`BodyChunk`]: 64 KiB.
pub const MAX_CHUNK: usize = 64 * 1024;
/// Default maximum frame body: room for a full chunk plus a generous response head.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

/// Every message edges and origin exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Edge → origin: fetch one object.
    Fetch(FetchRequest),
    /// Origin → edge: status and headers of a fetched object; body chunks follow.
    ResponseHead(ResponseHead),
    /// Origin → edge: part of a body.
    BodyChunk(BodyChunk),
    /// Origin → edge: the edge's conditional ETag still matches; no body follows.
    NotModified(NotModified),
    /// Origin → edge: drop cached objects.
    Invalidate(Invalidation),
    /// Edge → origin: an invalidation (or lease grant) was applied.
    Ack(Ack),
    /// Edge → origin: subscribe to invalidations, resuming after a sequence number.
    Subscribe(Subscribe),
    /// Origin → edge: a lease on cached content, valid for a duration.
    Lease(Lease),
    /// Either way: liveness, carrying the sender's last sequence number.
    Heartbeat(Heartbeat),
    /// Either way: a request or the stream failed.
    Error(ErrorMessage),
    /// Edge → origin, on the first stream of every connection: who it is, and its token.
    /// The origin serves nothing on a connection before this checks out.
    Hello(Hello),
    /// Origin → edge: the answer to [`Subscribe`]: where the log stands, and whether the
    /// edge must drop what it holds because the log no longer reaches back to it.
    Subscribed(Subscribed),
    /// Edge → origin: write or delete an object on behalf of a client; for a `Put`, body
    /// chunks follow (the last has `last` set).
    Write(WriteRequest),
    /// Origin → edge: the outcome of a [`WriteRequest`].
    Written(Written),
}

impl Message {
    /// The variant's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Fetch(_) => "Fetch",
            Self::ResponseHead(_) => "ResponseHead",
            Self::BodyChunk(_) => "BodyChunk",
            Self::NotModified(_) => "NotModified",
            Self::Invalidate(_) => "Invalidate",
            Self::Ack(_) => "Ack",
            Self::Subscribe(_) => "Subscribe",
            Self::Lease(_) => "Lease",
            Self::Heartbeat(_) => "Heartbeat",
            Self::Error(_) => "Error",
            Self::Hello(_) => "Hello",
            Self::Subscribed(_) => "Subscribed",
            Self::Write(_) => "Write",
            Self::Written(_) => "Written",
        }
    }
}

/// Edge → origin: fetch `key`, optionally conditional on an ETag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    /// Correlates the answer with the request in logs and traces.
    pub request_id: u64,
    /// What to fetch: the path and query the edge's cache key holds (see
    /// [`crate::key::CacheKey::path_and_query`]).
    pub key: String,
    /// ETag the edge already holds: a match is answered with [`NotModified`].
    pub if_none_match: Option<String>,
    /// The request method: `GET` for a cache fill; any other for a request the edge passes
    /// through (never cached).
    pub method: String,
    /// The end-to-end request headers (lower-case names), hop-by-hop ones removed and
    /// `Forwarded`/`X-Forwarded-For` set by the edge: what an upstream HTTP server sees.
    pub headers: Vec<(String, String)>,
    /// Bytes of request body that follow as [`BodyChunk`]s (the last has `last` set); 0:
    /// none.
    pub body_length: u64,
}

impl FetchRequest {
    /// A plain `GET` of `key` without headers or body: what a cache fill of Shoal's own
    /// content asks for.
    pub fn get(request_id: u64, key: impl Into<String>) -> Self {
        Self {
            request_id,
            key: key.into(),
            if_none_match: None,
            method: "GET".into(),
            headers: Vec::new(),
            body_length: 0,
        }
    }
}

/// How long a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BodyLength {
    /// Exactly this many bytes follow in chunks.
    Known(u64),
    /// Unknown length: chunks follow until one has `last` set.
    Streamed,
}

/// Origin → edge: the head of a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseHead {
    /// Request this answers.
    pub request_id: u64,
    /// HTTP status code.
    pub status: u16,
    /// Response headers that matter to caching and clients (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Body length.
    pub length: BodyLength,
    /// Object version at the origin (monotonic per key).
    pub version: u64,
}

/// Origin → edge: `data` at `offset` of the body of `request_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyChunk {
    /// Request this belongs to.
    pub request_id: u64,
    /// Byte offset of `data` within the body.
    pub offset: u64,
    /// At most [`MAX_CHUNK`] bytes.
    pub data: Bytes,
    /// This is the final chunk.
    pub last: bool,
}

/// Origin → edge: the conditional fetch matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotModified {
    /// Request this answers.
    pub request_id: u64,
    /// The matching ETag.
    pub etag: String,
    /// Fresh caching headers (Cache-Control, Date, …) to update the stored object with.
    pub headers: Vec<(String, String)>,
}

/// What an invalidation drops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvalidationTarget {
    /// These exact keys.
    Keys(Vec<String>),
    /// Every key starting with this prefix.
    Prefix(String),
    /// Every object carrying this tag (surrogate key).
    Tag(String),
}

/// Origin → edge: drop what `target` names. Sequence numbers are per origin and increase by
/// one, so an edge can tell a gap (and resubscribe) from a duplicate (a no-op).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invalidation {
    /// Position in the origin's invalidation log.
    pub seq: u64,
    /// What to drop.
    pub target: InvalidationTarget,
    /// Soft purge: mark the objects stale (so stale-while-revalidate and stale-if-error
    /// still apply) instead of dropping them.
    pub soft: bool,
}

/// Edge → origin: `seq` has been applied by `edge_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Acknowledging edge.
    pub edge_id: String,
    /// Sequence number applied (everything up to it has been applied).
    pub seq: u64,
}

/// Edge → origin: the connection's first message. Its `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The edge's node id.
    pub edge_id: String,
    /// Its region.
    pub region: String,
    /// The shared secret edges present to the origin, if one is configured.
    pub token: Option<String>,
}

impl std::fmt::Debug for Hello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hello")
            .field("edge_id", &self.edge_id)
            .field("region", &self.region)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Edge → origin: subscribe to invalidations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribe {
    /// Subscribing edge.
    pub edge_id: String,
    /// Its region.
    pub region: String,
    /// Where it stands in an origin's log: `None` on first contact, when it holds nothing
    /// it could have missed an invalidation for.
    pub resume: Option<Resume>,
}

/// A position in one origin's invalidation log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The log's epoch: a restarted origin has a new one, and its sequence numbers mean
    /// nothing to an edge that followed the old one.
    pub epoch: u64,
    /// Last sequence number applied (everything up to it has been applied).
    pub seq: u64,
}

/// Origin → edge: the subscription is live; invalidations after `seq` follow, then live ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribed {
    /// The log's epoch.
    pub epoch: u64,
    /// Sequence number of the last entry the edge has (after the replay that follows, when
    /// not `reset`), so it knows where it stands.
    pub seq: u64,
    /// The log does not reach back to the edge's position (or the epoch changed): the edge
    /// must drop everything it holds from this origin before serving from its cache again.
    pub reset: bool,
    /// How often each side sends a [`Heartbeat`]; three missed ones end the subscription.
    pub heartbeat_ms: u64,
    /// The consistency mode of every path.
    pub modes: crate::consistency::Modes,
}

/// What a [`WriteRequest`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteMethod {
    /// Store the body that follows.
    Put,
    /// Remove the object.
    Delete,
}

/// Edge → origin: a client's write, forwarded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteRequest {
    /// Correlates the answer.
    pub request_id: u64,
    /// The object's path.
    pub key: String,
    /// Put or delete.
    pub method: WriteMethod,
    /// Media type of a put.
    pub content_type: Option<String>,
    /// Surrogate keys of a put.
    pub tags: Vec<String>,
    /// Body length of a put (chunks follow); 0 for a delete.
    pub length: u64,
    /// The version an edge gave a `write-back` put when it acknowledged it; the origin
    /// keeps it unless it already holds a newer version (last writer wins). `None`: the
    /// origin assigns the next version.
    pub version: Option<u64>,
}

/// Origin → edge: the write's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// Request this answers.
    pub request_id: u64,
    /// HTTP status for the client (201, 204, 400, 404, 413, …).
    pub status: u16,
    /// The object's new version (0 when nothing was written).
    pub version: u64,
    /// Its new ETag.
    pub etag: Option<String>,
    /// The invalidation the write made, if its mode pushes writes.
    pub seq: Option<u64>,
    /// The headers a fetch of the written object would carry (so the writing edge can
    /// cache what it wrote without fetching it back).
    pub headers: Vec<(String, String)>,
    /// Why, when it failed.
    pub message: String,
}

/// Origin → edge: the edge may serve cached content until the lease runs out, unless it has
/// been invalidated; an edge that cannot renew must stop serving at expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Lease holder.
    pub edge_id: String,
    /// Invalidation sequence number the lease was granted at.
    pub seq: u64,
    /// Lease duration in milliseconds, from receipt.
    pub duration_ms: u64,
}

/// Either way: still alive; `seq` is the sender's latest sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Sender's latest sequence number.
    pub seq: u64,
}

/// Classified failure codes carried in [`ErrorMessage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The key does not exist at the origin.
    NotFound,
    /// The request was malformed.
    BadRequest,
    /// The peer is overloaded or shutting down; retry elsewhere or later.
    Unavailable,
    /// An internal failure.
    Internal,
    /// The peer speaks another protocol version.
    Version,
    /// The peer did not authenticate (no or a wrong token).
    Unauthorized,
    /// The origin's upstream HTTP server could not be reached or broke its answer.
    UpstreamFailed,
    /// The origin's upstream HTTP server sent no response head in time.
    UpstreamTimeout,
}

/// Either way: a request (`request_id`) or the whole stream (`None`) failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// Failed request, or `None` for the stream.
    pub request_id: Option<u64>,
    /// Classified code.
    pub code: ErrorCode,
    /// Human-readable reason.
    pub message: String,
}

/// Encodes and decodes frames under a hard maximum frame size.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_frame: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl FrameCodec {
    /// A codec whose frames carry at most `max_frame` body bytes (capped at `u32::MAX`).
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame: max_frame.min(u32::MAX as usize),
        }
    }

    /// The maximum body length of a frame.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Encodes `msg` as one frame appended to `dst`.
    pub fn encode_into(&self, msg: &Message, dst: &mut BytesMut) -> Result<(), WireError> {
        let body = codec::encode(msg, self.max_frame)?;
        dst.reserve(HEADER_LEN + body.len());
        dst.put_slice(&MAGIC);
        dst.put_u8(PROTOCOL_VERSION);
        dst.put_u8(0);
        // `codec::encode` enforces `body.len() <= max_frame <= u32::MAX`.
        dst.put_u32(body.len() as u32);
        dst.put_slice(&body);
        Ok(())
    }

    /// Encodes `msg` as one frame.
    pub fn encode(&self, msg: &Message) -> Result<Bytes, WireError> {
        let mut buf = BytesMut::new();
        self.encode_into(msg, &mut buf)?;
        Ok(buf.freeze())
    }

    /// Checks a frame header and returns the body length it announces. Needs only the
    /// first [`HEADER_LEN`] bytes, so a reader can size its read before buffering a body.
    pub fn check_header(&self, buf: &[u8]) -> Result<usize, WireError> {
        if buf.len() < HEADER_LEN {
            // Check what is there already, so garbage fails fast instead of waiting.
            if !buf.is_empty() && buf[0] != MAGIC[0] || buf.len() >= 2 && buf[1] != MAGIC[1] {
                let mut m = [0u8; 2];
                m[..buf.len().min(2)].copy_from_slice(&buf[..buf.len().min(2)]);
                return Err(WireError::BadMagic(m));
            }
            return Err(WireError::Incomplete {
                needed: HEADER_LEN - buf.len(),
            });
        }
        if buf[..2] != MAGIC {
            return Err(WireError::BadMagic([buf[0], buf[1]]));
        }
        if buf[2] != PROTOCOL_VERSION {
            return Err(WireError::UnsupportedVersion {
                got: buf[2],
                supported: PROTOCOL_VERSION,
            });
        }
        if buf[3] != 0 {
            return Err(WireError::BadFlags(buf[3]));
        }
        let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
        if len > self.max_frame {
            return Err(WireError::FrameTooLarge {
                len: len as u64,
                max: self.max_frame,
            });
        }
        Ok(len)
    }

    /// Decodes the frame at the start of `buf`, returning the message and the bytes it
    /// used. [`WireError::Incomplete`] means "read more"; any other error is fatal for the
    /// stream.
    pub fn decode(&self, buf: &[u8]) -> Result<(Message, usize), WireError> {
        let len = self.check_header(buf)?;
        let total = HEADER_LEN + len;
        if buf.len() < total {
            return Err(WireError::Incomplete {
                needed: total - buf.len(),
            });
        }
        let msg = codec::decode(&buf[HEADER_LEN..total], len)?;
        Ok((msg, total))
    }
}

/// The only place bincode is used. Options: varint integers, byte limit, and trailing bytes
/// rejected, identical on both ends.
mod codec {
    use bincode::Options;

    use super::Message;
    use crate::error::WireError;

    fn options(limit: usize) -> impl Options {
        bincode::DefaultOptions::new()
            .with_varint_encoding()
            .with_limit(limit as u64)
            .reject_trailing_bytes()
    }

    pub(super) fn encode(msg: &Message, limit: usize) -> Result<Vec<u8>, WireError> {
        options(limit)
            .serialize(msg)
            .map_err(|e| WireError::Encode(e.to_string()))
    }

    pub(super) fn decode(body: &[u8], limit: usize) -> Result<Message, WireError> {
        options(limit)
            .deserialize(body)
            .map_err(|e| WireError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch() -> Message {
        Message::Fetch(FetchRequest {
            request_id: 7,
            key: "example.com/video/seg1.ts".into(),
            if_none_match: Some("\"v3\"".into()),
            method: "GET".into(),
            headers: vec![("x-forwarded-for".into(), "192.0.2.1".into())],
            body_length: 0,
        })
    }

    #[test]
    fn round_trip_and_incomplete() {
        let c = FrameCodec::default();
        let f = c.encode(&fetch()).unwrap();
        assert_eq!(c.decode(&f).unwrap(), (fetch(), f.len()));
        for cut in 0..f.len() {
            match c.decode(&f[..cut]) {
                Err(WireError::Incomplete { needed }) => {
                    // Before the header is whole only the header's remainder is known.
                    let want = if cut < HEADER_LEN {
                        HEADER_LEN - cut
                    } else {
                        f.len() - cut
                    };
                    assert_eq!(needed, want)
                }
                other => panic!("prefix of {cut} bytes gave {other:?}"),
            }
        }
    }

    #[test]
    fn header_checks_come_before_the_body() {
        let c = FrameCodec::new(1024);
        let mut h = [b'S', b'H', PROTOCOL_VERSION, 0, 0, 0, 0, 0];
        h[4..].copy_from_slice(&(1025u32).to_be_bytes());
        assert_eq!(
            c.decode(&h),
            Err(WireError::FrameTooLarge {
                len: 1025,
                max: 1024
            })
        );
        assert_eq!(
            c.decode(b"GET / HTTP/1.1"),
            Err(WireError::BadMagic(*b"GE"))
        );
        assert_eq!(c.decode(b"X"), Err(WireError::BadMagic([b'X', 0])));
        let v9 = [b'S', b'H', 9, 0, 0, 0, 0, 1, 0];
        assert!(matches!(
            c.decode(&v9),
            Err(WireError::UnsupportedVersion { got: 9, .. })
        ));
        let flags = [b'S', b'H', PROTOCOL_VERSION, 1, 0, 0, 0, 0];
        assert_eq!(c.decode(&flags), Err(WireError::BadFlags(1)));
    }

    #[test]
    fn oversized_message_is_an_encode_error() {
        let c = FrameCodec::new(100);
        let big = Message::BodyChunk(BodyChunk {
            request_id: 1,
            offset: 0,
            data: Bytes::from(vec![0u8; 200]),
            last: true,
        });
        assert!(matches!(c.encode(&big), Err(WireError::Encode(_))));
    }

    #[test]
    fn trailing_bytes_inside_a_frame_are_rejected() {
        let c = FrameCodec::default();
        let f = c.encode(&fetch()).unwrap();
        let mut v = f.to_vec();
        v.push(0);
        let len = (v.len() - HEADER_LEN) as u32;
        v[4..8].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(c.decode(&v), Err(WireError::Malformed(_))));
    }

    #[test]
    fn huge_length_prefix_inside_body_does_not_allocate() {
        // Variant 6 (Lease) with an edge_id string whose varint length (tag 253: u64 follows)
        // claims u64::MAX bytes.
        let c = FrameCodec::default();
        let body = [6u8, 253, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        let mut f = vec![b'S', b'H', PROTOCOL_VERSION, 0];
        f.extend_from_slice(&(body.len() as u32).to_be_bytes());
        f.extend_from_slice(&body);
        assert!(matches!(c.decode(&f), Err(WireError::Malformed(_))));
    }

    #[test]
    fn hello_debug_hides_the_token() {
        let h = Message::Hello(Hello {
            edge_id: "e1".into(),
            region: "eu".into(),
            token: Some("CANARY-SECRET".into()),
        });
        let shown = format!("{h:?}");
        assert!(shown.contains("e1") && !shown.contains("CANARY"), "{shown}");
    }
}
