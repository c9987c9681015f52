//! `GET /v1/topics/{t}/subscriptions/{s}/events`: a read-only server-sent
//! events stream of a subscription, for clients that cannot use WebSocket.
//!
//! The stream is made of the subscription's own routes. It pulls
//! (`GET .../messages` with a long poll) and sends each message as an event
//! `message` whose id is `<partition>-<offset>` and whose data is the
//! message JSON. Then it commits the offsets it sent (`POST .../offsets`).
//! Both go through this broker's routes with the client's token, so in a
//! cluster they reach the subscription's leader like any request. A revoked
//! grant or a deleted subscription ends the stream with an `error` event
//! carrying the error the request got.
//!
//! The token comes in the `Authorization` header or, for browsers, whose
//! `EventSource` cannot set headers, in the `access_token` query parameter.
//!
//! Delivery is at most once: a message counts as delivered once the
//! connection took it (it may still sit in the socket's buffer when the
//! client goes away). Clients that need to acknowledge use pull or
//! the WebSocket stream.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json as json_value, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use warp::filters::BoxedFilter;
use warp::http::{Method, Request, StatusCode};
use warp::reply::Response;
use warp::sse::Event;
use warp::Filter;

use crate::api::loopback::HttpHandler;
use crate::api::request::Query;
use crate::api::topics::bounded;
use crate::api::{query, with_context, Context};
use crate::broker::queues::MAX_RECEIVE_MESSAGES;

/// Long-poll wait of each pull; a keep-alive comment goes out as often.
const PULL_WAIT: Duration = Duration::from_secs(15);

/// Builds the event stream route.
pub fn routes(context: &Context) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "topics" / String / "subscriptions" / String / "events")
        .and(warp::get())
        .and(with_context(context))
        .and(warp::header::optional::<String>("authorization"))
        .and(query())
        .then(
            |topic: String,
             name: String,
             context: Context,
             authorization: Option<String>,
             raw: String| async move {
                let parsed = Query::parse(&raw).and_then(|mut query| {
                    let max = bounded(
                        &mut query,
                        "max_messages",
                        100,
                        1,
                        MAX_RECEIVE_MESSAGES as u64,
                    )?;
                    let token = query.get::<String>("access_token", "a login token")?;
                    query.finish()?;
                    Ok((max, token))
                });
                let (max_messages, token) = match parsed {
                    Ok(parsed) => parsed,
                    Err(err) => return err.into_response(),
                };
                // Browsers' EventSource cannot set headers, so the token may
                // come in the query instead.
                let authorization =
                    authorization.or_else(|| token.map(|token| format!("Bearer {token}")));
                let Some(handler) = context.loopback.get().cloned() else {
                    return unavailable();
                };
                let subscription = Subscription {
                    handler,
                    context,
                    authorization,
                    base: format!("/v1/topics/{topic}/subscriptions/{name}"),
                    max_messages,
                };
                // Errors of the first pull (401, 404, ...) are returned as a
                // plain response, before the stream starts.
                let first = subscription.pull(Duration::ZERO).await;
                if first.status() != StatusCode::OK {
                    return into_response(first);
                }
                let events = subscription.events(first.into_body());
                let stream = warp::sse::keep_alive().interval(PULL_WAIT).stream(events);
                warp::reply::Reply::into_response(warp::sse::reply(stream))
            },
        )
        .boxed()
}

struct Subscription {
    handler: HttpHandler,
    context: Context,
    authorization: Option<String>,
    base: String,
    max_messages: u64,
}

impl Subscription {
    async fn call(&self, method: Method, path: String, body: Bytes) -> warp::http::Response<Bytes> {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(authorization) = &self.authorization {
            request = request.header("authorization", authorization);
        }
        match request.body(body) {
            Ok(request) => (self.handler)(request).await,
            Err(_) => warp::http::Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .body(Bytes::new())
                .unwrap_or_default(),
        }
    }

