//! The REST front end (warp): routes, request parsing and error mapping.
//!
//! Handlers parse the request, call the broker and shape the response. The
//! rules live in `crate::broker`. One resource per file.

pub mod error;
pub mod loopback;
pub mod request;
pub mod wire;

mod bindings;
mod cluster;
mod events;
mod forward;
mod grants;
mod queues;
mod reassign;
mod streams;
mod subscriptions;
mod system;
mod topics;
mod users;

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::Serialize;
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::api::error::ApiError;
use crate::broker::{Acks, Broker, NewMessage, Principal, PublishRequest, PublishResult};
use crate::cluster::Cluster;
use crate::mirror::MirrorStatus;

pub use system::Metrics;

/// Maximum bytes of a too-large body read and discarded before the 413.
const DRAIN_LIMIT: u64 = 64 << 20;

/// How long a client may take to send a request body.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Shared state of the handlers.
#[derive(Clone)]
pub struct Context {
    /// The broker core.
    pub broker: Arc<Broker>,
    /// Request counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The cluster, when the broker is part of one.
    pub cluster: Option<Arc<Cluster>>,
    /// Runs a request through these routes; set once they are built.
    pub loopback: Arc<OnceLock<loopback::HttpHandler>>,
    /// The MySQL mirror's status, when the broker runs with `--mysql-url`.
    pub mirror: Option<Arc<MirrorStatus>>,
}

/// Every route of the REST API, with errors mapped to JSON. In a cluster,
/// requests about a topic or queue that another broker leads go there.
pub fn routes(
    broker: Arc<Broker>,
    cluster: Option<Arc<Cluster>>,
    mirror: Option<Arc<MirrorStatus>>,
) -> BoxedFilter<(Response,)> {
    let context = Context {
        broker,
        metrics: Arc::new(Metrics::default()),
        cluster: cluster.clone(),
        loopback: Arc::new(OnceLock::new()),
        mirror,
    };
    let metrics = Arc::clone(&context.metrics);
    let loopback_slot = Arc::clone(&context.loopback);
    let forwarded = match cluster {
        Some(cluster) => forward::forwarded_streams(Arc::clone(&cluster))
            .or(forward::forwarded(&context, cluster))
            .unify()
            .boxed(),
        // Rejects every request, so the local routes run.
        None => warp::any()
            .and_then(|| async { Err::<Response, _>(warp::reject::not_found()) })
            .boxed(),
    };
    let all = forwarded
        .or(users::routes(&context))
        .unify()
        .or(topics::routes(&context))
        .unify()
        .or(events::routes(&context))
        .unify()
        .or(subscriptions::routes(&context))
        .unify()
        .or(queues::routes(&context))
        .unify()
        .or(bindings::routes(&context))
        .unify()
        .or(grants::routes(&context))
        .unify()
        .or(streams::routes(&context))
        .unify()
        .or(system::routes(&context))
        .unify()
        .or(reassign::routes(&context))
        .unify()
        .recover(error::recover)
        .unify()
        .map(move |response: Response| {
            metrics.count_response(response.status());
            response
        })
        .with(warp::log::custom(|info| {
            tracing::debug!(
                method = %info.method(),
                path = info.path(),
                status = info.status().as_u16(),
                elapsed_us = info.elapsed().as_micros() as u64,
                "request"
            );
        }))
        .map(Reply::into_response)
        .boxed();
    // The routes and the handler refer to each other, so both live as long
    // as the process; the server closes the broker explicitly.
    let _ = loopback_slot.set(loopback::handler(all.clone()));
    all
}

/// A filter that yields the context.
fn with_context(
    context: &Context,
) -> impl Filter<Extract = (Context,), Error = Infallible> + Clone {
    let context = context.clone();
    warp::any().map(move || context.clone())
}

/// A filter that authenticates the bearer token of the request (or, for
/// browsers' WebSocket clients, which cannot set headers, a `token` query
/// parameter is accepted by the stream routes themselves).
fn authenticated(
    context: &Context,
) -> impl Filter<Extract = (Principal,), Error = warp::Rejection> + Clone {
    let broker = Arc::clone(&context.broker);
    authorization_header().and_then(move |header: Option<String>| {
        let broker = Arc::clone(&broker);
        async move {
            let token = bearer_token(header.as_deref()).map_err(warp::reject::custom)?;
            broker
                .authenticate(token)
                .map_err(|err| warp::reject::custom(ApiError::from(err)))
        }
    })
}

/// A filter for the Authorization header's text. A value that is not
/// visible ASCII counts as a bad token (401), not as a malformed request.
fn authorization_header() -> impl Filter<Extract = (Option<String>,), Error = Infallible> + Clone {
    warp::header::optional::<String>("authorization")
        .or(warp::any().map(|| Some("invalid".to_string())))
        .unify()
}

