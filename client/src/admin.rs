//! A client for the origin's admin API: purges (and the writes the tests and `shoal cap`
//! make), with the bearer token.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::ClientError;

pub use shoal_cache_core::invalidation::Purge;

/// The origin's answer to a purge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct Purged {
    /// The invalidation's sequence number.
    pub seq: u64,
    /// Edges subscribed when it was made.
    pub subscribers: u64,
    /// Edges that acknowledged it within the wait (0 when not waited for).
    pub acked: u64,
    /// Every subscribed edge applied it within the wait (the origin answered 200, not 202).
    #[serde(skip)]
    pub everywhere: bool,
}

/// The origin's admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    addr: SocketAddr,
    token: String,
    http: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl AdminClient {
    /// A client for the admin API at `addr`, authenticating with `token`.
    pub fn new(addr: SocketAddr, token: impl Into<String>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            addr,
            token: token.into(),
            http: Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector),
            timeout: Duration::from_secs(30),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let fail = |reason: String| ClientError::Request {
            edge: self.addr.to_string(),
            reason,
        };
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| fail(e.to_string()))?;
        let fut = async {
            let resp = self.http.request(req).await.map_err(|e| e.to_string())?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok::<_, String>((parts.status, body))
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| fail(format!("timed out after {:?}", self.timeout)))?
            .map_err(fail)
    }

    /// Sends a purge. A refusal (4xx/5xx) is an error carrying the origin's message.
    pub async fn purge(&self, p: &Purge) -> Result<Purged, ClientError> {
        let fail = |reason: String| ClientError::Request {
            edge: self.addr.to_string(),
            reason,
        };
        let json = serde_json::to_vec(p).map_err(|e| fail(e.to_string()))?;
        let (status, body) = self.call("POST", "/purge", json.into()).await?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(fail(format!("{status}: {}", text.trim())));
        }
        let mut answer: Purged =
            serde_json::from_slice(&body).map_err(|e| fail(format!("reading the answer: {e}")))?;
        answer.everywhere = status == StatusCode::OK;
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_bodies_name_only_what_is_set() {
        let p = Purge {
            keys: vec!["/a\"b".into(), "/c".into()],
            wait: true,
            ..Purge::default()
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"keys":["/a\"b","/c"],"soft":false,"wait":true}"#
        );
        let t = Purge {
            tag: Some("x".into()),
            soft: true,
            ..Purge::default()
        };
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"tag":"x","soft":true,"wait":false}"#
        );
    }
}
