//! The origin's TLS identity and QUIC server configuration (TLS 1.3, rustls with `ring`).
//!
//! The origin uses a certificate it is given (PEM files) or creates a self-signed one with
//! rcgen and writes it out; edges pin exactly that certificate, by file or by its SHA-256
//! fingerprint ([`fingerprint`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::OriginError;

pub use shoal_cache_core::wire::ALPN;

/// A certificate and its private key.
#[derive(Debug)]
pub struct Identity {
    /// The certificate (DER).
    pub cert: CertificateDer<'static>,
    /// Its private key (DER).
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// A fresh self-signed certificate for `names` (DNS names or IP addresses).
    pub fn self_signed(names: &[String]) -> Result<Self, OriginError> {
        let ck = rcgen::generate_simple_self_signed(names.to_vec())
            .map_err(|e| OriginError::Cert(e.to_string()))?;
        Ok(Self {
            cert: ck.cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der())),
        })
    }

    /// Loads a PEM certificate (first in the file) and PEM private key.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, OriginError> {
        let bad = |p: &Path, e: rustls::pki_types::pem::Error| {
            OriginError::Cert(format!("{}: {e}", p.display()))
        };
        Ok(Self {
            cert: CertificateDer::from_pem_file(cert).map_err(|e| bad(cert, e))?,
            key: PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e))?,
        })
    }

    /// The identity kept at `cert` and `key`: loaded when both files exist, else generated
    /// for `names` and written there (the key readable by its owner only), so a restarted
    /// origin presents the certificate its edges pin. With no paths, a fresh one each time.
    pub fn persistent(
        cert: Option<&Path>,
        key: Option<&Path>,
        names: &[String],
    ) -> Result<Self, OriginError> {
        let (Some(cert), Some(key)) = (cert, key) else {
            return Self::self_signed(names);
        };
        if cert.exists() && key.exists() {
            return Self::load(cert, key);
        }
        let id = Self::self_signed(names)?;
        write_private(key, id.key_pem().as_bytes())?;
        std::fs::write(cert, id.cert_pem()).map_err(|source| OriginError::Io {
            path: cert.display().to_string(),
            source,
        })?;
        Ok(id)
    }

    /// The certificate as PEM text, for edges to pin.
    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.cert)
    }

    /// The private key as PEM text (PKCS#8), so a restarted origin can keep its identity.
    pub fn key_pem(&self) -> String {
        pem_encode("PRIVATE KEY", self.key.secret_der())
    }
}

/// Writes `bytes` to a new file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), OriginError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| OriginError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk.iter().fold(0u32, |a, &b| (a << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Lower-case hex SHA-256 of a DER certificate: what edges pin.
pub fn fingerprint(cert: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, cert)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// QUIC transport settings for edge ↔ origin: many concurrent fetch streams, windows big
/// enough for multi-megabyte segments, and an idle timeout with keep-alives so a dead peer
/// is noticed.
pub fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(1024u32.into())
        .stream_receive_window((8u32 << 20).into())
        .receive_window((64u32 << 20).into())
        .send_window(64 << 20)
        .keep_alive_interval(Some(Duration::from_secs(2)));
    if let Ok(idle) = Duration::from_secs(10).try_into() {
        t.max_idle_timeout(Some(idle));
    }
    t
}

/// The QUIC server configuration for `identity`.
pub fn server_config(identity: &Identity) -> Result<quinn::ServerConfig, OriginError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| OriginError::Transport(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![identity.cert.clone()], identity.key.clone_key())
        .map_err(|e| OriginError::Cert(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| OriginError::Transport(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport()));
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips() {
        let id = Identity::self_signed(&["localhost".into()]).unwrap();
        let back = CertificateDer::from_pem_slice(id.cert_pem().as_bytes()).unwrap();
        assert_eq!(back, id.cert);
        assert_eq!(fingerprint(&id.cert).len(), 64);
    }

    #[test]
    fn a_generated_identity_is_kept_and_reused() {
        let dir = std::env::temp_dir().join(format!("shoal-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("o.pem"), dir.join("o.key"));
        let names = ["localhost".to_string()];
        let first = Identity::persistent(Some(&cert), Some(&key), &names).unwrap();
        let again = Identity::persistent(Some(&cert), Some(&key), &names).unwrap();
        assert_eq!(first.cert, again.cert, "restart: same certificate");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "key readable by its owner only");
        let fresh = Identity::persistent(None, None, &names).unwrap();
        assert_ne!(fresh.cert, first.cert);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
