//! The HTTP client the CLI (and API proxying) uses to talk to a node's admin API.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tandem_cluster::network::error_chain;

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {server}: {message}")]
    Unreachable { server: String, message: String },
    #[error("invalid server address '{0}' (use http://HOST:PORT)")]
    BadAddress(String),
    #[error("the server's answer is not valid JSON: {0}")]
    BadAnswer(String),
}

/// A client of one node's admin API.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for ApiClient {
    /// Never shows the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    pub fn new(base: &str, token: Option<String>) -> Self {
        let base = if base.contains("://") { base.to_string() } else { format!("http://{base}") };
        ApiClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            client: {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                Client::builder(TokioExecutor::new()).build(connector)
            },
            timeout: Duration::from_secs(60),
        }
    }

    /// Sets how long a request may take.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request with an optional JSON body; returns the status and the JSON answer.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), ClientError> {
        let (status, _, bytes) = self.send_raw(method, path_and_query, body).await?;
        if bytes.is_empty() {
            return Ok((status, serde_json::Value::Null));
        }
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, value))
    }

    /// Sends a request; returns status, the `X-Tandem-Revision` header and the raw body.
    pub async fn send_raw(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, Option<u64>, Bytes), ClientError> {
        let url = format!("{}{}", self.base, path_and_query);
        let uri: hyper::Uri = url.parse().map_err(|_| ClientError::BadAddress(self.base.clone()))?;
        let mut builder = hyper::Request::builder().method(method).uri(uri);
        if let Some(token) = &self.token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(value) => {
                builder = builder.header("content-type", "application/json");
                Full::new(Bytes::from(serde_json::to_vec(&value).unwrap_or_default()))
            }
            None => Full::new(Bytes::new()),
        };
        let request = builder.body(body).map_err(|_| ClientError::BadAddress(self.base.clone()))?;
        let unreachable = |message: String| ClientError::Unreachable { server: self.base.clone(), message };
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| unreachable(format!("no answer within {} s", self.timeout.as_secs())))?
            .map_err(|e| unreachable(error_chain(&e)))?;
        let status = response.status().as_u16();
        let revision = response
            .headers()
            .get("x-tandem-revision")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let bytes = response.into_body().collect().await.map_err(|e| unreachable(e.to_string()))?.to_bytes();
        Ok((status, revision, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_token() {
        let client = ApiClient::new("127.0.0.1:7070", Some("very-secret-token-123".into()));
        let text = format!("{client:?}");
        assert!(!text.contains("very-secret"), "{text}");
        assert!(text.contains("redacted"), "{text}");
    }
}
