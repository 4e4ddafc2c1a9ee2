//! The transport of every admin API call: one hyper client builder, one base-URL rule, one way to turn a
//! refusal into a message with its hint, and one streamed blob upload.
//!
//! HTTPS: a server URL `https://HOST:PORT` is reached over TLS, its certificate verified against the CA
//! certificate(s) given with `--ca-cert` / `TANDEM_CACERT` ([`trust_ca`], once per process); without one,
//! nothing is trusted and the error says to give it. With a CA given, a bare `HOST:PORT` means HTTPS.
//!
//! The node uses this module too (a follower proxies membership changes to the leader's API); it uses
//! nothing else of [`crate::client`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Method;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tandem_cluster::network::error_chain;

/// The error type of a streamed request body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every request: whole (JSON) or streamed (blob uploads).
pub type RequestBody = UnsyncBoxBody<Bytes, BoxError>;
/// The one HTTP client type of the admin API's clients (plain HTTP or HTTPS, by the URL's scheme).
pub type HttpClient = Client<HttpsConnector<HttpConnector>, RequestBody>;

/// The TLS client configuration of this process's API clients, once [`trust_ca`] has set it.
static TRUSTED: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();

/// Makes every API client of this process trust the CA certificate(s) of the PEM file `ca` for `https://`
/// servers (the CLI's `--ca-cert`). Once per process: a second call changes nothing.
pub fn trust_ca(ca: &std::path::Path) -> Result<(), tandem_cluster::tls::TlsError> {
    let config = tandem_cluster::tls::client_config_trusting(ca)?;
    let _ = TRUSTED.set(Arc::new(config));
    Ok(())
}

/// What [`trust_ca`] set, or a configuration that trusts nothing (HTTPS then fails with "unknown issuer").
fn trusted() -> Arc<rustls::ClientConfig> {
    match TRUSTED.get() {
        Some(config) => config.clone(),
        None => Arc::new(tandem_cluster::tls::client_config_with_roots(rustls::RootCertStore::empty())),
    }
}

/// The most of a refusal's body that is read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Why a request did not get the answer it wanted.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {server}: {message}")]
    Unreachable { server: String, message: String },
    #[error("invalid server address '{0}' (use http://HOST:PORT)")]
    BadAddress(String),
    #[error("the server's answer is not valid JSON: {0}")]
    BadAnswer(String),
    /// A streamed upload broke off after the connection was made (its body failed, or the server hung up).
    #[error("the upload to {server} broke off: {message}")]
    Broken { server: String, message: String },
    /// The server answered with an error (its message and hint).
    #[error("{0}")]
    Refused(Refusal),
}

/// An error answer of the API: `{code, message, hint}` and its HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: u16,
    pub code: String,
    /// The server's message, or its whole answer when it has none.
    pub message: String,
    pub hint: Option<String>,
    /// The answer as received (printed as is with `--json`).
    pub answer: Value,
}

impl Refusal {
    /// Reads an error answer; anything without a `message` becomes its own text (at most 500 characters).
    pub fn from_answer(status: u16, answer: Value) -> Self {
        let message = match answer["message"].as_str() {
            Some(message) => message.to_string(),
            None if answer.is_null() => format!("HTTP {status}"),
            None => {
                answer.as_str().map_or_else(|| answer.to_string(), str::to_string).chars().take(500).collect()
            }
        };
        Refusal {
            status,
            code: answer["code"].as_str().unwrap_or_default().to_string(),
            message,
            hint: answer["hint"].as_str().map(str::to_string),
            answer,
        }
    }
}

/// The one way a refusal reads: the message, then `hint: …` on its own line.
impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.message, hint_line(self.hint.as_deref()))
    }
}

/// `"\nhint: TEXT"`, or nothing.
pub fn hint_line(hint: Option<&str>) -> String {
    hint.map(|hint| format!("\nhint: {hint}")).unwrap_or_default()
}

