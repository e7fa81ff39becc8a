//! The edge's QUIC client to the origin.
//!
//! One long-lived connection, re-established on demand after it breaks (so edges reconnect
//! by themselves when a restarted origin comes back); one bidirectional stream per fetch.
//! Each attempt has a timeout; idempotent fetches are retried with exponential backoff and
//! jitter; a circuit breaker makes a dead origin cost no waiting per request.
//!
//! Trust is pinned: the edge accepts exactly one certificate, by SHA-256 fingerprint, never
//! "any certificate".

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use shoal_cache_core::io::{FrameReader, write_frame};
use shoal_cache_core::wire::{
    BodyLength, ErrorCode, FetchRequest, FrameCodec, Message, ResponseHead,
};
use tokio::sync::Mutex;

use crate::error::EdgeError;

/// ALPN id of the edge ↔ origin protocol.
const ALPN: &[u8] = b"shoal/1";

/// Accepts exactly the certificate whose SHA-256 is pinned; signatures are still verified
/// with the provider's algorithms, so the peer must hold the matching private key.
#[derive(Debug)]
struct PinnedCert {
    sha256: Vec<u8>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = ring::digest::digest(&ring::digest::SHA256, end_entity);
        if got.as_ref() == self.sha256.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "origin certificate does not match the pinned fingerprint".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Parses a hex SHA-256 fingerprint (colons allowed).
pub fn parse_fingerprint(hex: &str) -> Result<Vec<u8>, EdgeError> {
    let clean: String = hex.chars().filter(|c| *c != ':').collect();
    if clean.len() != 64 {
        return Err(EdgeError::Config(format!(
            "origin fingerprint must be 64 hex digits (SHA-256), got {} characters",
            clean.len()
        )));
    }
    (0..32)
        .map(|i| {
            u8::from_str_radix(&clean[2 * i..2 * i + 2], 16)
                .map_err(|_| EdgeError::Config(format!("origin fingerprint {hex:?} is not hex")))
        })
        .collect()
}

/// SHA-256 of the first certificate in a PEM file.
pub fn fingerprint_of_pem(path: &std::path::Path) -> Result<Vec<u8>, EdgeError> {
    use rustls::pki_types::pem::PemObject;
    let cert = CertificateDer::from_pem_file(path)
        .map_err(|e| EdgeError::Config(format!("{}: {e}", path.display())))?;
    Ok(ring::digest::digest(&ring::digest::SHA256, &cert)
        .as_ref()
        .to_vec())
}

/// An origin reply.
#[derive(Debug)]
pub enum OriginReply {
    /// The conditional fetch matched; fresh caching headers.
    NotModified {
        /// Headers to refresh the stored object with.
        headers: Vec<(String, String)>,
    },
    /// A whole response (body read completely).
    Complete {
        /// Head.
        head: ResponseHead,
        /// Body.
        body: Bytes,
    },
    /// A response too large to store: the body is still on the stream.
    Streaming {
        /// Head.
        head: ResponseHead,
        /// The stream, positioned at the first body chunk.
        body: FrameReader<quinn::RecvStream>,
    },
}

/// Origin link settings.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Origin address.
    pub addr: std::net::SocketAddr,
    /// TLS server name.
    pub server_name: String,
    /// Pinned certificate SHA-256.
    pub pin: Vec<u8>,
    /// Attempt timeout.
    pub fetch_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// Consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// Breaker open time.
    pub breaker_open_for: Duration,
}

/// Circuit breaker: opens after N consecutive failures; after the open period one request
/// probes (half-open) and its outcome closes or re-opens it.
#[derive(Debug)]
struct Breaker {
    failures: AtomicU32,
    open_until: std::sync::Mutex<Option<Instant>>,
}

/// The QUIC client to the origin.
#[derive(Debug)]
pub struct OriginClient {
    endpoint: quinn::Endpoint,
    settings: UpstreamSettings,
    conn: Mutex<Option<quinn::Connection>>,
    breaker: Breaker,
    codec: FrameCodec,
    next_id: std::sync::atomic::AtomicU64,
}

