//! Signed URLs (in the spirit of CloudFront and Akamai token auth): paths under a
//! configured prefix are served only with a valid signature, checked on every request,
//! hits included.
//!
//! A signed URL carries `exp` (expiry, Unix seconds), `kid` (which key), optionally `ip`
//! (the one client address allowed) and `sig`: the hex HMAC-SHA256, under the key, of
//! `path | exp | ip | kid` (`ip` empty when absent). Several keys can be live at once, so a
//! new key is added before URLs are signed with it and the old one dropped after its URLs
//! expire. The four parameters are left out of the cache key (every viewer of one object
//! shares one entry), never reach the origin, and are never logged.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

/// Why a signed URL was refused (the request gets a 403 naming it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SignatureError(pub &'static str);

/// The query parameters of a signature.
pub const PARAMS: [&str; 4] = ["exp", "kid", "ip", "sig"];

/// The `[signed_urls]` config section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignedUrls {
    /// Path prefixes that require a signature (`/video/`). None: signing is off.
    pub prefixes: Vec<String>,
    /// Live keys: key id → secret.
    pub keys: BTreeMap<String, String>,
}

impl SignedUrls {
    /// Whether `path` must be signed.
    pub fn required(&self, path: &str) -> bool {
        self.prefixes.iter().any(|p| path.starts_with(p.as_str()))
    }

    /// Checks the signature of `path_and_query` for a request from `client`.
    pub fn verify(
        &self,
        path_and_query: &str,
        client: Option<IpAddr>,
        now: SystemTime,
    ) -> Result<(), SignatureError> {
        let forbidden = |why: &'static str| Err(SignatureError(why));
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let mut p: BTreeMap<&str, &str> = BTreeMap::new();
        for pair in query.split('&') {
            if let Some((k, v)) = pair.split_once('=')
                && PARAMS.contains(&k)
                && p.insert(k, v).is_some()
            {
                return forbidden("a signature parameter appears twice");
            }
        }
        let (Some(exp), Some(kid), Some(sig)) = (p.get("exp"), p.get("kid"), p.get("sig")) else {
            return forbidden("this path requires a signed URL");
        };
        let Some(secret) = self.keys.get(*kid) else {
            return forbidden("unknown signing key");
        };
        let Ok(expires) = exp.parse::<u64>() else {
            return forbidden("malformed expiry");
        };
        let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let ip = p.get("ip").copied().unwrap_or("");
        let Some(sig) = hex(sig) else {
            return forbidden("malformed signature");
        };
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        // Constant-time comparison inside ring.
        if ring::hmac::verify(&key, message(path, exp, ip, kid).as_bytes(), &sig).is_err() {
            return forbidden("bad signature");
        }
        if expires <= now_secs {
            return forbidden("signed URL expired");
        }
        if !ip.is_empty() && client.map(|c| c.to_string()).as_deref() != Some(ip) {
            return forbidden("signed URL bound to another client");
        }
        Ok(())
    }
}

fn message(path: &str, exp: &str, ip: &str, kid: &str) -> String {
    format!("{path}|{exp}|{ip}|{kid}")
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// The query string that signs `path` until `expires` (Unix seconds) with key `kid`,
/// bound to `ip` if given: what `shoal sign` prints.
pub fn sign(path: &str, expires: u64, ip: Option<IpAddr>, kid: &str, secret: &str) -> String {
    let ip = ip.map(|i| i.to_string()).unwrap_or_default();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(
        &key,
        message(path, &expires.to_string(), &ip, kid).as_bytes(),
    );
    let sig: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let ip_param = if ip.is_empty() {
        String::new()
    } else {
        format!("&ip={ip}")
    };
    format!("exp={expires}&kid={kid}{ip_param}&sig={sig}")
}

/// Constant-time comparison of secrets (tokens), so timing does not reveal how much of one
/// matched. The length may leak; secrets are compared with secrets of a fixed form.
pub fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn conf() -> SignedUrls {
        SignedUrls {
            prefixes: vec!["/video/".into()],
            keys: [("k1", "old secret"), ("k2", "new secret")]
                .into_iter()
                .map(|(a, b)| (a.into(), b.into()))
                .collect(),
        }
    }

    #[test]
    fn only_a_valid_unexpired_signature_for_this_path_and_client_passes() {
        let c = conf();
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let ok = |q: &str, client| c.verify(&format!("/video/a.ts?{q}"), client, now);
        for kid in ["k1", "k2"] {
            let secret = &c.keys[kid];
            ok(&sign("/video/a.ts", 1_000_060, None, kid, secret), None).unwrap();
            ok(
                &sign("/video/a.ts", 1_000_060, Some(ip), kid, secret),
                Some(ip),
            )
            .unwrap();
        }
        let good = sign("/video/a.ts", 1_000_060, Some(ip), "k1", "old secret");
        let cases = [
            (
                sign("/video/a.ts", 999_999, None, "k1", "old secret"),
                Some(ip),
                "expired",
            ),
            (
                sign("/video/b.ts", 1_000_060, None, "k1", "old secret"),
                Some(ip),
                "bad signature",
            ),
            (
                sign("/video/a.ts", 1_000_060, None, "k1", "wrong"),
                Some(ip),
                "bad signature",
            ),
            (
                sign("/video/a.ts", 1_000_060, None, "k9", "x"),
                Some(ip),
                "unknown signing key",
            ),
            (good.clone(), "198.51.100.8".parse().ok(), "another client"),
            (
                good.replace("exp=1000060", "exp=1000999"),
                Some(ip),
                "bad signature",
            ),
            (format!("{good}&sig=00"), Some(ip), "twice"),
            ("exp=1&kid=k1".into(), Some(ip), "requires a signed URL"),
            (
                good.replace("sig=", "sig=zz"),
                Some(ip),
                "malformed signature",
            ),
        ];
        for (q, client, why) in cases {
            let e = ok(&q, client).unwrap_err();
            assert!(e.to_string().contains(why), "{q}: {e} should say {why:?}");
        }
        assert!(c.required("/video/x") && !c.required("/img/x"));
    }
}