fn bearer_token(header: Option<&str>) -> Result<&str, ApiError> {
    let header = header.ok_or_else(|| {
        ApiError::unauthenticated("missing Authorization header; log in with POST /v1/tokens and send `Authorization: Bearer <token>`")
    })?;
    // The scheme name is case-insensitive (RFC 9110, section 11.1).
    let token = header
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            ApiError::unauthenticated("Authorization header must be `Bearer <token>`")
        })?;
    Ok(token)
}

/// A filter for a request body of at most `max_request_bytes`. A body
/// without a Content-Length header (chunked, or none at all) is read up to
/// the same limit.
fn body(context: &Context) -> impl Filter<Extract = (Bytes,), Error = warp::Rejection> + Clone {
    let max = context.broker.config().max_request_bytes;
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(move |length: Option<u64>, stream| async move {
            match tokio::time::timeout(BODY_READ_TIMEOUT, read_body(length, stream, max)).await {
                Ok(body) => body.map_err(warp::reject::custom),
                Err(_) => Err(warp::reject::custom(ApiError {
                    status: StatusCode::REQUEST_TIMEOUT,
                    code: "timed_out",
                    message: format!(
                        "request body not received within {} s",
                        BODY_READ_TIMEOUT.as_secs()
                    ),
                })),
            }
        })
}

async fn read_body<S, B>(length: Option<u64>, stream: S, max: usize) -> Result<Bytes, ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    use futures_util::StreamExt;

    let too_large = |size: u64| ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: "too_large",
        message: format!("request body is {size} bytes, the maximum is {max} (max_request_bytes)"),
    };
    futures_util::pin_mut!(stream);
    if let Some(length) = length.filter(|length| *length > max as u64) {
        drain_body(stream.as_mut()).await;
        return Err(too_large(length));
    }
    let mut body = bytes::BytesMut::with_capacity(length.unwrap_or(0) as usize);
    while let Some(chunk) = stream.next().await {
        let mut chunk =
            chunk.map_err(|err| ApiError::invalid("body", format!("failed to read: {err}")))?;
        if body.len() + chunk.remaining() > max {
            let size = (body.len() + chunk.remaining()) as u64;
            drain_body(stream.as_mut()).await;
            return Err(too_large(size));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            body.extend_from_slice(part);
            let read = part.len();
            chunk.advance(read);
        }
    }
    Ok(body.freeze())
}

/// Reads and discards the rest of a body that will be rejected. A server
/// that closes a connection with unread data makes the kernel reset it,
/// and the client may lose the error response with it. Past a bound the
/// reading stops.
async fn drain_body<S, B>(stream: std::pin::Pin<&mut S>)
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    use futures_util::StreamExt;

    let mut stream = stream;
    let mut drained = 0u64;
    while drained < DRAIN_LIMIT {
        match stream.next().await {
            Some(Ok(chunk)) => drained += chunk.remaining() as u64,
            _ => break,
        }
    }
}

/// A filter for the raw query string, empty when there is none.
fn query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// Runs a handler and turns its error into the JSON error response.
async fn respond<F>(handler: F) -> Response
where
    F: Future<Output = Result<Response, ApiError>>,
{
    handler.await.unwrap_or_else(ApiError::into_response)
}

/// Parses a publish or send body, stores the messages with `store`, counts
/// them, and responds with their offsets.
async fn store_messages<F, Fut>(
    context: &Context,
    raw_query: &str,
    body: &Bytes,
    store: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(PublishRequest) -> Fut,
    Fut: Future<Output = crate::broker::Result<PublishResult>>,
{
    let mut query = request::Query::parse(raw_query)?;
    let acks = match query
        .get::<String>("acks", "`all`, `leader` or `none`")?
        .as_deref()
    {
        None | Some("all") => Acks::All,
        Some("leader") => Acks::Leader,
        Some("none") => Acks::None,
        Some(other) => {
            return Err(ApiError::invalid(
                "acks",
                format!("`{other}` is not `all`, `leader` or `none`"),
            ))
        }
    };
    query.finish()?;
    let request = request::parse_json::<wire::MessagesIn>(body)?.into_request(acks)?;
    let count = request.messages.len() as u64;
    let bytes: usize = request.messages.iter().map(NewMessage::value_len).sum();
    let result = store(request).await?;
    if !result.duplicate {
        context.metrics.count_published(count, bytes as u64);
    }
    Ok(raw_json(StatusCode::OK, wire::offsets_json(&result)))
}

/// A JSON response of `value` with `status`.
fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => raw_json(status, body),
        Err(err) => ApiError::from(crate::broker::BrokerError::Internal(format!(
            "failed to encode response: {err}"
        )))
        .into_response(),
    }
}

/// A response with an already encoded JSON body.
fn raw_json(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An empty 204 response.
fn no_content() -> Response {
    warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response()
}

/// RFC 3339 text of a time in ms since the Unix epoch.
fn rfc3339_ms(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

/// Parses a numeric path segment, naming it in the error.
fn path_number<T: std::str::FromStr>(field: &str, text: &str) -> Result<T, ApiError> {
    text.parse()
        .map_err(|_| ApiError::invalid(field, format!("`{text}` is not a non-negative integer")))
}
