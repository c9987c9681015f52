//! Runs a REST request through this broker's own routes and collects the
//! response: for requests other brokers forward here, and for routes built
//! from other routes (the event stream pulls and commits this way, so in a
//! cluster it reaches the subscription's leader like any client request).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::BodyExt;
use tower_service::Service;
use tracing::warn;
use warp::filters::BoxedFilter;
use warp::http::{Request, Response};

/// Runs one REST request through the broker's routes.
pub type HttpHandler =
    Arc<dyn Fn(Request<Bytes>) -> BoxFuture<'static, Response<Bytes>> + Send + Sync>;

/// The handler that runs requests through `routes`.
///
/// Each request runs in a task of its own: warp keeps the request being
/// routed in a task-local slot, so a route may not run another request in
/// its own task.
pub fn handler(routes: BoxedFilter<(warp::reply::Response,)>) -> HttpHandler {
    Arc::new(move |request: Request<Bytes>| {
        let mut service = warp::service(routes.clone());
        Box::pin(async move {
            let request = request.map(http_body_util::Full::new);
            let routed = tokio::spawn(async move {
                match service.call(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            });
            let response = match routed.await {
                Ok(response) => response,
                Err(err) => {
                    warn!(error = %err, "an internal request failed");
                    let mut response = warp::reply::Response::new(Default::default());
                    *response.status_mut() = warp::http::StatusCode::INTERNAL_SERVER_ERROR;
                    response
                }
            };
            let (parts, body) = response.into_parts();
            let bytes = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(err) => {
                    warn!(error = %err, "failed to read the response of an internal request");
                    Bytes::new()
                }
            };
            Response::from_parts(parts, bytes)
        })
    })
}
