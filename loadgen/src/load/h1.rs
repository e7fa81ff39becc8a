//! The generator's HTTP/1.1 keep-alive connection: one request in flight, written with one
//! `write` from a reused buffer, the answer's head parsed in place by `httparse` and its
//! body read and dropped by its framing (RFC 9112 §6: `Content-Length`, chunked, or until
//! close). It does what wrk does per request and no more, so the generator is not the
//! bottleneck of the benchmarks it drives (hyper's client, a connection task and a request
//! channel per connection and a header map per answer, cost it a quarter of its rate).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bytes read at a time (and kept between requests).
const READ: usize = 16 * 1024;
/// A response head (status line and fields) longer than this is refused.
const MAX_HEAD: usize = 64 * 1024;
/// Fields parsed per head; a head with more is refused.
const MAX_FIELDS: usize = 64;
/// A chunk-size line or trailer field longer than this is refused.
const MAX_LINE: usize = 4 * 1024;

/// What an answer said, for the generator's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answer {
    /// Its status code.
    pub status: u16,
    /// `Cache-Status` said it was a hit.
    pub hit: bool,
    /// The connection may carry another request.
    pub reusable: bool,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H1Error {
    /// The connection was closed before any byte of an answer (a keep-alive connection
    /// the server was closing): nothing was served, so a GET may be sent again.
    #[error("connection closed before any answer")]
    Unanswered,
    /// The connection failed part-way through the answer.
    #[error("connection failed mid-answer: {0}")]
    Io(#[from] std::io::Error),
    /// The answer was not HTTP/1.1 the generator can read.
    #[error("malformed answer: {0}")]
    Malformed(String),
}

/// One keep-alive connection to an edge.
#[derive(Debug)]
pub(crate) struct H1 {
    stream: TcpStream,
    buf: BytesMut,
    req: Vec<u8>,
}

impl H1 {
    /// Connects (TCP, `TCP_NODELAY`) within `within`.
    pub(crate) async fn connect(addr: SocketAddr, within: Duration) -> Result<Self, String> {
        let stream = tokio::time::timeout(within, TcpStream::connect(addr))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        Ok(Self {
            stream,
            buf: BytesMut::with_capacity(READ),
            req: Vec::with_capacity(256),
        })
    }

    /// `GET path` with `Host: host`; reads the whole answer.
    pub(crate) async fn get(&mut self, path: &str, host: &[u8]) -> Result<Answer, H1Error> {
        self.req.clear();
        self.req.extend_from_slice(b"GET ");
        self.req.extend_from_slice(path.as_bytes());
        self.req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        self.req.extend_from_slice(host);
        self.req.extend_from_slice(b"\r\n\r\n");
        if self.stream.write_all(&self.req).await.is_err() {
            // A reset or closed socket before anything was read: the server closed it.
            return Err(H1Error::Unanswered);
        }
        self.buf.clear();
        let mut heard = false;
        let head = loop {
            if let Some(head) = parse_head(&self.buf)? {
                // Interim answers (103 Early Hints, 100 Continue) come before the final one.
                if (100..200).contains(&head.status) {
                    self.buf.advance(head.len);
                    continue;
                }
                break head;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(H1Error::Malformed(format!("head over {MAX_HEAD} bytes")));
            }
            match self.fill().await {
                Ok(0) | Err(_) if !heard => return Err(H1Error::Unanswered),
                Ok(0) => return Err(H1Error::Malformed("closed inside the head".into())),
                Ok(_) => heard = true,
                Err(e) => return Err(e.into()),
            }
        };
        self.buf.advance(head.len);
        let mut reusable = head.keep_alive;
        match head.framing {
            Framing::None => {}
            Framing::Length(n) => self.skip(n).await?,
            Framing::Chunked => self.skip_chunked().await?,
            Framing::UntilClose => {
                reusable = false;
                while self.fill().await? > 0 {
                    self.buf.clear();
                }
            }
        }
        // Bytes past the answer were not asked for: do not reuse a connection out of step.
        reusable &= self.buf.is_empty();
        Ok(Answer {
            status: head.status,
            hit: head.hit,
            reusable,
        })
    }

    /// One read into the buffer: bytes read, 0 at end of stream.
    async fn fill(&mut self) -> std::io::Result<usize> {
        self.buf.reserve(READ);
        self.stream.read_buf(&mut self.buf).await
    }

    /// Drops `n` body bytes, reading as needed.
    async fn skip(&mut self, mut n: u64) -> Result<(), H1Error> {
        loop {
            let have = self.buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            self.buf.advance(have);
            n -= have as u64;
            if n == 0 {
                return Ok(());
            }
            if self.fill().await? == 0 {
                return Err(truncated());
            }
        }
    }

    /// Drops a chunked body and its trailer section.
    async fn skip_chunked(&mut self) -> Result<(), H1Error> {
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.buf.advance(used);
                        break size;
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() < MAX_LINE => {
                        if self.fill().await? == 0 {
                            return Err(truncated());
                        }
                    }
                    _ => return Err(H1Error::Malformed("bad chunk-size line".into())),
                }
            };
            if size == 0 {
                break;
            }
            self.skip(size).await?;
            self.expect_crlf().await?;
        }
        // Trailer fields, each a line, until an empty line.
        loop {
            match self.buf.windows(2).position(|w| w == b"\r\n") {
                Some(0) => {
                    self.buf.advance(2);
                    return Ok(());
                }
                Some(end) => self.buf.advance(end + 2),
                None if self.buf.len() < MAX_LINE => {
                    if self.fill().await? == 0 {
                        return Err(truncated());
                    }
                }
                None => return Err(H1Error::Malformed("trailer line too long".into())),
            }
        }
    }

    async fn expect_crlf(&mut self) -> Result<(), H1Error> {
        while self.buf.len() < 2 {
            if self.fill().await? == 0 {
                return Err(truncated());
            }
        }
        if &self.buf[..2] != b"\r\n" {
            return Err(H1Error::Malformed("chunk not ended by CRLF".into()));
        }
        self.buf.advance(2);
        Ok(())
    }
}

