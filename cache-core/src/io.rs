//! Framed reading and writing of [`Message`]s over async byte streams (feature `io`).

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::WireError;
use crate::wire::{FrameCodec, Message};

/// Reads frames from a stream, buffering at most one frame beyond what it has returned.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    codec: FrameCodec,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads from `inner` with `codec`'s limits.
    pub fn new(inner: R, codec: FrameCodec) -> Self {
        Self {
            inner,
            buf: BytesMut::with_capacity(8 * 1024),
            codec,
        }
    }

    /// The next message, or `None` at a clean end of stream (between frames). Cancel-safe:
    /// bytes read are kept in the buffer, so it can be a branch of `select!`.
    pub async fn next(&mut self) -> Result<Option<Message>, WireError> {
        loop {
            match self.codec.decode(&self.buf) {
                Ok((msg, used)) => {
                    self.buf.advance(used);
                    return Ok(Some(msg));
                }
                Err(WireError::Incomplete { needed }) => {
                    // The header was checked (length within the limit) before we reserve.
                    self.buf.reserve(needed);
                    let n = self
                        .inner
                        .read_buf(&mut self.buf)
                        .await
                        .map_err(|e| WireError::Io(e.to_string()))?;
                    if n == 0 {
                        return if self.buf.is_empty() {
                            Ok(None)
                        } else {
                            Err(WireError::Truncated(self.buf.len()))
                        };
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The underlying stream.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// A response body as it arrives on a stream of [`Message::BodyChunk`] frames: the one
/// place that checks chunk offsets, the announced length and the final flag, whether the
/// body is collected whole (to store it) or passed on chunk by chunk (to stream it).
#[derive(Debug)]
pub struct BodyStream<R> {
    reader: FrameReader<R>,
    received: u64,
    length: Option<u64>,
    done: bool,
}

impl<R: AsyncRead + Unpin> BodyStream<R> {
    /// The body that follows a response head on `reader`; `length` is the announced
    /// length (`None`: streamed, unknown until the last chunk).
    pub fn new(reader: FrameReader<R>, length: Option<u64>) -> Self {
        Self {
            reader,
            received: 0,
            length,
            done: length == Some(0),
        }
    }

    /// The next chunk, or `None` once the last one has been returned.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, WireError> {
        if self.done {
            return Ok(None);
        }
        let bad = |m: String| Err(WireError::Body(m));
        let c = match self.reader.next().await? {
            Some(Message::BodyChunk(c)) => c,
            Some(_) => return bad("unexpected message inside a body".into()),
            None => return bad(format!("stream ended after {} body bytes", self.received)),
        };
        if c.offset != self.received {
            return bad(format!(
                "chunk at offset {} where {} was expected",
                c.offset, self.received
            ));
        }
        self.received += c.data.len() as u64;
        match self.length {
            Some(n) if self.received > n => {
                return bad(format!("{} bytes exceed the announced {n}", self.received));
            }
            Some(n) if c.last && self.received != n => {
                return bad(format!("body of {} bytes, announced {n}", self.received));
            }
            _ => {}
        }
        self.done = c.last;
        Ok(Some(c.data))
    }

    /// The whole body.
    pub async fn collect(mut self) -> Result<Bytes, WireError> {
        let cap = self.length.unwrap_or(0).min(64 << 20);
        let mut body = BytesMut::with_capacity(usize::try_from(cap).unwrap_or(0));
        while let Some(c) = self.next_chunk().await? {
            body.extend_from_slice(&c);
        }
        Ok(body.freeze())
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The announced length, if any.
    pub fn length(&self) -> Option<u64> {
        self.length
    }

    /// The chunks as a `Stream`, for an HTTP response body.
    pub fn into_stream(
        self,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
    where
        R: Send + 'static,
    {
        futures_util::stream::unfold(Some(self), |body| async move {
            let mut body = body?;
            match body.next_chunk().await {
                Ok(Some(c)) => Some((Ok(c), Some(body))),
                Ok(None) => None,
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
            }
        })
    }
}

/// A TCP listener on `addr` with a listen backlog of `backlog` (the kernel caps it at
/// `net.core.somaxconn`): tokio's `TcpListener::bind` uses 1024, too few for a connection
/// spike, and 128 was the old default.
pub fn listen(
    addr: std::net::SocketAddr,
    backlog: u32,
) -> std::io::Result<tokio::net::TcpListener> {
    let s = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(backlog)
}

/// Encodes `msg` and writes it as one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    codec: &FrameCodec,
    msg: &Message,
) -> Result<(), WireError> {
    let frame = codec.encode(msg)?;
    w.write_all(&frame)
        .await
        .map_err(|e| WireError::Io(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{FetchRequest, Heartbeat};

    #[tokio::test]
    async fn reads_frames_split_at_any_point() {
        let codec = FrameCodec::default();
        let msgs = vec![
            Message::Heartbeat(Heartbeat { seq: 1 }),
            Message::Fetch(FetchRequest::get(2, "/a")),
        ];
        let mut bytes = Vec::new();
        for m in &msgs {
            write_frame(&mut bytes, &codec, m).await.unwrap();
        }
        // A reader that yields one byte at a time still reassembles both frames.
        let (mut tx, rx) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move {
            tx.write_all(&bytes).await.unwrap();
        });
        let mut r = FrameReader::new(rx, codec);
        assert_eq!(r.next().await.unwrap(), Some(msgs[0].clone()));
        assert_eq!(r.next().await.unwrap(), Some(msgs[1].clone()));
        writer.await.unwrap();
        assert_eq!(r.next().await.unwrap(), None);
        // A stream cut inside a frame is an error, not a clean end.
        let cut = codec.encode(&msgs[1]).unwrap();
        let mut r = FrameReader::new(&cut[..cut.len() - 1], codec);
        assert!(matches!(r.next().await, Err(WireError::Truncated(_))));
    }

    /// One body chunk: offset, data, last.
    type Chunk<'a> = (u64, &'a [u8], bool);

    async fn body_of(chunks: &[Chunk<'_>], length: Option<u64>) -> Result<Bytes, WireError> {
        let codec = FrameCodec::default();
        let mut bytes = Vec::new();
        for (offset, data, last) in chunks {
            let m = Message::BodyChunk(crate::wire::BodyChunk {
                request_id: 1,
                offset: *offset,
                data: Bytes::copy_from_slice(data),
                last: *last,
            });
            write_frame(&mut bytes, &codec, &m).await.unwrap();
        }
        BodyStream::new(FrameReader::new(&bytes[..], codec), length)
            .collect()
            .await
    }

    #[tokio::test]
    async fn body_offsets_and_lengths_are_checked_in_one_place() {
        let ok = [(0, &b"ab"[..], false), (2, &b"cd"[..], true)];
        assert_eq!(
            body_of(&ok, Some(4)).await.unwrap(),
            Bytes::from_static(b"abcd")
        );
        assert_eq!(
            body_of(&ok, None).await.unwrap(),
            Bytes::from_static(b"abcd")
        );
        assert_eq!(body_of(&[], Some(0)).await.unwrap(), Bytes::new());
        let cases: [(&[Chunk<'_>], Option<u64>, &str); 4] = [
            (&[(0, b"ab", false), (3, b"d", true)], Some(3), "offset 3"),
            (&[(0, b"abcdef", true)], Some(4), "exceed"),
            (&[(0, b"ab", true)], Some(4), "announced 4"),
            (&[(0, b"ab", false)], Some(4), "stream ended"),
        ];
        for (chunks, len, why) in cases {
            let e = body_of(chunks, len).await.unwrap_err().to_string();
            assert!(e.contains(why), "{e:?} should mention {why:?}");
        }
    }
}