impl OriginClient {
    /// A client bound to an ephemeral loopback-or-any UDP port.
    pub fn new(settings: UpstreamSettings) -> Result<Self, EdgeError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| EdgeError::Transport(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCert {
                sha256: settings.pin.clone(),
                provider,
            }))
            .with_no_client_auth();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| EdgeError::Transport(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        let mut t = quinn::TransportConfig::default();
        t.stream_receive_window((8u32 << 20).into())
            .receive_window((64u32 << 20).into())
            .keep_alive_interval(Some(Duration::from_secs(2)));
        if let Ok(idle) = Duration::from_secs(10).try_into() {
            t.max_idle_timeout(Some(idle));
        }
        client.transport_config(Arc::new(t));
        let bind: std::net::SocketAddr = if settings.addr.is_ipv6() {
            "[::]:0"
                .parse()
                .map_err(|_| EdgeError::Transport("bind address".into()))?
        } else {
            "0.0.0.0:0"
                .parse()
                .map_err(|_| EdgeError::Transport("bind address".into()))?
        };
        let mut endpoint =
            quinn::Endpoint::client(bind).map_err(|e| EdgeError::Transport(e.to_string()))?;
        endpoint.set_default_client_config(client);
        Ok(Self {
            endpoint,
            settings,
            conn: Mutex::new(None),
            breaker: Breaker {
                failures: AtomicU32::new(0),
                open_until: std::sync::Mutex::new(None),
            },
            codec: FrameCodec::default(),
            next_id: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Whether a connection to the origin is currently up.
    pub async fn connected(&self) -> bool {
        self.conn
            .lock()
            .await
            .as_ref()
            .is_some_and(|c| c.close_reason().is_none())
    }

    /// The live connection, connecting if there is none.
    pub async fn connection(&self) -> Result<quinn::Connection, EdgeError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref()
            && c.close_reason().is_none()
        {
            return Ok(c.clone());
        }
        *guard = None;
        let connecting = self
            .endpoint
            .connect(self.settings.addr, &self.settings.server_name)
            .map_err(|e| EdgeError::OriginUnavailable(e.to_string()))?;
        let conn = tokio::time::timeout(self.settings.connect_timeout, connecting)
            .await
            .map_err(|_| EdgeError::OriginTimeout(self.settings.connect_timeout))?
            .map_err(|e| EdgeError::OriginUnavailable(e.to_string()))?;
        *guard = Some(conn.clone());
        drop(guard);
        // A completed handshake shows the origin is back: close the breaker at once rather
        // than failing requests until its open period runs out.
        self.breaker_result(true);
        Ok(conn)
    }

    async fn drop_connection(&self) {
        *self.conn.lock().await = None;
    }

    fn breaker_check(&self) -> Result<(), EdgeError> {
        let guard = self
            .breaker
            .open_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(until) = *guard {
            let now = Instant::now();
            if now < until {
                return Err(EdgeError::CircuitOpen(until - now));
            }
        }
        Ok(())
    }

    fn breaker_result(&self, ok: bool) {
        let mut guard = self
            .breaker
            .open_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if ok {
            self.breaker.failures.store(0, Ordering::Relaxed);
            *guard = None;
        } else {
            let n = self.breaker.failures.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= self.settings.breaker_failures {
                *guard = Some(Instant::now() + self.settings.breaker_open_for);
            }
        }
    }

    /// Fetches `path` (optionally conditional on `etag`) with retries; bodies larger than
    /// `max_body` come back as [`OriginReply::Streaming`].
    pub async fn fetch(
        &self,
        path: &str,
        etag: Option<&str>,
        max_body: u64,
    ) -> Result<OriginReply, EdgeError> {
        self.breaker_check()?;
        let mut attempt = 0;
        loop {
            let r = match tokio::time::timeout(
                self.settings.fetch_timeout,
                self.fetch_once(path, etag, max_body),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(EdgeError::OriginTimeout(self.settings.fetch_timeout)),
            };
            match r {
                Ok(reply) => {
                    self.breaker_result(true);
                    return Ok(reply);
                }
                Err(e) => {
                    if matches!(
                        e,
                        EdgeError::OriginUnavailable(_) | EdgeError::OriginTimeout(_)
                    ) {
                        self.drop_connection().await;
                    }
                    if !e.is_retryable() || attempt >= self.settings.retries {
                        self.breaker_result(false);
                        return Err(e);
                    }
                    // Exponential backoff with full jitter: 0..(50ms · 2^attempt).
                    let cap = 50u64 << attempt.min(6);
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=cap))).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn fetch_once(
        &self,
        path: &str,
        etag: Option<&str>,
        max_body: u64,
    ) -> Result<OriginReply, EdgeError> {
        let conn = self.connection().await?;
        let unavailable = |e: String| EdgeError::OriginUnavailable(e);
        let (mut send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let req = Message::Fetch(FetchRequest {
            request_id,
            key: path.to_string(),
            if_none_match: etag.map(str::to_string),
        });
        write_frame(&mut send, &self.codec, &req)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        send.finish().map_err(|e| unavailable(e.to_string()))?;
        let mut reader = FrameReader::new(recv, self.codec);
        let head = match reader.next().await {
            Ok(Some(Message::ResponseHead(h))) => h,
            Ok(Some(Message::NotModified(nm))) => {
                return Ok(OriginReply::NotModified {
                    headers: nm.headers,
                });
            }
            Ok(Some(Message::Error(e))) => {
                return Err(match e.code {
                    ErrorCode::Unavailable => unavailable(e.message),
                    _ => EdgeError::OriginProtocol(format!("{:?}: {}", e.code, e.message)),
                });
            }
            Ok(Some(_)) => {
                return Err(EdgeError::OriginProtocol(
                    "unexpected message before response head".into(),
                ));
            }
            Ok(None) => return Err(unavailable("stream closed before the response head".into())),
            Err(e) => return Err(unavailable(e.to_string())),
        };
        if head.request_id != request_id {
            return Err(EdgeError::OriginProtocol(
                "response for another request".into(),
            ));
        }
        let too_large = match head.length {
            BodyLength::Known(n) => n > max_body,
            BodyLength::Streamed => true,
        };
        if too_large {
            return Ok(OriginReply::Streaming { head, body: reader });
        }
        let expected = match head.length {
            BodyLength::Known(n) => n,
            BodyLength::Streamed => 0,
        };
        let mut body = BytesMut::with_capacity(expected as usize);
        loop {
            match reader.next().await {
                Ok(Some(Message::BodyChunk(c))) => {
                    if c.offset != body.len() as u64
                        || body.len() as u64 + c.data.len() as u64 > expected
                    {
                        return Err(EdgeError::OriginProtocol(
                            "body chunk out of order or beyond the length".into(),
                        ));
                    }
                    body.extend_from_slice(&c.data);
                    if c.last {
                        break;
                    }
                }
                Ok(Some(_)) => {
                    return Err(EdgeError::OriginProtocol(
                        "unexpected message in body".into(),
                    ));
                }
                Ok(None) => return Err(unavailable("stream closed inside the body".into())),
                Err(e) => return Err(unavailable(e.to_string())),
            }
        }
        if body.len() as u64 != expected {
            return Err(EdgeError::OriginProtocol(format!(
                "body of {} bytes, head announced {expected}",
                body.len()
            )));
        }
        Ok(OriginReply::Complete {
            head,
            body: body.freeze(),
        })
    }

    /// Closes the connection.
    pub async fn close(&self) {
        if let Some(c) = self.conn.lock().await.take() {
            c.close(0u32.into(), b"edge shutting down");
        }
        self.endpoint.close(0u32.into(), b"edge shutting down");
    }
}
