//! `/v1/topics/{t}/subscriptions`: list, create, delete, pull and commit.

use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json as json_value, Value};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

use crate::api::request::{parse_json, Query};
use crate::api::topics::bounded;
use crate::api::wire::messages_json;
use crate::api::{
    authenticated, body, json, no_content, query, raw_json, respond, rfc3339_ms, with_context,
    Context,
};
use crate::broker::queues::MAX_RECEIVE_MESSAGES;
use crate::broker::{Principal, SubscriptionView, MAX_WAIT};
use crate::meta::StartPosition;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSubscriptionBody {
    name: String,
    pattern: Option<String>,
    #[serde(default)]
    start: StartPosition,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitBody {
    offsets: Vec<PartitionOffset>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionOffset {
    partition: u32,
    offset: u64,
}

/// The subscription routes.
pub fn routes(context: &Context) -> BoxedFilter<(Response,)> {
    let list = warp::path!("v1" / "topics" / String / "subscriptions")
        .and(warp::get())
        .and(with_context(context))
        .and(authenticated(context))
        .then(|topic: String, context: Context, principal: Principal| {
            respond(async move {
                let views = context.broker.list_subscriptions(&principal, &topic)?;
                let subscriptions: Vec<Value> = views.iter().map(subscription_json).collect();
                Ok(json(
                    StatusCode::OK,
                    &json_value!({ "subscriptions": subscriptions }),
                ))
            })
        });

    let create = warp::path!("v1" / "topics" / String / "subscriptions")
        .and(warp::post())
        .and(with_context(context))
        .and(authenticated(context))
        .and(body(context))
        .then(
            |topic: String, context: Context, principal: Principal, body: Bytes| {
                respond(async move {
                    let request: CreateSubscriptionBody = parse_json(&body)?;
                    let view = context
                        .broker
                        .create_subscription(
                            &principal,
                            &topic,
                            &request.name,
                            request.pattern,
                            request.start,
                        )
                        .await?;
                    Ok(json(StatusCode::CREATED, &subscription_json(&view)))
                })
            },
        );

    let delete = warp::path!("v1" / "topics" / String / "subscriptions" / String)
        .and(warp::delete())
        .and(with_context(context))
        .and(authenticated(context))
        .then(
            |topic: String, name: String, context: Context, principal: Principal| {
                respond(async move {
                    context
                        .broker
                        .delete_subscription(&principal, &topic, &name)
                        .await?;
                    Ok(no_content())
                })
            },
        );

    let pull = warp::path!("v1" / "topics" / String / "subscriptions" / String / "messages")
        .and(warp::get())
        .and(with_context(context))
        .and(authenticated(context))
        .and(query())
        .then(
            |topic: String, name: String, context: Context, principal: Principal, raw: String| {
                respond(async move {
                    let mut query = Query::parse(&raw)?;
                    let max_messages = bounded(
                        &mut query,
                        "max_messages",
                        100,
                        1,
                        MAX_RECEIVE_MESSAGES as u64,
                    )?;
                    let wait_ms =
                        bounded(&mut query, "wait_ms", 0, 0, MAX_WAIT.as_millis() as u64)?;
                    query.finish()?;
                    let messages = context
                        .broker
                        .pull(
                            &principal,
                            &topic,
                            &name,
                            max_messages as usize,
                            Duration::from_millis(wait_ms),
                        )
                        .await?;
                    context.metrics.count_delivered(messages.len() as u64);
                    Ok(raw_json(StatusCode::OK, messages_json(&messages, &[])))
                })
            },
        );

    let commit = warp::path!("v1" / "topics" / String / "subscriptions" / String / "offsets")
        .and(warp::post())
        .and(with_context(context))
        .and(authenticated(context))
        .and(body(context))
        .then(
            |topic: String, name: String, context: Context, principal: Principal, body: Bytes| {
                respond(async move {
                    let request: CommitBody = parse_json(&body)?;
                    let offsets: Vec<(u32, u64)> = request
                        .offsets
                        .iter()
                        .map(|entry| (entry.partition, entry.offset))
                        .collect();
                    context
                        .broker
                        .commit(&principal, &topic, &name, &offsets)
                        .await?;
                    Ok(no_content())
                })
            },
        );

    list.or(create)
        .unify()
        .or(delete)
        .unify()
        .or(pull)
        .unify()
        .or(commit)
        .unify()
        .boxed()
}

fn subscription_json(view: &SubscriptionView) -> Value {
    let spec = &view.spec;
    let committed: Vec<Value> = view
        .committed
        .iter()
        .map(|(partition, offset)| json_value!({ "partition": partition, "offset": offset }))
        .collect();
    json_value!({
        "name": spec.name,
        "topic": spec.topic,
        "owner": spec.owner,
        "pattern": spec.pattern,
        "start": spec.start,
        "created_at": rfc3339_ms(spec.created_ms),
        "committed": committed,
    })
}
