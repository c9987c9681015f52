//! `/v1/queues`: list, create, describe, delete, send, receive, ack and
//! nack.

use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json as json_value, Value};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

use crate::api::request::parse_json;
use crate::api::wire::deliveries_json;
use crate::api::{
    authenticated, body, json, no_content, query, raw_json, respond, rfc3339_ms, store_messages,
    with_context, Context,
};
use crate::broker::queues::CreateQueue;
use crate::broker::{AckOutcome, Principal, QueueView, MAX_WAIT};
use crate::meta::Access;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateQueueBody {
    name: String,
    #[serde(default)]
    access: Access,
    visibility_timeout_ms: Option<u64>,
    max_deliveries: Option<u32>,
    dead_letter_queue: Option<String>,
    message_ttl_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiveBody {
    #[serde(default = "default_max_messages")]
    max_messages: usize,
    #[serde(default)]
    wait_ms: u64,
    visibility_timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettleBody {
    ids: Vec<String>,
    #[serde(default = "default_requeue")]
    requeue: bool,
}

fn default_max_messages() -> usize {
    1
}

fn default_requeue() -> bool {
    true
}

/// The queue routes.
pub fn routes(context: &Context) -> BoxedFilter<(Response,)> {
    let list = warp::path!("v1" / "queues")
        .and(warp::get())
        .and(with_context(context))
        .and(authenticated(context))
        .then(|context: Context, principal: Principal| async move {
            let queues: Vec<Value> = context
                .broker
                .list_queues(&principal)
                .iter()
                .map(queue_json)
                .collect();
            json(StatusCode::OK, &json_value!({ "queues": queues }))
        });

    let create = warp::path!("v1" / "queues")
        .and(warp::post())
        .and(with_context(context))
        .and(authenticated(context))
        .and(body(context))
        .then(|context: Context, principal: Principal, body: Bytes| {
            respond(async move {
                let request: CreateQueueBody = parse_json(&body)?;
                let request = CreateQueue {
                    name: request.name,
                    access: request.access,
                    visibility_timeout_ms: request.visibility_timeout_ms,
                    max_deliveries: request.max_deliveries,
                    dead_letter_queue: request.dead_letter_queue,
                    message_ttl_ms: request.message_ttl_ms,
                };
                let view = context.broker.create_queue(&principal, request).await?;
                Ok(json(StatusCode::CREATED, &queue_json(&view)))
            })
        });

    let describe = warp::path!("v1" / "queues" / String)
        .and(warp::get())
        .and(with_context(context))
        .and(authenticated(context))
        .then(|name: String, context: Context, principal: Principal| {
            respond(async move {
                let view = context.broker.describe_queue(&principal, &name)?;
                Ok(json(StatusCode::OK, &queue_json(&view)))
            })
        });

    let delete = warp::path!("v1" / "queues" / String)
        .and(warp::delete())
        .and(with_context(context))
        .and(authenticated(context))
        .then(|name: String, context: Context, principal: Principal| {
            respond(async move {
                context.broker.delete_queue(&principal, &name).await?;
                Ok(no_content())
            })
        });

    let send = warp::path!("v1" / "queues" / String / "messages")
        .and(warp::post())
        .and(with_context(context))
        .and(authenticated(context))
        .and(query())
        .and(body(context))
        .then(
            |name: String, context: Context, principal: Principal, raw: String, body: Bytes| {
                respond(async move {
                    let broker = &context.broker;
                    let store = |request| broker.send(&principal, &name, request);
                    store_messages(&context, &raw, &body, store).await
                })
            },
        );

    let receive = warp::path!("v1" / "queues" / String / "receive")
        .and(warp::post())
        .and(with_context(context))
        .and(authenticated(context))
        .and(body(context))
        .then(
            |name: String, context: Context, principal: Principal, body: Bytes| {
                respond(async move {
                    let request: ReceiveBody = if body.is_empty() {
                        serde_json::from_str("{}").expect("defaults parse")
                    } else {
                        parse_json(&body)?
                    };
                    if request.wait_ms > MAX_WAIT.as_millis() as u64 {
                        return Err(crate::api::error::ApiError::invalid(
                            "wait_ms",
                            format!(
                                "{} is more than the maximum {}",
                                request.wait_ms,
                                MAX_WAIT.as_millis()
                            ),
                        ));
                    }
                    let deliveries = context
                        .broker
                        .receive(
                            &principal,
                            &name,
                            request.max_messages,
                            Duration::from_millis(request.wait_ms),
                            request.visibility_timeout_ms,
                        )
                        .await?;
                    context.metrics.count_delivered(deliveries.len() as u64);
                    Ok(raw_json(StatusCode::OK, deliveries_json(&deliveries)))
                })
            },
        );

    let ack = warp::path!("v1" / "queues" / String / "ack")
        .and(warp::post())
        .and(with_context(context))
        .and(authenticated(context))
        .and(body(context))
        .then(
            |name: String, context: Context, principal: Principal, body: Bytes| {
                respond(async move {
                    let request: AckBody = parse_json(&body)?;
                    let outcome = context.broker.ack(&principal, &name, &request.ids).await?;
                    Ok(json(StatusCode::OK, &outcome_json("acked", &outcome)))
                })
            },
        );

    let nack = warp::path!("v1" / "queues" / String / "nack")
        .and(warp::post())
        .and(with_context(context))
        .and(authenticated(context))
        .and(body(context))
        .then(
            |name: String, context: Context, principal: Principal, body: Bytes| {
                respond(async move {
                    let request: SettleBody = parse_json(&body)?;
                    let outcome = context
                        .broker
                        .nack(&principal, &name, &request.ids, request.requeue)
                        .await?;
                    Ok(json(StatusCode::OK, &outcome_json("nacked", &outcome)))
                })
            },
        );

    list.or(create)
        .unify()
        .or(describe)
        .unify()
        .or(delete)
        .unify()
        .or(send)
        .unify()
        .or(receive)
        .unify()
        .or(ack)
        .unify()
        .or(nack)
        .unify()
        .boxed()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    ids: Vec<String>,
}

/// `{"<settled_name>": [ids], "failed": [{"id", "reason"}]}`.
pub(crate) fn outcome_json(settled_name: &str, outcome: &AckOutcome) -> Value {
    let failed: Vec<Value> = outcome
        .failed
        .iter()
        .map(|(id, reason)| json_value!({ "id": id, "reason": reason }))
        .collect();
    let mut body = serde_json::Map::new();
    body.insert(settled_name.into(), json_value!(outcome.settled));
    body.insert("failed".into(), Value::Array(failed));
    Value::Object(body)
}

fn queue_json(view: &QueueView) -> Value {
    let spec = &view.spec;
    json_value!({
        "name": spec.name,
        "owner": spec.owner,
        "access": spec.access,
        "depth": view.depth,
        "in_flight": view.in_flight,
        "start_offset": view.start_offset,
        "end_offset": view.end_offset,
        "visibility_timeout_ms": spec.visibility_timeout_ms,
        "max_deliveries": spec.max_deliveries,
        "dead_letter_queue": spec.dead_letter_queue,
        "message_ttl_ms": spec.message_ttl_ms,
        "created_at": rfc3339_ms(spec.created_ms),
    })
}
