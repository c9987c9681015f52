//! WebSocket push: `GET /v1/queues/{q}/stream` and
//! `GET /v1/topics/{t}/subscriptions/{s}/stream`.
//!
//! Flow control is by credit: the client sends `{"type":"credit","n":10}`
//! and the server sends at most that many more messages. Queue messages are
//! leased as for `receive` and settled with `{"type":"ack","ids":[...]}` or
//! `{"type":"nack","ids":[...],"requeue":true}`; when the socket closes,
//! every lease it still holds is released so the messages go to other
//! consumers. Subscription messages are acked with
//! `{"type":"ack","offsets":[{"partition":0,"offset":5}]}`, which commits
//! `offset + 1`; on close the subscription's position moves back to the
//! oldest unacked message of this socket.
//!
//! Browsers cannot set headers on a WebSocket request, so these routes also
//! take the token as a `token` query parameter.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json as json_value;
use tokio::time::Instant;
use tracing::{debug, warn};
use warp::filters::ws::{Message as WsMessage, WebSocket, Ws};
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::api::error::ApiError;
use crate::api::request::Query;
use crate::api::wire::stream_message_json;
use crate::api::{authorization_header, bearer_token, query, respond, with_context, Context};
use crate::broker::queue::Queue;
use crate::broker::subscriptions::Group;
use crate::broker::{now_ms, Broker, Principal};
use crate::meta::Permission;

/// Most credits a client may hold at once.
const MAX_CREDITS: u64 = 100_000;

/// Most messages sent in one step.
const SEND_CHUNK: u64 = 100;

