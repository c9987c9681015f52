//! `/v1/topics`: list, create, describe, delete, publish, and fetch by
//! offset.

use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json as json_value, Value};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

use crate::api::error::ApiError;
use crate::api::request::{parse_json, Query};
use crate::api::wire::messages_json;
use crate::api::{
    authenticated, body, json, no_content, path_number, query, raw_json, respond, rfc3339_ms,
    store_messages, with_context, Context,
};
use crate::broker::topics::{CreateTopic, FetchLimits};
use crate::broker::{Principal, TopicView, MAX_WAIT};
use crate::meta::{Access, Cleanup};

/// Default and maximum number of messages per fetch.
const DEFAULT_MAX_MESSAGES: usize = 100;
const MAX_MAX_MESSAGES: usize = 10_000;

/// Default and maximum bytes read per fetch.
const DEFAULT_MAX_BYTES: usize = 1 << 20;
const MAX_MAX_BYTES: usize = 64 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTopicBody {
    name: String,
    #[serde(default)]
    access: Access,
    partitions: Option<u32>,
    replication_factor: Option<u32>,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    segment_bytes: Option<u64>,
    cleanup: Option<Cleanup>,
    message_ttl_ms: Option<u64>,
}

/// The topic routes.
pub fn routes(context: &Context) -> BoxedFilter<(Response,)> {
    let list = warp::path!("v1" / "topics")
        .and(warp::get())
        .and(with_context(context))
        .and(authenticated(context))
        .then(|context: Context, principal: Principal| async move {
            let topics: Vec<Value> = context
                .broker
                .list_topics(&principal)
                .iter()
                .map(|view| topic_json(&context, view))
                .collect();
            json(StatusCode::OK, &json_value!({ "topics": topics }))
        });

    let create = warp::path!("v1" / "topics")
        .and(warp::post())
        .and(with_context(context))
        .and(authenticated(context))
        .and(body(context))
        .then(|context: Context, principal: Principal, body: Bytes| {
            respond(async move {
                let request: CreateTopicBody = parse_json(&body)?;
                let request = CreateTopic {
                    name: request.name,
                    access: request.access,
                    partitions: request.partitions,
                    replication_factor: request.replication_factor,
                    retention_ms: request.retention_ms,
                    retention_bytes: request.retention_bytes,
                    segment_bytes: request.segment_bytes,
                    cleanup: request.cleanup,
                    message_ttl_ms: request.message_ttl_ms,
                };
                let view = context.broker.create_topic(&principal, request).await?;
                Ok(json(StatusCode::CREATED, &topic_json(&context, &view)))
            })
        });

    let describe = warp::path!("v1" / "topics" / String)
        .and(warp::get())
        .and(with_context(context))
        .and(authenticated(context))
        .then(|name: String, context: Context, principal: Principal| {
            respond(async move {
                let view = context.broker.describe_topic(&principal, &name)?;
                Ok(json(StatusCode::OK, &topic_json(&context, &view)))
            })
        });

    let delete = warp::path!("v1" / "topics" / String)
        .and(warp::delete())
        .and(with_context(context))
        .and(authenticated(context))
        .then(|name: String, context: Context, principal: Principal| {
            respond(async move {
                context.broker.delete_topic(&principal, &name).await?;
                Ok(no_content())
            })
        });

    let publish = warp::path!("v1" / "topics" / String / "messages")
        .and(warp::post())
        .and(with_context(context))
        .and(authenticated(context))
        .and(query())
        .and(body(context))
        .then(
            |name: String, context: Context, principal: Principal, raw: String, body: Bytes| {
                respond(async move {
                    let broker = &context.broker;
                    let store = |request| broker.publish(&principal, &name, request);
                    store_messages(&context, &raw, &body, store).await
                })
            },
        );

    let fetch = warp::path!("v1" / "topics" / String / "partitions" / String / "messages")
        .and(warp::get())
        .and(with_context(context))
        .and(authenticated(context))
        .and(query())
        .then(
            |name: String,
             partition: String,
             context: Context,
             principal: Principal,
             raw: String| {
                respond(async move {
                    let partition: u32 = path_number("partition", &partition)?;
                    let mut query = Query::parse(&raw)?;
                    let offset = query.get::<u64>("offset", "a non-negative integer")?;
                    let limits = fetch_limits(&mut query)?;
                    query.finish()?;
                    let result = context
                        .broker
                        .fetch(&principal, &name, partition, offset, limits)
                        .await?;
                    context
                        .metrics
                        .count_delivered(result.messages.len() as u64);
                    let body = messages_json(
                        &result.messages,
                        &[
                            ("next_offset", result.next_offset),
                            ("high_watermark", result.high_watermark),
                        ],
                    );
                    Ok(raw_json(StatusCode::OK, body))
                })
            },
        );

    let offset_for_time = warp::path!("v1" / "topics" / String / "partitions" / String / "offset")
        .and(warp::get())
        .and(with_context(context))
        .and(authenticated(context))
        .and(query())
        .then(
            |name: String,
             partition: String,
             context: Context,
             principal: Principal,
             raw: String| {
                respond(async move {
                    let partition: u32 = path_number("partition", &partition)?;
                    let mut query = Query::parse(&raw)?;
                    let timestamp = query
                        .get::<i64>("timestamp", "a time in ms since the Unix epoch")?
                        .ok_or_else(|| {
                            ApiError::invalid("timestamp", "is missing: give ?timestamp=<ms since the Unix epoch>")
                        })?;
                    query.finish()?;
                    let (offset, found) = context
                        .broker
                        .offset_for_timestamp(&principal, &name, partition, timestamp)?;
                    Ok(json(
                        StatusCode::OK,
                        &json_value!({"partition": partition, "offset": offset, "timestamp": found}),
                    ))
                })
            },
        );

    list.or(create)
        .unify()
        .or(offset_for_time)
        .unify()
        .or(describe)
        .unify()
        .or(delete)
        .unify()
        .or(publish)
        .unify()
        .or(fetch)
        .unify()
        .boxed()
}