/// The base URL of a server as an operator writes it: `HOST:PORT` means `http://HOST:PORT` (`https://` once a
/// CA is trusted, [`trust_ca`]); no trailing `/`.
pub fn base_url(server: &str) -> String {
    let scheme = if TRUSTED.get().is_some() { "https" } else { "http" };
    let base = if server.contains("://") { server.to_string() } else { format!("{scheme}://{server}") };
    base.trim_end_matches('/').to_string()
}

/// The one HTTP client builder: no Nagle delay, a 10 s connect timeout, pooled keep-alive connections that are
/// dropped after [`POOL_IDLE_TIMEOUT`] idle, before a server's idle timeout closes them (`[limits.*]
/// idle_timeout`, 30 s or more), so a request is rarely sent on a connection the server is closing.
/// `https://` URLs are verified with `tls`.
pub fn http_client(tls: Arc<rustls::ClientConfig>) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.enforce_http(false);
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(10)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Client::builder(TokioExecutor::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector)
}

/// How long a pooled connection may stay idle on the client side.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// A whole request body.
pub fn whole_body(bytes: impl Into<Bytes>) -> RequestBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// A client of one node's admin API.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    /// Sent as `X-Tandem-Actor`.
    actor: Option<String>,
    client: HttpClient,
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
    pub fn new(server: &str, token: Option<String>) -> Self {
        ApiClient {
            base: base_url(server),
            token,
            actor: None,
            client: http_client(trusted()),
            timeout: Duration::from_secs(60),
        }
    }

    /// Verifies `https://` servers with `tls` rather than the process's [`trust_ca`] (a node proxying to the
    /// leader's API uses its own TLS material).
    pub fn with_tls(mut self, tls: Arc<rustls::ClientConfig>) -> Self {
        self.client = http_client(tls);
        self
    }

    /// Names who is acting (header `X-Tandem-Actor`, recorded as the actor of changes); `None`: the
    /// token's name.
    pub fn with_actor(mut self, actor: Option<String>) -> Self {
        self.actor = actor.filter(|actor| !actor.trim().is_empty());
        self
    }

    /// Sets how long a request may take (for a streamed answer: until its head arrives).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn unreachable(&self, mut message: String) -> ClientError {
        if self.base.starts_with("https://") && message.contains("invalid peer certificate") {
            message.push_str(
                "\nhint: give the CA that signed the server's certificate with --ca-cert FILE (or TANDEM_CACERT), and \
                 dial an address the certificate names (tandem cert node NAME --dns HOST --ip IP)",
            );
        }
        if self.base.starts_with("http://") && message.contains("invalid HTTP version") {
            message.push_str("\nhint: the server may speak HTTPS: use https://HOST:PORT and --ca-cert FILE");
        }
        ClientError::Unreachable { server: self.base.clone(), message }
    }

    /// Sends a request and returns the response with its body unread (streamed answers: backups, blobs,
    /// watch). `headers` are added to the request (`accept`, `content-type`, `content-length`).
    pub async fn open(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: RequestBody,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        self.open_streaming(method, path_and_query, headers, body, false).await
    }

    /// [`ApiClient::open`]; with `streamed` (an upload whose body streams from elsewhere), the request has no
    /// timeout of its own and an error after the connection was made is [`ClientError::Broken`] rather than
    /// unreachable.
    async fn open_streaming(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: RequestBody,
        streamed: bool,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let url = format!("{}{}", self.base, path_and_query);
        let uri: hyper::Uri = url.parse().map_err(|_| ClientError::BadAddress(self.base.clone()))?;
        let mut builder = hyper::Request::builder().method(method).uri(uri);
        if let Some(token) = &self.token {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(actor) = &self.actor {
            builder = builder.header("x-tandem-actor", actor);
        }
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        let request = builder.body(body).map_err(|_| ClientError::BadAddress(self.base.clone()))?;
        let answer = if streamed {
            // The answer comes after the whole body went up: how long that may take is the caller's to bound.
            self.client.request(request).await
        } else {
            tokio::time::timeout(self.timeout, self.client.request(request))
                .await
                .map_err(|_| self.unreachable(format!("no answer within {} s", self.timeout.as_secs())))?
        };
        answer.map_err(|e| match streamed && !e.is_connect() {
            true => ClientError::Broken { server: self.base.clone(), message: error_chain(&e) },
            false => self.unreachable(error_chain(&e)),
        })
    }

    /// Sends a request with an optional JSON body; returns the status and the JSON answer (an answer that is
    /// not JSON becomes a JSON string, an empty one `null`).
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), ClientError> {
        let (status, _, bytes) = self.send_raw(method, path_and_query, body).await?;
        Ok((status, json_or_text(&bytes)))
    }

    /// Sends a request; returns status, the `X-Tandem-Revision` header and the raw body.
    pub async fn send_raw(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Value>,
    ) -> Result<(u16, Option<u64>, Bytes), ClientError> {
        let (headers, body) = match body {
            Some(value) => (
                vec![("content-type", "application/json".to_string())],
                whole_body(serde_json::to_vec(&value).unwrap_or_default()),
            ),
            None => (Vec::new(), whole_body(Bytes::new())),
        };
        let response = self.open(method, path_and_query, &headers, body).await?;
        let status = response.status().as_u16();
        let revision = revision_header(&response);
        let bytes =
            response.into_body().collect().await.map_err(|e| self.unreachable(e.to_string()))?.to_bytes();
        Ok((status, revision, bytes))
    }

    /// Sends a request and returns its JSON answer if the status is 2xx; any other status is a
    /// [`ClientError::Refused`].
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let (status, answer) = self.send(method, path_and_query, body).await?;
        if (200..300).contains(&status) {
            Ok(answer)
        } else {
            Err(ClientError::Refused(Refusal::from_answer(status, answer)))
        }
    }

    /// Streams `body` (`size` bytes) to `POST /v1/blobs`; returns the digest and size the node stored. No
    /// timeout: a large blob on a slow link takes as long as it takes (sync bounds each copy itself).
    pub async fn upload_blob(&self, body: RequestBody, size: u64) -> Result<(String, u64), ClientError> {
        let headers = [
            (CONTENT_TYPE.as_str(), "application/octet-stream".to_string()),
            (CONTENT_LENGTH.as_str(), size.to_string()),
        ];
        let response = self.open_streaming(Method::POST, "/v1/blobs", &headers, body, true).await?;
        let status = response.status().as_u16();
        let answer = small_answer(response.into_body()).await;
        if status != 200 {
            return Err(ClientError::Refused(Refusal::from_answer(status, answer)));
        }
        let digest = answer["digest"]
            .as_str()
            .ok_or_else(|| ClientError::BadAnswer("the server did not say the blob's digest".into()))?;
        Ok((digest.to_string(), answer["size"].as_u64().unwrap_or(size)))
    }
}

/// The `X-Tandem-Revision` header of a response: the revision of the store that answered.
pub fn revision_header<B>(response: &hyper::Response<B>) -> Option<u64> {
    response.headers().get("x-tandem-revision").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

/// A small JSON answer (an error, an upload's receipt), read to at most 64 KiB; unreadable: `null`.
pub async fn small_answer(body: Incoming) -> Value {
    match Limited::new(body, MAX_ERROR_BODY).collect().await {
        Ok(collected) => json_or_text(&collected.to_bytes()),
        Err(_) => Value::Null,
    }
}

/// JSON if it parses, else the text as a JSON string; empty: `null`.
fn json_or_text(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
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

    #[test]
    fn one_base_url_rule_and_one_refusal_format() {
        assert_eq!(base_url("10.0.0.1:7070/"), "http://10.0.0.1:7070");
        assert_eq!(base_url("https://a.example"), "https://a.example");
        let refusal = Refusal::from_answer(
            403,
            serde_json::json!({"code": "forbidden", "message": "operator token needed", "hint": "pass --token"}),
        );
        assert_eq!(refusal.to_string(), "operator token needed\nhint: pass --token");
        assert_eq!(Refusal::from_answer(502, Value::Null).to_string(), "HTTP 502");
    }
}
