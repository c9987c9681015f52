//! `/healthz`, `/metrics` (Prometheus text format), `/v1/cluster` and
//! `/v1/openapi.json`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json as json_value;
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Filter;

use crate::api::{authenticated, json, with_context, Context};
use crate::broker::Principal;

/// The API description served at `/v1/openapi.json`.
const OPENAPI: &str = include_str!("openapi.json");

/// Counters exported at `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    messages_published: AtomicU64,
    bytes_published: AtomicU64,
    messages_delivered: AtomicU64,
    responses: [AtomicU64; 5],
}

impl Metrics {
    /// Counts messages stored by a publish or send.
    pub fn count_published(&self, messages: u64, bytes: u64) {
        self.messages_published
            .fetch_add(messages, Ordering::Relaxed);
        self.bytes_published.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts messages handed to consumers.
    pub fn count_delivered(&self, messages: u64) {
        self.messages_delivered
            .fetch_add(messages, Ordering::Relaxed);
    }

    /// Counts a response by status class (1xx to 5xx).
    pub fn count_response(&self, status: StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            ));
        };
        counter(
            &mut out,
            "ferry_corrupt_batch_reads_total",
            "Reads refused because a stored batch failed its checks.",
            crate::broker::durable::CORRUPT_READS.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "ferry_messages_published_total",
            "Messages stored by publish and send requests.",
            self.messages_published.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "ferry_message_bytes_published_total",
            "Bytes of message values stored by publish and send requests.",
            self.bytes_published.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "ferry_messages_delivered_total",
            "Messages returned by fetch, pull and receive requests.",
            self.messages_delivered.load(Ordering::Relaxed),
        );
        out.push_str("# HELP ferry_http_responses_total HTTP responses by status class.\n");
        out.push_str("# TYPE ferry_http_responses_total counter\n");
        for (index, count) in self.responses.iter().enumerate() {
            out.push_str(&format!(
                "ferry_http_responses_total{{class=\"{}xx\"}} {}\n",
                index + 1,
                count.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

/// Describes the MySQL mirror for `GET /v1/cluster`: `null` without
/// `--mysql-url`, else the broker that runs it and, on that broker, its
/// state and the lag of each log `principal` may see.
fn mirror_json(context: &Context, principal: &Principal, holder: Option<u32>) -> serde_json::Value {
    let Some(mirror) = &context.mirror else {
        return serde_json::Value::Null;
    };
    let visible = |id| crate::api::cluster::is_visible(&context.broker, id, principal);
    let mut description = mirror.describe(visible);
    description["broker"] = json_value!(holder);
    description
}

/// The health, metrics, cluster and API description routes.
pub fn routes(context: &Context) -> BoxedFilter<(Response,)> {
    let health = warp::path!("healthz")
        .and(warp::get())
        .map(|| json(StatusCode::OK, &json_value!({ "status": "ok" })));

    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_context(context))
        .map(|context: Context| {
            let mut text = context.metrics.render();
            if let Some(mirror) = &context.mirror {
                text.push_str(&mirror.render_metrics());
            }
            let mut response = Response::new(text.into());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        });

    let cluster = warp::path!("v1" / "cluster")
        .and(warp::get())
        .and(with_context(context))
        .and(authenticated(context))
        .then(|context: Context, principal: Principal| async move {
            if let Some(cluster) = &context.cluster {
                let mut description = crate::api::cluster::describe(cluster, &principal).await;
                let holder = cluster.coordinator.view().mirror;
                description["mirror"] = mirror_json(&context, &principal, holder);
                return json(StatusCode::OK, &description);
            }
            let listen = context.broker.config().listen.to_string();
            let partitions: Vec<serde_json::Value> = context
                .broker
                .list_topics(&principal)
                .iter()
                .flat_map(|view| {
                    view.partitions.iter().map(move |partition| {
                        json_value!({
                            "topic": view.spec.name,
                            "partition": partition.partition,
                            "leader": 0,
                            "leader_epoch": 0,
                            "isr": [0],
                            "high_watermark": partition.end_offset,
                        })
                    })
                })
                .collect();
            json(
                StatusCode::OK,
                &json_value!({
                    "brokers": [{ "id": 0, "rest": listen, "grpc": null, "alive": true }],
                    "controller": 0,
                    "partitions": partitions,
                    "mirror": mirror_json(&context, &principal, Some(0)),
                }),
            )
        });

    let openapi = warp::path!("v1" / "openapi.json").and(warp::get()).map(|| {
        let mut response = Response::new(OPENAPI.into());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    });

    health
        .or(metrics)
        .unify()
        .or(cluster)
        .unify()
        .or(openapi)
        .unify()
        .boxed()
}
