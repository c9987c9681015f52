//! `/v1/queues/{q}/bindings`: bind a queue to a topic with a routing-key
//! pattern, list a queue's bindings, and remove one.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json as json_value, Value};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

use crate::api::request::parse_json;
use crate::api::{
    authenticated, body, json, no_content, path_number, respond, rfc3339_ms, with_context, Context,
};
use crate::broker::Principal;
use crate::meta::BindingSpec;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBindingBody {
    topic: String,
    pattern: String,
}

/// Builds the binding routes.
pub fn routes(context: &Context) -> BoxedFilter<(Response,)> {
    let list = warp::path!("v1" / "queues" / String / "bindings")
        .and(warp::get())
        .and(with_context(context))
        .and(authenticated(context))
        .then(|queue: String, context: Context, principal: Principal| {
            respond(async move {
                let bindings = context.broker.list_bindings(&principal, &queue)?;
                let bindings: Vec<Value> = bindings.iter().map(binding_json).collect();
                Ok(json(StatusCode::OK, &json_value!({ "bindings": bindings })))
            })
        });

    let create = warp::path!("v1" / "queues" / String / "bindings")
        .and(warp::post())
        .and(with_context(context))
        .and(authenticated(context))
        .and(body(context))
        .then(
            |queue: String, context: Context, principal: Principal, body: Bytes| {
                respond(async move {
                    let request: CreateBindingBody = parse_json(&body)?;
                    let binding = context
                        .broker
                        .create_binding(&principal, &queue, &request.topic, &request.pattern)
                        .await?;
                    Ok(json(StatusCode::CREATED, &binding_json(&binding)))
                })
            },
        );

    let delete = warp::path!("v1" / "queues" / String / "bindings" / String)
        .and(warp::delete())
        .and(with_context(context))
        .and(authenticated(context))
        .then(
            |queue: String, id: String, context: Context, principal: Principal| {
                respond(async move {
                    let id: u64 = path_number("binding id", &id)?;
                    context
                        .broker
                        .delete_binding(&principal, &queue, id)
                        .await?;
                    Ok(no_content())
                })
            },
        );

    list.or(create).unify().or(delete).unify().boxed()
}

fn binding_json(binding: &BindingSpec) -> Value {
    json_value!({
        "id": binding.id,
        "queue": binding.queue,
        "topic": binding.topic,
        "pattern": binding.pattern,
        "owner": binding.owner,
        "created_at": rfc3339_ms(binding.created_ms),
    })
}
