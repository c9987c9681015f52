//! An async client for Ferry's REST API, used by the `ferry` command line,
//! the load generator and the integration tests.
//!
//! [`Client`] has one method per route and returns the typed bodies of
//! [`types`]. Failures are a [`ClientError`] that carries the broker's error
//! code, message and HTTP status. WebSocket push streams are in [`stream`].
//!
//! A client takes a list of broker base URLs. It sends each request to the
//! current broker and, when that broker cannot be connected to, moves on to
//! the next one in the list and keeps using it for later requests. A request
//! that may have reached a broker is not sent again, because a repeated
//! publish would store the messages twice. GET requests change nothing, so
//! they are the exception: any transport error sends them to the next broker.
//!
//! ```no_run
//! # async fn example() -> Result<(), ferry::client::ClientError> {
//! use ferry::client::{Client, CreateTopic, FetchParams, NewMessage};
//!
//! let client = Client::new(["http://127.0.0.1:8080"])?;
//! let token = client.login("alice", "correct horse").await?;
//! let client = client.with_token(token.token);
//! client.create_topic(&CreateTopic::named("orders")).await?;
//! client.publish("orders", &[NewMessage::json(serde_json::json!({"id": 1}))]).await?;
//! let fetched = client.fetch("orders", 0, FetchParams::default()).await?;
//! # Ok(())
//! # }
//! ```

mod account;
mod error;
mod queues;
pub mod stream;
mod topics;
pub mod types;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_rustls::rustls;

pub use error::{BrokerFailure, ClientError};
pub use stream::MessageStream;
pub use types::*;

use error::error_chain;

/// How long a connection attempt to one broker may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of a [`Client`] beyond its broker list.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Maximum time to connect to one broker before trying the next.
    pub connect_timeout: Duration,
    /// Maximum time of a whole request, response body included. With `None`
    /// the client waits as long as the broker takes. Set it above the
    /// longest `wait_ms` you use, or long polls time out.
    pub request_timeout: Option<Duration>,
    /// PEM certificates of the CAs to trust for https and wss brokers. When
    /// set, they replace the built-in web PKI roots.
    pub ca_certificates_pem: Option<Vec<u8>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: None,
            ca_certificates_pem: None,
        }
    }
}

/// A client of one Ferry cluster. Cloning is cheap, and clones share the
/// connection pool and the current broker.
#[derive(Clone)]
pub struct Client {
    brokers: Arc<Brokers>,
    http: reqwest::Client,
    token: Option<String>,
    /// TLS settings for WebSocket streams when custom CAs are set; `None`
    /// uses the web PKI roots.
    websocket_tls: Option<Arc<rustls::ClientConfig>>,
    options: Arc<ClientOptions>,
}

/// The broker list and which one requests go to.
struct Brokers {
    urls: Vec<Url>,
    current: AtomicUsize,
}

/// A finished HTTP exchange: the URL that responded, the status and the
/// whole body.
struct Exchange {
    url: Url,
    status: StatusCode,
    body: Bytes,
}

/// The JSON error body of the REST API.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

