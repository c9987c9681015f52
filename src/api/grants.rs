//! `POST` and `DELETE /v1/{topics,queues}/{name}/grants`: the owner grants
//! or revokes `publish`/`consume` on a private resource.

use bytes::Bytes;
use serde::Deserialize;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::Filter;

use crate::api::error::ApiError;
use crate::api::request::parse_json;
use crate::api::{authenticated, body, no_content, respond, with_context, Context};
use crate::broker::Principal;
use crate::meta::{Permission, ResourceKind};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    user: String,
    permission: Permission,
}

/// The grant routes of topics and queues.
pub fn routes(context: &Context) -> BoxedFilter<(Response,)> {
    let kind = warp::path("v1").and(
        warp::path("topics")
            .map(|| ResourceKind::Topic)
            .or(warp::path("queues").map(|| ResourceKind::Queue))
            .unify(),
    );
    let add = warp::post()
        .map(|| true)
        .or(warp::delete().map(|| false))
        .unify();
    kind.and(warp::path::param::<String>())
        .and(warp::path("grants"))
        .and(warp::path::end())
        .and(add)
        .and(with_context(context))
        .and(authenticated(context))
        .and(body(context))
        .then(
            |kind: ResourceKind,
             name: String,
             add: bool,
             context: Context,
             principal: Principal,
             body: Bytes| {
                respond(async move {
                    let grant: GrantBody = parse_json(&body)?;
                    context
                        .broker
                        .set_grant(&principal, kind, &name, &grant.user, grant.permission, add)
                        .await
                        .map_err(ApiError::from)?;
                    Ok(no_content())
                })
            },
        )
        .boxed()
}