fn truncated() -> H1Error {
    H1Error::Io(std::io::ErrorKind::UnexpectedEof.into())
}

/// How the body after a head ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A parsed response head: what the generator needs of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    /// Bytes of the head, blank line included.
    len: usize,
    status: u16,
    hit: bool,
    keep_alive: bool,
    framing: Framing,
}

/// The head at the start of `buf`, `None` if it is not all there yet.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, H1Error> {
    // Uninitialised slots: zeroing 64 of them per answer showed in the profile.
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(H1Error::Malformed(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    // HTTP/1.0 closes unless it says otherwise (RFC 9112 §9.3).
    let mut keep_alive = resp.version == Some(1);
    let (mut length, mut chunked, mut hit) = (None, false, false);
    for f in resp.headers.iter() {
        let name = f.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(f.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| H1Error::Malformed("bad Content-Length".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(H1Error::Malformed("conflicting Content-Length".into()));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked is the final coding or the body runs to close (RFC 9112 §6.3).
            chunked = last_token(f.value).eq_ignore_ascii_case(b"chunked");
            if !chunked {
                keep_alive = false;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for t in f.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if t.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if t.eq_ignore_ascii_case(b"keep-alive") && resp.version == Some(0) {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("cache-status") {
            hit |= f.value.windows(5).any(|w| w == b"; hit");
        }
    }
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Some(Head {
        len,
        status,
        hit,
        keep_alive: keep_alive && framing != Framing::UntilClose,
        framing,
    }))
}

fn last_token(v: &[u8]) -> &[u8] {
    v.rsplit(|&b| b == b',').next().unwrap_or(v).trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn head(s: &str) -> Head {
        parse_head(s.as_bytes()).expect("parses").expect("complete")
    }

    #[test]
    fn heads_say_how_their_bodies_end() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nCache-Status: shoal; hit\r\n\r\n");
        assert_eq!(
            (h.status, h.hit, h.keep_alive, h.framing),
            (200, true, true, Framing::Length(12))
        );
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = head("HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n");
        assert_eq!(h.framing, Framing::None);
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n");
        assert!(h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.keep_alive);
        let h =
            head("HTTP/1.1 200 OK\r\nCache-Status: shoal; fwd=miss\r\nContent-Length: 0\r\n\r\n");
        assert!(!h.hit);
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Len")
                .expect("partial")
                .is_none()
        );
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/9 200 OK\r\n\r\n",
        ] {
            assert!(parse_head(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    /// A server that answers each request on one connection with the next canned answer,
    /// then closes.
    async fn serve(answers: Vec<&'static [u8]>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 4096];
            for a in answers {
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                // Written in small pieces, so the reader meets every partial state.
                for piece in a.chunks(7) {
                    if s.write_all(piece).await.is_err() {
                        return;
                    }
                    s.flush().await.ok();
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn reads_every_framing_on_one_connection() {
        let addr = serve(vec![
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\nCache-Status: shoal; hit\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\na;x=y\r\n0123456789\r\n0\r\nTrailer: v\r\n\r\n",
            b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\nbody until close",
        ])
        .await;
        let mut c = H1::connect(addr, Duration::from_secs(2))
            .await
            .expect("connect");
        let a = c.get("/a", b"x.test").await.expect("first");
        assert_eq!((a.status, a.hit, a.reusable), (200, true, true));
        let a = c.get("/b", b"x.test").await.expect("chunked");
        assert_eq!((a.status, a.hit, a.reusable), (200, false, true));
        let a = c.get("/c", b"x.test").await.expect("503");
        assert_eq!((a.status, a.reusable), (503, true));
        let a = c.get("/d", b"x.test").await.expect("until close");
        assert_eq!((a.status, a.reusable), (200, false));
        // The server has closed: the next request is unanswered, not an answer.
        assert!(matches!(
            c.get("/e", b"x.test").await,
            Err(H1Error::Unanswered)
        ));
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error() {
        let addr = serve(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"]).await;
        let mut c = H1::connect(addr, Duration::from_secs(2))
            .await
            .expect("connect");
        assert!(matches!(c.get("/", b"x").await, Err(H1Error::Io(_))));
        let addr = serve(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ])
        .await;
        let mut c = H1::connect(addr, Duration::from_secs(2))
            .await
            .expect("connect");
        assert!(matches!(c.get("/", b"x").await, Err(H1Error::Malformed(_))));
    }
}