impl Client {
    /// Creates a client of the brokers at `urls`, with default options and
    /// no token.
    ///
    /// A URL without a scheme, such as `127.0.0.1:8080`, means http.
    ///
    /// # Errors
    ///
    /// `urls` is empty or a URL is not an absolute http or https URL.
    pub fn new<I, S>(urls: I) -> Result<Client, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Client::with_options(urls, &ClientOptions::default())
    }

    /// Creates a client of the brokers at `urls` with `options`.
    ///
    /// # Errors
    ///
    /// As [`Client::new`], and [`ClientError::Tls`] when the CA certificates
    /// do not parse.
    pub fn with_options<I, S>(urls: I, options: &ClientOptions) -> Result<Client, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let urls = urls
            .into_iter()
            .map(|url| parse_broker_url(url.as_ref()))
            .collect::<Result<Vec<Url>, ClientError>>()?;
        if urls.is_empty() {
            return Err(ClientError::NoBrokers);
        }

        let (http, websocket_tls) = build_transport(options)?;
        Ok(Client {
            brokers: Arc::new(Brokers {
                urls,
                current: AtomicUsize::new(0),
            }),
            http,
            token: None,
            websocket_tls,
            options: Arc::new(options.clone()),
        })
    }

    /// Returns a copy of this client, token and broker list included, with
    /// its own connection pool, for load generators that want a connection
    /// per worker.
    pub fn with_separate_pool(&self) -> Result<Client, ClientError> {
        let (http, websocket_tls) = build_transport(&self.options)?;
        Ok(Client {
            brokers: Arc::new(Brokers {
                urls: self.brokers.urls.clone(),
                current: AtomicUsize::new(self.brokers.current.load(Ordering::Relaxed)),
            }),
            http,
            token: self.token.clone(),
            websocket_tls,
            options: Arc::clone(&self.options),
        })
    }

    /// This client with `token` sent as the bearer token of every request.
    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.token = Some(token.into());
        self
    }

    /// Returns the bearer token, if one is set.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Returns the broker base URLs, in failover order.
    pub fn brokers(&self) -> &[Url] {
        &self.brokers.urls
    }

    /// Returns the base URL that requests go to first: the last broker that
    /// responded.
    pub fn current_broker(&self) -> &Url {
        &self.brokers.urls[self.brokers.current.load(Ordering::Relaxed)]
    }

    /// Builds the `Authorization` header value for the token, if one is set.
    fn authorization(&self) -> Result<Option<HeaderValue>, ClientError> {
        let Some(token) = &self.token else {
            return Ok(None);
        };
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ClientError::InvalidToken)?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    /// Sends a request with an optional JSON body and decodes the JSON
    /// response.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<Bytes>,
    ) -> Result<T, ClientError> {
        let exchange = self.exchange(method, segments, query, body).await?;
        decode(exchange)
    }

    /// Sends a request whose success response has no body (204).
    async fn call_no_content(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<Bytes>,
    ) -> Result<(), ClientError> {
        let exchange = self.exchange(method, segments, &[], body).await?;
        if exchange.status.is_success() {
            Ok(())
        } else {
            Err(api_error(exchange.status, &exchange.body))
        }
    }

    /// Sends one request, moving through the broker list as the module
    /// documentation describes, and reads the whole response.
    async fn exchange(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<Bytes>,
    ) -> Result<Exchange, ClientError> {
        let authorization = self.authorization()?;
        let count = self.brokers.urls.len();
        let start = self.brokers.current.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for attempt in 0..count {
            let index = (start + attempt) % count;
            let base = &self.brokers.urls[index];
            let mut url = endpoint(base, segments);
            if !query.is_empty() {
                url.query_pairs_mut()
                    .extend_pairs(query.iter().map(|(name, value)| (*name, value.as_str())));
            }

            let mut request = self.http.request(method.clone(), url.clone());
            if let Some(value) = &authorization {
                request = request.header(reqwest::header::AUTHORIZATION, value.clone());
            }
            if let Some(body) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }

            let result = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    response.bytes().await.map(|body| (status, body))
                }
                Err(err) => Err(err),
            };
            match result {
                Ok((status, body)) => {
                    self.brokers.current.store(index, Ordering::Relaxed);
                    return Ok(Exchange { url, status, body });
                }
                Err(err) if err.is_connect() || method == Method::GET => {
                    if attempt + 1 < count {
                        tracing::warn!(
                            broker = %base,
                            error = %connect_error_text(&err),
                            "broker failed, trying the next one"
                        );
                    }
                    failures.push(BrokerFailure {
                        broker: base.to_string(),
                        error: connect_error_text(&err),
                    });
                }
                Err(err) => {
                    return Err(ClientError::Request {
                        url: url.to_string(),
                        source: err,
                    })
                }
            }
        }
        Err(ClientError::Unreachable { failures })
    }
}

/// Builds the HTTP client and the WebSocket TLS settings for `options`.
fn build_transport(
    options: &ClientOptions,
) -> Result<(reqwest::Client, Option<Arc<rustls::ClientConfig>>), ClientError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .user_agent(concat!("ferry-client/", env!("CARGO_PKG_VERSION")));
    if let Some(timeout) = options.request_timeout {
        builder = builder.timeout(timeout);
    }
    let mut websocket_tls = None;
    if let Some(pem) = &options.ca_certificates_pem {
        let certificates = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|err| ClientError::Tls(format!("invalid CA certificate PEM: {err}")))?;
        builder = builder.tls_built_in_root_certs(false);
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
        websocket_tls = Some(Arc::new(websocket_tls_config(pem)?));
    }
    let http = builder
        .build()
        .map_err(|err| ClientError::Tls(error_chain(&err)))?;

    Ok((http, websocket_tls))
}