    async fn pull(&self, wait: Duration) -> warp::http::Response<Bytes> {
        let path = format!(
            "{}/messages?max_messages={}&wait_ms={}",
            self.base,
            self.max_messages,
            wait.as_millis()
        );
        self.call(Method::GET, path, Bytes::new()).await
    }

    /// Commits the offsets after `messages`; returns an error event when
    /// the commit fails.
    async fn commit(&self, messages: &[Value]) -> Option<Event> {
        let mut next: BTreeMap<u64, u64> = BTreeMap::new();
        for message in messages {
            if let (Some(partition), Some(offset)) =
                (message["partition"].as_u64(), message["offset"].as_u64())
            {
                let entry = next.entry(partition).or_default();
                *entry = (*entry).max(offset + 1);
            }
        }
        if next.is_empty() {
            return None;
        }
        let offsets: Vec<Value> = next
            .into_iter()
            .map(|(partition, offset)| json_value!({"partition": partition, "offset": offset}))
            .collect();
        let body = json_value!({ "offsets": offsets }).to_string();
        let response = self
            .call(
                Method::POST,
                format!("{}/offsets", self.base),
                Bytes::from(body),
            )
            .await;
        (!response.status().is_success()).then(|| error_event(response.body()))
    }

    /// Runs the stream in a task and returns its events, starting with
    /// those of `first`. The task ends when the client goes away.
    fn events(self, first: Bytes) -> ReceiverStream<Result<Event, Infallible>> {
        // One slot: a send returns once the connection took the event
        // before, so the stream can tell what the connection has.
        let (sender, receiver) = mpsc::channel(1);
        tokio::spawn(async move {
            let mut body = first;
            loop {
                let messages = parse_messages(&body);
                let mut taken = 0;
                for message in &messages {
                    if sender.send(Ok(message_event(message))).await.is_err() {
                        break;
                    }
                    taken += 1;
                }
                // The last one is taken once its slot is free again.
                if taken > 0 && taken == messages.len() && sender.reserve().await.is_err() {
                    taken -= 1;
                }
                // Handed to the connection: they count as delivered.
                if let Some(error) = self.commit(&messages[..taken]).await {
                    let _ = sender.send(Ok(error)).await;
                    return;
                }
                if taken < messages.len() {
                    return;
                }
                if self.context.broker.is_shutting_down() {
                    return;
                }
                let response = tokio::select! {
                    response = self.pull(PULL_WAIT) => response,
                    _ = sender.closed() => return,
                };
                if response.status() != StatusCode::OK {
                    let _ = sender.send(Ok(error_event(response.body()))).await;
                    return;
                }
                body = response.into_body();
            }
        });
        ReceiverStream::new(receiver)
    }
}

fn parse_messages(body: &[u8]) -> Vec<Value> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|mut value| value.get_mut("messages").map(Value::take))
        .and_then(|messages| match messages {
            Value::Array(messages) => Some(messages),
            _ => None,
        })
        .unwrap_or_default()
}

fn message_event(message: &Value) -> Event {
    let id = format!(
        "{}-{}",
        message["partition"].as_u64().unwrap_or(0),
        message["offset"].as_u64().unwrap_or(0)
    );
    Event::default()
        .event("message")
        .id(id)
        .data(message.to_string())
}

fn error_event(body: &[u8]) -> Event {
    let data = match serde_json::from_slice::<Value>(body) {
        Ok(value) => value.to_string(),
        Err(_) => {
            json_value!({"error": {"code": "internal", "message": "the stream failed"}}).to_string()
        }
    };
    Event::default().event("error").data(data)
}

fn into_response(response: warp::http::Response<Bytes>) -> Response {
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body.into())
}

fn unavailable() -> Response {
    let body =
        json_value!({"error": {"code": "unavailable", "message": "the broker is starting; retry"}});
    let mut response = Response::new(body.to_string().into());
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response
}
