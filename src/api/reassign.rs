//! `POST /v1/cluster/reassign`: move the replicas of a topic or queue to
//! other brokers (cluster only).

use serde::Deserialize;
use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

use crate::api::error::ApiError;
use crate::api::request::parse_json;
use crate::api::{authenticated, body, json, respond, with_context, Context};
use crate::broker::Principal;
use crate::meta::ResourceKind;

/// The request body: exactly one of `topic` and `queue`, and the brokers
/// that should hold its replicas, the preferred leader first.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reassign {
    topic: Option<String>,
    queue: Option<String>,
    replicas: Vec<u32>,
}

/// The reassign route.
pub fn routes(context: &Context) -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "cluster" / "reassign")
        .and(warp::post())
        .and(with_context(context))
        .and(authenticated(context))
        .and(body(context))
        .then(
            |context: Context, principal: Principal, body: bytes::Bytes| {
                respond(async move {
                    let Some(cluster) = &context.cluster else {
                        return Err(ApiError::invalid(
                        "request",
                        "this broker runs alone (no --zookeeper), so there are no replicas to move",
                    ));
                    };
                    let request: Reassign = parse_json(&body)?;
                    let (kind, name) = match (request.topic, request.queue) {
                        (Some(topic), None) => (ResourceKind::Topic, topic),
                        (None, Some(queue)) => (ResourceKind::Queue, queue),
                        _ => {
                            return Err(ApiError::invalid(
                                "topic/queue",
                                "give exactly one of `topic` and `queue`",
                            ))
                        }
                    };
                    let key = cluster
                        .reassign(&principal, kind, &name, request.replicas.clone())
                        .await?;
                    Ok(json(
                        StatusCode::ACCEPTED,
                        &json!({"resource": key, "target_replicas": request.replicas}),
                    ))
                })
            },
        )
        .boxed()
}
