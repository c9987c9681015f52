//! Request routing in a cluster. A request about one topic or queue
//! (`/v1/topics/{topic}/...`, `/v1/queues/{queue}/...`) runs on the broker
//! that leads it: any other broker sends it there over gRPC and returns the
//! leader's response unchanged. The leader checks the client's token itself,
//! so a forwarded request can do nothing its direct twin could not.
//! Everything else runs where it arrives.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::api::error::ApiError;
use crate::api::{body, Context};
use crate::broker::leadership::METADATA_WAIT;
use crate::cluster::proto::{Header, HttpRequest, HttpResponse};
use crate::cluster::rpc::HOPS_HEADER;
use crate::cluster::state::{resource_key, META_KEY};
use crate::cluster::Cluster;

/// A request passes through at most this many forwards, so a stale view of
/// leadership cannot send it in circles.
const MAX_HOPS: u32 = 2;

/// Maximum wait for the leader's response: the maximum long poll plus
/// some slack.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(40);

/// Header with the `__meta` offset the forwarding broker's catalog had
/// applied: the leader first catches up to it, so a resource created
/// through one broker is known on the broker that leads it.
// NOTE: a client can send this header and the hops header itself. That only
// affects its own request: a wait of at most `METADATA_WAIT`, or a 503
// instead of a forward.
const META_OFFSET_HEADER: &str = "x-ferry-meta-offset";

/// How long a request waits for a resource without a leader to get one.
const LEADERLESS_WAIT: Duration = Duration::from_secs(2);

/// Headers that belong to one connection and are not forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "content-length",
    "host",
    HOPS_HEADER,
];

/// The broker a request runs on.
enum Route {
    Here,
    /// This broker leads the resource but has not opened it yet.
    Opening,
    /// The resource has no leader in this broker's view, with the message
    /// for the client if that lasts.
    Leaderless(String),
    Forward {
        key: String,
        broker: u32,
        address: String,
    },
    Unavailable(String),
}

/// The handling of a request that does not run here.
enum Outcome {
    Forward(Target),
    Fail(ApiError),
}

/// Builds the filter that forwards requests led elsewhere, and rejects (as not
/// found, the lowest priority) the ones that run here. Once a request is
/// not for this broker, the filter always sends the response itself,
/// because a rejection would let the local routes run the request on a
/// broker that does not lead the resource.
pub fn forwarded(context: &Context, cluster: Arc<Cluster>) -> BoxedFilter<(Response,)> {
    let decide = {
        let cluster = Arc::clone(&cluster);
        move |path: FullPath, headers: HeaderMap| {
            let cluster = Arc::clone(&cluster);
            async move {
                let hops = hops_of(&headers);
                let meta_offset = headers
                    .get(META_OFFSET_HEADER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<u64>().ok());
                if let Some(offset) = meta_offset {
                    // A timeout leaves the catalog as it is, and the request
                    // then runs against this broker's catalog.
                    let mut applied = cluster.broker.subscribe_meta_applied();
                    let _ = tokio::time::timeout(
                        METADATA_WAIT,
                        applied.wait_for(|applied| *applied >= offset),
                    )
                    .await;
                }
                let Some(outcome) = outcome(route_when_ready(&cluster, path.as_str(), hops).await)
                else {
                    return Err(warp::reject::not_found());
                };
                Ok((outcome, hops, headers))
            }
        }
    };
    warp::path::full()
        .and(warp::header::headers_cloned())
        .and_then(decide)
        .untuple_one()
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(body_or_error(context))
        .then(
            move |outcome: Outcome,
                  hops: u32,
                  headers: HeaderMap,
                  method: Method,
                  path: FullPath,
                  query: String,
                  body: Result<Bytes, ApiError>| {
                let cluster = Arc::clone(&cluster);
                async move {
                    let target = match outcome {
                        Outcome::Forward(target) => target,
                        Outcome::Fail(error) => return error.into_response(),
                    };
                    let body = match body {
                        Ok(body) => body,
                        Err(error) => return error.into_response(),
                    };
                    forward(&cluster, &target, hops, headers, method, path, query, body)
                        .await
                        .unwrap_or_else(ApiError::into_response)
                }
            },
        )
        .boxed()
}