/// Reads `max_messages`, `max_bytes` and `wait_ms` from a fetch query.
fn fetch_limits(query: &mut Query) -> Result<FetchLimits, crate::api::error::ApiError> {
    let max_messages = bounded(
        query,
        "max_messages",
        DEFAULT_MAX_MESSAGES as u64,
        1,
        MAX_MAX_MESSAGES as u64,
    )?;
    let max_bytes = bounded(
        query,
        "max_bytes",
        DEFAULT_MAX_BYTES as u64,
        1,
        MAX_MAX_BYTES as u64,
    )?;
    let wait_ms = bounded(query, "wait_ms", 0, 0, MAX_WAIT.as_millis() as u64)?;
    Ok(FetchLimits {
        max_messages: max_messages as usize,
        max_bytes: max_bytes as usize,
        wait: Duration::from_millis(wait_ms),
    })
}

/// Reads an integer query parameter within `min..=max`, or `default`.
pub(crate) fn bounded(
    query: &mut Query,
    name: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, crate::api::error::ApiError> {
    let value = query
        .get::<u64>(name, "a non-negative integer")?
        .unwrap_or(default);
    if !(min..=max).contains(&value) {
        return Err(crate::api::error::ApiError::invalid(
            name,
            format!("{value} is outside {min}..={max}"),
        ));
    }
    Ok(value)
}

fn topic_json(context: &Context, view: &TopicView) -> Value {
    let spec = &view.spec;
    // A single broker leads everything as broker 0 in epoch 0.
    let (leader, leader_epoch) = match &context.cluster {
        Some(cluster) => {
            let key = crate::cluster::state::resource_key("topic", spec.id);
            match cluster.coordinator.view().leader_of(&key) {
                Some((leader, epoch)) => (json_value!(leader), json_value!(epoch)),
                None => (Value::Null, Value::Null),
            }
        }
        None => (json_value!(0), json_value!(0)),
    };
    let partitions: Vec<Value> = view
        .partitions
        .iter()
        .map(|partition| {
            json_value!({
                "partition": partition.partition,
                "start_offset": partition.start_offset,
                "end_offset": partition.end_offset,
                "leader": leader,
                "leader_epoch": leader_epoch,
            })
        })
        .collect();
    json_value!({
        "name": spec.name,
        "owner": spec.owner,
        "access": spec.access,
        "partition_count": spec.partitions,
        "replication_factor": spec.replication_factor,
        "segment_bytes": spec.segment_bytes,
        "cleanup": spec.cleanup,
        "message_ttl_ms": spec.message_ttl_ms,
        "retention_ms": spec.retention_ms,
        "retention_bytes": spec.retention_bytes,
        "created_at": rfc3339_ms(spec.created_ms),
        "partitions": partitions,
        "subscriptions": view.subscriptions,
    })
}