/// Parses one broker base URL; a bare `host:port` means http.
fn parse_broker_url(text: &str) -> Result<Url, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidUrl {
        url: text.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = text.trim();
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    };
    let url = Url::parse(&with_scheme).map_err(|err| invalid(&err.to_string()))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("the URL has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a base URL takes no query or fragment"));
    }
    Ok(url)
}

/// `base` with the path segments appended, each percent-encoded.
fn endpoint(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    url.path_segments_mut()
        .expect("broker URLs are http or https, so they have a path")
        .pop_if_empty()
        .extend(segments);
    url
}

/// Formats the cause of a failed connection without reqwest's "error
/// sending request for url (...)" prefix, because the broker URL is printed
/// beside it.
fn connect_error_text(err: &reqwest::Error) -> String {
    match std::error::Error::source(err) {
        Some(source) => error_chain(source),
        None => err.to_string(),
    }
}

/// Serializes a request body.
fn json_body<T: Serialize + ?Sized>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("request bodies always serialize"))
}

/// Decodes a success response or turns an error response into
/// [`ClientError::Api`].
fn decode<T: DeserializeOwned>(exchange: Exchange) -> Result<T, ClientError> {
    if !exchange.status.is_success() {
        return Err(api_error(exchange.status, &exchange.body));
    }
    serde_json::from_slice(&exchange.body).map_err(|source| ClientError::Decode {
        url: exchange.url.to_string(),
        source,
    })
}

/// Builds the error of an error response. A body that is not Ferry's error
/// JSON (from a proxy, say) gets the code `unknown` and its text as message.
fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => ClientError::Api {
            status,
            code: parsed.error.code,
            message: parsed.error.message,
        },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let message = if text.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("no error message")
                    .to_string()
            } else {
                text.chars().take(300).collect()
            };
            ClientError::Api {
                status,
                code: "unknown".to_string(),
                message,
            }
        }
    }
}

/// Builds rustls settings that trust only the CA certificates in `pem`.
fn websocket_tls_config(pem: &[u8]) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_pemfile::certs(&mut &pem[..]) {
        let certificate = certificate
            .map_err(|err| ClientError::Tls(format!("invalid CA certificate PEM: {err}")))?;
        roots
            .add(certificate)
            .map_err(|err| ClientError::Tls(format!("unusable CA certificate: {err}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| ClientError::Tls(err.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_url_without_scheme_is_http() {
        let url = parse_broker_url("127.0.0.1:8080").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/");
    }

    #[test]
    fn broker_url_rejects_other_schemes() {
        let err = parse_broker_url("ftp://host").unwrap_err();
        assert!(err.to_string().contains("http or https"), "{err}");
        assert!(parse_broker_url("http://host/?a=1").is_err());
    }

    #[test]
    fn endpoint_encodes_segments_and_keeps_prefix() {
        let base = parse_broker_url("http://host:1/ferry/").unwrap();
        let url = endpoint(&base, &["v1", "topics", "a b/c"]);
        assert_eq!(url.as_str(), "http://host:1/ferry/v1/topics/a%20b%2Fc");
        let root = parse_broker_url("http://host:1").unwrap();
        assert_eq!(
            endpoint(&root, &["healthz"]).as_str(),
            "http://host:1/healthz"
        );
    }

    #[test]
    fn error_body_becomes_api_error() {
        let body = br#"{"error":{"code":"not_found","message":"topic `x` not found"}}"#;
        let err = api_error(StatusCode::NOT_FOUND, body);
        assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
        assert_eq!(err.code(), Some("not_found"));
        assert_eq!(err.to_string(), "topic `x` not found (HTTP 404, not_found)");

        let other = api_error(StatusCode::BAD_GATEWAY, b"");
        assert_eq!(other.code(), Some("unknown"));
        assert!(other.to_string().contains("Bad Gateway"), "{other}");
    }

    #[test]
    fn empty_broker_list_is_rejected() {
        let err = Client::new(Vec::<String>::new()).err().unwrap();
        assert!(matches!(err, ClientError::NoBrokers));
    }
}