/// Extracts the request body, or the error (too large, timed out) as a
/// value, so that it does not fall through to the local routes.
fn body_or_error(
    context: &Context,
) -> impl Filter<Extract = (Result<Bytes, ApiError>,), Error = warp::Rejection> + Clone {
    body(context)
        .map(Ok::<Bytes, ApiError>)
        .or_else(|rejection: warp::Rejection| async move {
            match rejection.find::<ApiError>() {
                Some(error) => Ok((Err(error.clone()),)),
                None => Err(rejection),
            }
        })
}

/// Returns the handling of a request routed as `route`, or `None` when it
/// runs here.
fn outcome(route: Route) -> Option<Outcome> {
    match route {
        Route::Here | Route::Opening => None,
        Route::Unavailable(message) | Route::Leaderless(message) => Some(Outcome::Fail(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message,
        })),
        Route::Forward {
            key,
            broker,
            address,
        } => Some(Outcome::Forward(Target {
            key,
            broker,
            address,
        })),
    }
}

/// Routes a request; when this broker is the leader but has not opened
/// the resource yet (the controller just assigned it), waits for that.
async fn route_when_ready(cluster: &Cluster, path: &str, hops: u32) -> Route {
    let start = tokio::time::Instant::now();
    loop {
        let waited = start.elapsed();
        match route(cluster, path, hops) {
            Route::Opening if waited < METADATA_WAIT => {}
            Route::Opening => return Route::Here,
            // An election usually ends within a fetch round or two, so a
            // short wait spares the client a 503.
            Route::Leaderless(_) if waited < LEADERLESS_WAIT => {}
            Route::Leaderless(message) => return Route::Unavailable(message),
            route => return route,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn route(cluster: &Cluster, path: &str, hops: u32) -> Route {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (kind, name) = match segments.as_slice() {
        // An event stream is served where the client connected; its pulls
        // and commits are requests of their own, forwarded as usual.
        ["v1", "topics", _, "subscriptions", _, "events"] => return Route::Here,
        ["v1", "topics", name, ..] if !name.is_empty() => ("topic", *name),
        ["v1", "queues", name, ..] if !name.is_empty() => ("queue", *name),
        _ => return Route::Here,
    };
    let id = cluster.broker.with_catalog(|catalog| match kind {
        "topic" => catalog.topic(name).map(|topic| topic.spec.id),
        _ => catalog.queue(name).map(|queue| queue.spec.id),
    });
    let view = cluster.coordinator.view();
    let me = cluster.broker_id();
    let key = match id {
        Some(id) => resource_key(kind, id),
        // This broker's catalog may lag behind a creation; the `__meta`
        // leader's catalog is the newest.
        None if hops == 0 => META_KEY.to_string(),
        None => return Route::Here,
    };
    let Some((leader, _)) = view.leader_of(&key) else {
        if id.is_none() {
            return Route::Here;
        }
        return Route::Leaderless(format!(
            "{kind} `{name}` has no leader at the moment (the controller is \
             assigning or electing one); retry"
        ));
    };
    if leader == me {
        if cluster.leader_term(&key).is_none() {
            return Route::Opening;
        }
        return Route::Here;
    }
    if hops >= MAX_HOPS {
        return Route::Unavailable(format!(
            "the leader of {kind} `{name}` changed while the request was forwarded; retry"
        ));
    }
    match view.grpc_address(leader) {
        Some(address) => Route::Forward {
            key,
            broker: leader,
            address: address.to_string(),
        },
        None => Route::Unavailable(format!(
            "the leader of {kind} `{name}`, broker {leader}, is not reachable; retry"
        )),
    }
}

/// The broker a request goes to, and why.
struct Target {
    /// Resource key whose leader it is.
    key: String,
    broker: u32,
    address: String,
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    cluster: &Cluster,
    target: &Target,
    hops: u32,
    headers: HeaderMap,
    method: Method,
    path: FullPath,
    query: String,
    body: Bytes,
) -> Result<Response, ApiError> {
    let unavailable = |message: String| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "unavailable",
        message,
    };
    let request = HttpRequest {
        method: method.to_string(),
        path_and_query: join_query(&path, &query),
        headers: forwarded_headers(cluster, &headers),
        body,
        hops: hops + 1,
        client_address: String::new(),
    };
    let address = &target.address;
    let mut client = cluster
        .peers
        .forwarding(address)
        .map_err(|status| unavailable(status.message().to_string()))?;
    // A leader that stopped responding is replaced within a session
    // timeout, and the request then ends at once instead of at its timeout.
    let mut view = cluster.coordinator.subscribe();
    // A resource that disappears was deleted, possibly by this very
    // request, so only a new leader (or none) ends the wait.
    let leader_moved = view.wait_for(|view| {
        view.resources
            .get(&target.key)
            .is_some_and(|state| state.value.leader != Some(target.broker))
    });
    let response = tokio::select! {
        response = tokio::time::timeout(FORWARD_TIMEOUT, client.forward(request)) => response,
        _ = leader_moved => {
            return Err(unavailable(format!(
                "broker {} stopped leading while it handled the request, which may or may \
                 not have taken effect; retry",
                target.broker
            )));
        }
    };
    let response = response
        .map_err(|_| {
            unavailable(format!(
                "the leader, broker {}, at {address} did not answer within {} s; retry",
                target.broker,
                FORWARD_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|status| {
            unavailable(format!(
                "failed to reach the leader, broker {}, at {address}: {}; retry",
                target.broker,
                status.message()
            ))
        })?
        .into_inner();
    Ok(http_response(response))
}

/// Builds the filter for WebSocket stream requests led elsewhere. It opens the
/// stream on the leader over gRPC first, responds with the leader's error
/// if the leader refused it, and otherwise upgrades and relays frames.
pub fn forwarded_streams(cluster: Arc<Cluster>) -> BoxedFilter<(Response,)> {
    // The route is decided before `warp::ws()` runs, because that filter
    // takes the connection's upgrade for itself even when a later step
    // rejects, and the local stream routes would then find none.
    let decide = {
        let cluster = Arc::clone(&cluster);
        move |path: FullPath, query: String, headers: HeaderMap| {
            let cluster = Arc::clone(&cluster);
            async move {
                let is_websocket = headers
                    .get("upgrade")
                    .and_then(|value| value.to_str().ok())
                    .is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
                if !is_websocket {
                    return Err(warp::reject::not_found());
                }
                let hops = hops_of(&headers);
                let Some(outcome) = outcome(route_when_ready(&cluster, path.as_str(), hops).await)
                else {
                    return Err(warp::reject::not_found());
                };
                Ok((outcome, join_query(&path, &query), headers, hops))
            }
        }
    };
    warp::path::full()
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and_then(decide)
        .untuple_one()
        .and(warp::ws())
        .then(
            move |outcome: Outcome,
                  path_and_query: String,
                  headers: HeaderMap,
                  hops: u32,
                  ws: warp::ws::Ws| {
                let cluster = Arc::clone(&cluster);
                async move {
                    let target = match outcome {
                        Outcome::Forward(target) => target,
                        Outcome::Fail(error) => return error.into_response(),
                    };
                    open_stream(&cluster, ws, &target, path_and_query, &headers, hops)
                        .await
                        .unwrap_or_else(ApiError::into_response)
                }
            },
        )
        .boxed()
}

async fn open_stream(
    cluster: &Cluster,
    ws: warp::ws::Ws,
    target: &Target,
    path_and_query: String,
    headers: &HeaderMap,
    hops: u32,
) -> Result<Response, ApiError> {
    use crate::cluster::proto::stream_frame::Frame;
    use crate::cluster::proto::StreamFrame;
    use futures_util::StreamExt;

    let unavailable = |message: String| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "unavailable",
        message,
    };
    let (sender, frames) = crate::cluster::streams::frame_channel();
    let open = HttpRequest {
        method: "GET".into(),
        path_and_query,
        headers: forwarded_headers(cluster, headers),
        body: Bytes::new(),
        hops: hops + 1,
        client_address: String::new(),
    };
    let _ = sender
        .send(StreamFrame {
            frame: Some(Frame::Open(open)),
        })
        .await;
    let mut client = cluster
        .peers
        .forwarding(&target.address)
        .map_err(|status| unavailable(status.message().to_string()))?;
    let mut inbound = client
        .forward_stream(frames)
        .await
        .map_err(|status| {
            unavailable(format!(
                "failed to open the stream on the leader, broker {}: {}; retry",
                target.broker,
                status.message()
            ))
        })?
        .into_inner();
    match inbound.next().await {
        Some(Ok(StreamFrame {
            frame: Some(Frame::Accepted(_)),
        })) => {}
        Some(Ok(StreamFrame {
            frame: Some(Frame::Rejected(response)),
        })) => return Ok(http_response(response)),
        _ => {
            return Err(unavailable(format!(
                "the leader, broker {}, did not open the stream; retry",
                target.broker
            )))
        }
    }
    Ok(ws
        .on_upgrade(move |socket| relay_stream(socket, sender, inbound))
        .into_response())
}

/// Relays one client WebSocket to and from the leader's gRPC stream until
/// either side closes.
async fn relay_stream(
    socket: warp::ws::WebSocket,
    sender: tokio::sync::mpsc::Sender<crate::cluster::proto::StreamFrame>,
    mut inbound: tonic::Streaming<crate::cluster::proto::StreamFrame>,
) {
    use crate::cluster::proto::stream_frame::Frame;
    use crate::cluster::proto::{StreamClose, StreamFrame};
    use futures_util::{SinkExt, StreamExt};
    use warp::ws::Message;

    let (mut to_client, mut from_client) = socket.split();
    let upstream = async {
        while let Some(Ok(message)) = from_client.next().await {
            let frame = if let Ok(text) = message.to_str() {
                Frame::Text(text.to_string())
            } else if message.is_close() {
                let (code, reason) = message.close_frame().unwrap_or((1000, ""));
                Frame::Close(StreamClose {
                    code: code as u32,
                    reason: reason.to_string(),
                })
            } else {
                continue;
            };
            let closing = matches!(frame, Frame::Close(_));
            if sender
                .send(StreamFrame { frame: Some(frame) })
                .await
                .is_err()
                || closing
            {
                return;
            }
        }
    };
    let downstream = async {
        while let Some(Ok(frame)) = inbound.next().await {
            let sent = match frame.frame {
                Some(Frame::Text(text)) => to_client.send(Message::text(text)).await,
                Some(Frame::Close(close)) => {
                    let _ = to_client
                        .send(Message::close_with(close.code as u16, close.reason))
                        .await;
                    return;
                }
                _ => Ok(()),
            };
            if sent.is_err() {
                return;
            }
        }
        // The leader went away without closing the stream.
        let _ = to_client
            .send(Message::close_with(
                1011u16,
                "the leader of this stream stopped; reconnect",
            ))
            .await;
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}

/// Returns how many brokers forwarded the request so far.
fn hops_of(headers: &HeaderMap) -> u32 {
    headers
        .get(HOPS_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u32>().ok())
        .unwrap_or(0)
}

fn join_query(path: &FullPath, query: &str) -> String {
    if query.is_empty() {
        path.as_str().to_string()
    } else {
        format!("{}?{query}", path.as_str())
    }
}

/// Returns the client's headers to pass on, without the connection's own,
/// plus this broker's `__meta` offset.
fn forwarded_headers(cluster: &Cluster, headers: &HeaderMap) -> Vec<Header> {
    let mut forwarded: Vec<Header> = headers
        .iter()
        .filter(|(name, _)| {
            !HOP_BY_HOP.contains(&name.as_str())
                && !name.as_str().starts_with("sec-websocket-")
                && name.as_str() != META_OFFSET_HEADER
        })
        .map(|(name, value)| Header {
            name: name.to_string(),
            value: Bytes::copy_from_slice(value.as_bytes()),
        })
        .collect();
    let applied = *cluster.broker.subscribe_meta_applied().borrow();
    forwarded.push(Header {
        name: META_OFFSET_HEADER.to_string(),
        value: applied.to_string().into_bytes().into(),
    });
    forwarded
}

/// Converts the leader's response into this broker's response.
fn http_response(response: HttpResponse) -> Response {
    let mut reply = Response::new(response.body.into());
    *reply.status_mut() =
        StatusCode::from_u16(response.status as u16).unwrap_or(StatusCode::BAD_GATEWAY);
    for header in response.headers {
        if HOP_BY_HOP.contains(&header.name.as_str()) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            warp::http::HeaderName::from_bytes(header.name.as_bytes()),
            warp::http::HeaderValue::from_bytes(&header.value),
        ) {
            reply.headers_mut().append(name, value);
        }
    }
    reply
}