/// A frame from the client.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum ClientFrame {
    Credit {
        n: u64,
    },
    Ack {
        #[serde(default)]
        ids: Vec<String>,
        #[serde(default)]
        offsets: Vec<AckedOffset>,
    },
    Nack {
        ids: Vec<String>,
        #[serde(default = "default_true")]
        requeue: bool,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckedOffset {
    partition: u32,
    offset: u64,
}

fn default_true() -> bool {
    true
}

/// The two stream routes.
pub fn routes(context: &Context) -> BoxedFilter<(Response,)> {
    let queue = warp::path!("v1" / "queues" / String / "stream")
        .and(warp::get())
        .and(with_context(context))
        .and(authorization_header())
        .and(query())
        .and(warp::ws())
        .then(
            |name: String, context: Context, header: Option<String>, raw: String, ws: Ws| {
                respond(async move {
                    let principal = stream_principal(&context.broker, header.as_deref(), &raw)?;
                    let queue =
                        context
                            .broker
                            .open_queue(&principal, &name, Some(Permission::Consume))?;
                    Ok(ws
                    .on_upgrade(move |socket| async move {
                        if let Err(err) = queue_stream(socket, context, principal, queue).await {
                            debug!(queue = %name, error = %err, "queue stream ended with an error");
                        }
                    })
                    .into_response())
                })
            },
        );

    let subscription = warp::path!("v1" / "topics" / String / "subscriptions" / String / "stream")
        .and(warp::get())
        .and(with_context(context))
        .and(authorization_header())
        .and(query())
        .and(warp::ws())
        .then(
            |topic: String, name: String, context: Context, header: Option<String>, raw: String, ws: Ws| {
                respond(async move {
                    let principal = stream_principal(&context.broker, header.as_deref(), &raw)?;
                    let group = context.broker.group(&principal, &topic, &name)?;
                    Ok(ws
                        .on_upgrade(move |socket| async move {
                            if let Err(err) = subscription_stream(socket, context, principal, group).await {
                                debug!(topic = %topic, subscription = %name, error = %err, "subscription stream ended with an error");
                            }
                        })
                        .into_response())
                })
            },
        );

    queue.or(subscription).unify().boxed()
}

fn stream_principal(
    broker: &Broker,
    header: Option<&str>,
    raw_query: &str,
) -> Result<Principal, ApiError> {
    let mut query = Query::parse(raw_query)?;
    let query_token: Option<String> = query.get("token", "a token")?;
    query.finish()?;
    let token = match (&query_token, header) {
        (Some(token), _) => token.as_str(),
        (None, header) => bearer_token(header)?,
    };
    Ok(broker.authenticate(token)?)
}

type Sink = futures_util::stream::SplitSink<WebSocket, WsMessage>;

/// Reason a stream ends on the broker's side.
enum StreamEnd {
    /// The broker is shutting down.
    Shutdown,
    /// The resource is gone or the caller lost the permission.
    Rejected(ApiError),
}

/// Whether the stream must end: at shutdown, or when `recheck` failed.
fn stream_end(broker: &Broker, recheck: crate::broker::Result<()>) -> Option<StreamEnd> {
    if broker.is_shutting_down() {
        return Some(StreamEnd::Shutdown);
    }
    recheck
        .err()
        .map(|err| StreamEnd::Rejected(ApiError::from(err)))
}

/// Sends the reason (an error frame, or a close frame with code 1001 at
/// shutdown) and closes the socket.
async fn end_stream(sink: &mut Sink, end: StreamEnd) -> Result<(), warp::Error> {
    match end {
        StreamEnd::Shutdown => {
            sink.send(WsMessage::close_with(1001u16, "broker shutting down"))
                .await?
        }
        StreamEnd::Rejected(error) => {
            send_error(sink, error).await?;
            sink.send(WsMessage::close()).await?;
        }
    }
    Ok(())
}

async fn send_json(sink: &mut Sink, value: &serde_json::Value) -> Result<(), warp::Error> {
    sink.send(WsMessage::text(value.to_string())).await
}

/// Sends an error frame with the same code and message as the REST error.
async fn send_error(sink: &mut Sink, error: ApiError) -> Result<(), warp::Error> {
    send_json(
        sink,
        &json_value!({ "type": "error", "error": { "code": error.code, "message": error.message } }),
    )
    .await
}

async fn send_invalid(sink: &mut Sink, message: &str) -> Result<(), warp::Error> {
    send_error(sink, ApiError::invalid("frame", message)).await
}

/// What the next client frame asks for, or `None` when the socket closed.
async fn next_frame(
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    sink: &mut Sink,
) -> Result<Option<ClientFrame>, warp::Error> {
    loop {
        let Some(message) = stream.next().await else {
            return Ok(None);
        };
        let message = message?;
        if message.is_close() {
            return Ok(None);
        }
        let Ok(text) = message.to_str() else {
            // Pings, pongs and binary frames carry no commands.
            continue;
        };
        match serde_json::from_str::<ClientFrame>(text) {
            Ok(frame) => return Ok(Some(frame)),
            Err(err) => {
                send_invalid(
                    sink,
                    &format!("{err}; expected {{\"type\":\"credit\",\"n\":N}}, ack or nack"),
                )
                .await?
            }
        }
    }
}

async fn queue_stream(
    socket: WebSocket,
    context: Context,
    principal: Principal,
    queue: Arc<Queue>,
) -> Result<(), warp::Error> {
    let broker = &context.broker;
    let (mut sink, mut stream) = socket.split();
    let mut credits: u64 = 0;
    let mut outstanding: HashSet<String> = HashSet::new();
    let visibility_ms = queue.spec.visibility_timeout_ms;
    let result = async {
        loop {
            if let Some(end) = stream_end(
                broker,
                broker.recheck_queue(&principal, &queue, Permission::Consume),
            ) {
                return end_stream(&mut sink, end).await;
            }
            if credits > 0 {
                let size = credits.min(SEND_CHUNK) as usize;
                let deliveries = match broker.lease_from(&queue, size, visibility_ms).await {
                    Ok(deliveries) => deliveries,
                    Err(err) => {
                        // A failing lease (full disk, say) would fail again
                        // at once: end the stream instead of spinning.
                        send_error(&mut sink, ApiError::from(err)).await?;
                        return Ok(());
                    }
                };
                if !deliveries.is_empty() {
                    for delivery in &deliveries {
                        credits -= 1;
                        outstanding.insert(delivery.id.clone());
                        let frame = stream_message_json(&delivery.message, Some(delivery));
                        sink.send(WsMessage::text(frame)).await?;
                    }
                    context.metrics.count_delivered(deliveries.len() as u64);
                    continue;
                }
            }

            let notified = queue.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // A deletion, revoke or shutdown just before the enable would
            // otherwise go unnoticed until the next frame.
            if credits > 0 && queue.has_ready() || broker.is_shutting_down() {
                continue;
            }
            if broker
                .recheck_queue(&principal, &queue, Permission::Consume)
                .is_err()
            {
                continue;
            }
            let wake = match queue.next_deadline() {
                Some(deadline) => {
                    let until = Duration::from_millis((deadline - now_ms()).max(0) as u64);
                    Instant::now() + until
                }
                None => Instant::now() + Duration::from_secs(3600),
            };
            tokio::select! {
                frame = next_frame(&mut stream, &mut sink) => {
                    let Some(frame) = frame? else { return Ok(()) };
                    let settle = match frame {
                        ClientFrame::Credit { n } => {
                            credits = credits.saturating_add(n).min(MAX_CREDITS);
                            continue;
                        }
                        ClientFrame::Ack { offsets, .. } if !offsets.is_empty() => {
                            send_invalid(&mut sink, "queue acks take `ids`, not `offsets`").await?;
                            continue;
                        }
                        ClientFrame::Ack { ids, .. } => {
                            ("acked", broker.ack(&principal, &queue.spec.name, &ids).await)
                        }
                        ClientFrame::Nack { ids, requeue } => {
                            let name = &queue.spec.name;
                            ("nacked", broker.nack(&principal, name, &ids, requeue).await)
                        }
                    };
                    match settle {
                        (name, Ok(outcome)) => {
                            for id in &outcome.settled {
                                outstanding.remove(id);
                            }
                            let mut body = crate::api::queues::outcome_json(name, &outcome);
                            body["type"] = json_value!(name);
                            send_json(&mut sink, &body).await?;
                        }
                        (_, Err(err)) => send_error(&mut sink, ApiError::from(err)).await?,
                    }
                }
                _ = &mut notified, if credits > 0 => {}
                _ = tokio::time::sleep_until(wake), if credits > 0 => {}
            }
        }
    }
    .await;

    // The leases this socket still has go back to the queue at once
    // rather than after the visibility timeout.
    if !outstanding.is_empty() {
        let ids: Vec<String> = outstanding.into_iter().collect();
        if let Err(err) = queue.release(&ids).await {
            warn!(queue = %queue.spec.name, error = %err, "failed to release leases of a closed stream");
        }
    }
    result
}

async fn subscription_stream(
    socket: WebSocket,
    context: Context,
    principal: Principal,
    group: Arc<Group>,
) -> Result<(), warp::Error> {
    let broker = &context.broker;
    let (mut sink, mut stream) = socket.split();
    let mut credits: u64 = 0;
    // Per partition, the offsets sent and not yet acked.
    let mut outstanding: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    let topic = group.spec.topic.clone();
    let name = group.spec.name.clone();
    let result = async {
        loop {
            if let Some(end) = stream_end(broker, broker.recheck_group(&principal, &group)) {
                return end_stream(&mut sink, end).await;
            }
            if credits > 0 {
                let messages = match group.take(credits.min(SEND_CHUNK) as usize) {
                    Ok(messages) => messages,
                    Err(err) => {
                        send_error(&mut sink, ApiError::from(err)).await?;
                        return Ok(());
                    }
                };
                if !messages.is_empty() {
                    for message in &messages {
                        credits -= 1;
                        outstanding.entry(message.partition).or_default().insert(message.offset);
                        sink.send(WsMessage::text(stream_message_json(message, None))).await?;
                    }
                    context.metrics.count_delivered(messages.len() as u64);
                    continue;
                }
            }

            let notified = group.topic.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if credits > 0 && group.has_messages() || broker.is_shutting_down() {
                continue;
            }
            if broker.recheck_group(&principal, &group).is_err() {
                continue;
            }
            tokio::select! {
                frame = next_frame(&mut stream, &mut sink) => {
                    let Some(frame) = frame? else { return Ok(()) };
                    match frame {
                        ClientFrame::Credit { n } => {
                            credits = credits.saturating_add(n).min(MAX_CREDITS);
                        }
                        ClientFrame::Ack { ids, .. } if !ids.is_empty() => {
                            send_invalid(&mut sink, "subscription acks take `offsets`, not `ids`").await?;
                        }
                        ClientFrame::Ack { offsets, .. } => {
                            let Some(commits) = offsets
                                .iter()
                                .map(|acked| Some((acked.partition, acked.offset.checked_add(1)?)))
                                .collect::<Option<Vec<(u32, u64)>>>()
                            else {
                                send_invalid(&mut sink, "an acked offset is out of range").await?;
                                continue;
                            };
                            match broker.commit(&principal, &topic, &name, &commits).await {
                                Ok(()) => {
                                    for acked in &offsets {
                                        if let Some(sent) = outstanding.get_mut(&acked.partition) {
                                            sent.retain(|offset| *offset > acked.offset);
                                        }
                                    }
                                    let committed: Vec<_> = commits
                                        .iter()
                                        .map(|(p, o)| json_value!({"partition": p, "offset": o}))
                                        .collect();
                                    let frame = json_value!({ "type": "acked", "offsets": committed });
                                    send_json(&mut sink, &frame).await?;
                                }
                                Err(err) => send_error(&mut sink, ApiError::from(err)).await?,
                            }
                        }
                        ClientFrame::Nack { .. } => {
                            let message = "subscriptions take no nack; \
                                           close the stream to get unacked messages again";
                            send_invalid(&mut sink, message).await?;
                        }
                    }
                }
                _ = &mut notified, if credits > 0 => {}
            }
        }
    }
    .await;

    for (partition, sent) in outstanding {
        if let Some(oldest) = sent.first() {
            broker.return_unacked(&group, partition, *oldest);
        }
    }
    result
}
