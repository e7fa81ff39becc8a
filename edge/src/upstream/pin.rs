//! Certificate pinning: the edge trusts exactly the origin certificates it is given, by
//! SHA-256, never "any certificate" and never a CA. More than one may be pinned, so an
//! origin's certificate can be rotated without an outage (pin new and old, switch, unpin).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::config::OriginLink;
use crate::error::EdgeError;

/// A SHA-256 certificate fingerprint.
pub type Fingerprint = [u8; 32];

/// Accepts a certificate whose SHA-256 is pinned; handshake signatures are still verified
/// with the provider's algorithms, so the peer must hold the matching private key.
#[derive(Debug)]
pub(crate) struct PinnedCerts {
    pins: Vec<Fingerprint>,
    provider: Arc<CryptoProvider>,
}

impl PinnedCerts {
    pub(crate) fn new(pins: Vec<Fingerprint>, provider: Arc<CryptoProvider>) -> Self {
        Self { pins, provider }
    }

    fn accepts(&self, cert: &[u8]) -> bool {
        let got = ring::digest::digest(&ring::digest::SHA256, cert);
        self.pins.iter().any(|p| p.as_slice() == got.as_ref())
    }
}

impl ServerCertVerifier for PinnedCerts {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.accepts(end_entity) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "origin certificate matches none of the pinned fingerprints".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The edge offers TLS 1.3 only, so a 1.2 handshake never reaches this.
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Parses a hex SHA-256 fingerprint (colons allowed).
pub fn parse_fingerprint(hex: &str) -> Result<Fingerprint, EdgeError> {
    let clean: String = hex.chars().filter(|c| *c != ':').collect();
    let bad = || {
        EdgeError::Config(format!(
            "origin fingerprint {hex:?} is not 64 hex digits (SHA-256)"
        ))
    };
    if clean.len() != 64 || !clean.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&clean[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// SHA-256 of every certificate in a PEM file.
pub fn fingerprints_of_pem(path: &std::path::Path) -> Result<Vec<Fingerprint>, EdgeError> {
    use rustls::pki_types::pem::PemObject;
    let bad = |e: String| EdgeError::Config(format!("{}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    Ok(certs.iter().map(|c| sha256(c)).collect())
}

fn sha256(der: &[u8]) -> Fingerprint {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, der).as_ref());
    out
}

/// Every pin the link configures: `fingerprint`, `fingerprints` and the certificates in
/// `cert_file`.
pub fn pins(link: &OriginLink) -> Result<Vec<Fingerprint>, EdgeError> {
    let mut out = Vec::new();
    for f in link.fingerprint.iter().chain(&link.fingerprints) {
        out.push(parse_fingerprint(f)?);
    }
    if let Some(p) = &link.cert_file {
        out.extend(fingerprints_of_pem(p)?);
    }
    if out.is_empty() {
        return Err(EdgeError::Config("no origin certificate to pin".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_pinned_certificate_is_accepted_and_no_other() {
        let (a, b, c) = (
            b"cert-a".as_slice(),
            b"cert-b".as_slice(),
            b"cert-c".as_slice(),
        );
        let v = PinnedCerts::new(
            vec![sha256(a), sha256(b)],
            Arc::new(rustls::crypto::ring::default_provider()),
        );
        assert!(v.accepts(a) && v.accepts(b));
        assert!(!v.accepts(c));
    }

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_fingerprint(&hex).unwrap(), [0xab; 32]);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&colons).unwrap(), [0xab; 32]);
        assert!(parse_fingerprint("ab").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
        assert!(parse_fingerprint(&"é".repeat(32)).is_err());
    }
}
