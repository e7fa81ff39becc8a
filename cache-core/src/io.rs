//! Framed reading and writing of [`Message`]s over async byte streams (feature `io`).

use bytes::{Buf, BytesMut};
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

    /// The next message, or `None` at a clean end of stream (between frames).
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
            Message::Fetch(FetchRequest {
                request_id: 2,
                key: "/a".into(),
                if_none_match: None,
            }),
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
}
