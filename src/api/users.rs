//! `POST /v1/users` (register), `POST /v1/tokens` (log in) and
//! `DELETE /v1/tokens/current` (log out).

use bytes::Bytes;
use serde::Deserialize;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

use crate::api::request::parse_json;
use crate::api::{authenticated, body, json, no_content, respond, with_context, Context};
use crate::broker::Principal;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    username: String,
    password: String,
}

/// The user and token routes.
pub fn routes(context: &Context) -> BoxedFilter<(Response,)> {
    let register = warp::path!("v1" / "users")
        .and(warp::post())
        .and(with_context(context))
        .and(body(context))
        .then(|context: Context, body: Bytes| {
            respond(async move {
                let credentials: Credentials = parse_json(&body)?;
                context
                    .broker
                    .register(&credentials.username, &credentials.password)
                    .await?;
                Ok(json(
                    StatusCode::CREATED,
                    &serde_json::json!({ "username": credentials.username }),
                ))
            })
        });

    let login = warp::path!("v1" / "tokens")
        .and(warp::post())
        .and(with_context(context))
        .and(body(context))
        .then(|context: Context, body: Bytes| {
            respond(async move {
                let credentials: Credentials = parse_json(&body)?;
                let token = context
                    .broker
                    .login(&credentials.username, &credentials.password)
                    .await?;
                let expires_at = crate::api::rfc3339_ms(token.expires_at as i64 * 1000);
                Ok(json(
                    StatusCode::CREATED,
                    &serde_json::json!({ "token": token.token, "expires_at": expires_at }),
                ))
            })
        });

    let logout = warp::path!("v1" / "tokens" / "current")
        .and(warp::delete())
        .and(with_context(context))
        .and(authenticated(context))
        .then(|context: Context, principal: Principal| {
            respond(async move {
                context.broker.logout(&principal).await?;
                Ok(no_content())
            })
        });

    register.or(login).unify().or(logout).unify().boxed()
}
