//! The gRPC server other brokers call: replication and forwarding.
//!
//! The server starts before the broker joins the cluster, because the
//! broker announces the bound address; until [`RpcState`] has the cluster,
//! calls get `UNAVAILABLE`.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::net::TcpListener;

use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::cluster::node::{error_to_failure, resource_id, Cluster};
use crate::cluster::peers::SECRET_HEADER;
use crate::cluster::proto::forwarding_server::{Forwarding, ForwardingServer};
use crate::cluster::proto::replication_server::{Replication, ReplicationServer};
use crate::cluster::proto::stream_frame::Frame;
use crate::cluster::proto::{
    AppendToQueueRequest, AppendToQueueResponse, CommitMetaRequest, CommitMetaResponse,
    DescribeLogsRequest, DescribeLogsResponse, EpochEnd, EpochEndOffsetsRequest,
    EpochEndOffsetsResponse, FetchRequest, FetchResponse, Header, HttpRequest, HttpResponse,
    LogStatus, ReplicaError, StreamFrame,
};
use crate::cluster::secret::ClusterSecret;
use crate::cluster::{leader, streams};
use crate::meta::MetaEvent;

pub use crate::api::loopback::HttpHandler;

/// HTTP/2 flow-control window per stream: one fetch response carries up
/// to a few MiB, which the 64 KiB default would cut into many round trips.
pub const WINDOW_BYTES: u32 = 8 << 20;

/// Header with the number of brokers that forwarded a request, for the REST
/// routes.
pub const HOPS_HEADER: &str = "x-ferry-forwarded-hops";

/// The broker state the gRPC services use once the broker is up.
#[derive(Default)]
pub struct RpcState {
    /// The cluster, set once it started.
    pub cluster: OnceLock<Arc<Cluster>>,
    /// The REST routes, set once they are built.
    pub http: OnceLock<HttpHandler>,
}

impl RpcState {
    fn cluster(&self) -> Result<&Arc<Cluster>, Status> {
        self.cluster
            .get()
            .ok_or_else(|| Status::unavailable("the broker is starting"))
    }
}

/// Binds the gRPC listener; returns its address and a future that serves
/// it until the process ends.
pub async fn bind(
    address: SocketAddr,
    secret: &ClusterSecret,
    state: Arc<RpcState>,
) -> std::io::Result<(SocketAddr, BoxFuture<'static, ()>)> {
    let listener = TcpListener::bind(address).await?;
    let local = listener.local_addr()?;
    let check = {
        let secret = secret.clone();
        move |request: Request<()>| -> Result<Request<()>, Status> {
            let token = request
                .metadata()
                .get(SECRET_HEADER)
                .map(|value| value.as_bytes())
                .unwrap_or_default();
            if secret.accepts(token) {
                Ok(request)
            } else {
                Err(Status::unauthenticated(
                    "missing or wrong cluster secret; every broker needs the same --cluster-secret-file",
                ))
            }
        }
    };
    let replication = ReplicationServer::new(Service(Arc::clone(&state)))
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let replication =
        tonic::service::interceptor::InterceptedService::new(replication, check.clone());
    let forwarding = ForwardingServer::new(Service(state))
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let forwarding = tonic::service::interceptor::InterceptedService::new(forwarding, check);
    // The builder's TCP_NODELAY applies only to listeners it binds itself.
    // Without it, Nagle's algorithm and delayed ACKs held small HTTP/2
    // frames for about 40 ms each, which made every replication round
    // take about 88 ms under load.
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |stream| {
            stream.inspect(|stream| {
                let _ = stream.set_nodelay(true);
            })
        },
    );
    info!(grpc = %local, "gRPC listening");
    let serve = async move {
        let result = tonic::transport::Server::builder()
            .initial_stream_window_size(WINDOW_BYTES)
            .initial_connection_window_size(WINDOW_BYTES * 2)
            .add_service(replication)
            .add_service(forwarding)
            .serve_with_incoming(incoming)
            .await;
        if let Err(err) = result {
            warn!(error = %err, "gRPC server stopped");
        }
    };
    Ok((local, Box::pin(serve)))
}

struct Service(Arc<RpcState>);

#[tonic::async_trait]
impl Replication for Service {
    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        let cluster = self.0.cluster()?;
        Ok(Response::new(
            leader::handle_fetch(cluster, request.into_inner()).await,
        ))
    }

    async fn epoch_end_offsets(
        &self,
        request: Request<EpochEndOffsetsRequest>,
    ) -> Result<Response<EpochEndOffsetsResponse>, Status> {
        let cluster = self.0.cluster()?;
        let request = request.into_inner();
        let error = |error: ReplicaError| {
            Ok(Response::new(EpochEndOffsetsResponse {
                error: error as i32,
                logs: Vec::new(),
            }))
        };
        let Some(term) = cluster.leader_term(&request.resource) else {
            return error(ReplicaError::NotLeader);
        };
        if request.leader_epoch != term.leader_epoch {
            return error(if request.leader_epoch < term.leader_epoch {
                ReplicaError::FencedLeaderEpoch
            } else {
                ReplicaError::UnknownLeaderEpoch
            });
        }
        let Some(logs) = cluster.broker.leader_logs(resource_id(&request.resource)) else {
            return error(ReplicaError::NotLeader);
        };
        let ends = request
            .logs
            .iter()
            .filter_map(|wanted| {
                let (_, log) = logs.iter().find(|(name, _)| *name == wanted.log)?;
                let end = log.partition_log().epoch_end_offset(wanted.epoch);
                Some(EpochEnd {
                    log: wanted.log.clone(),
                    found: end.is_some(),
                    epoch: end.map_or(0, |(epoch, _)| epoch),
                    end_offset: end.map_or(0, |(_, offset)| offset),
                })
            })
            .collect();
        Ok(Response::new(EpochEndOffsetsResponse {
            error: ReplicaError::None as i32,
            logs: ends,
        }))
    }

    async fn describe_logs(
        &self,
        _request: Request<DescribeLogsRequest>,
    ) -> Result<Response<DescribeLogsResponse>, Status> {
        let cluster = self.0.cluster()?;
        Ok(Response::new(DescribeLogsResponse {
            logs: describe_local_logs(cluster),
        }))
    }
}

/// Lists the logs this broker leads or follows, with their offsets.
pub fn describe_local_logs(cluster: &Cluster) -> Vec<LogStatus> {
    let mut statuses = Vec::new();
    let view = cluster.coordinator.view();
    for key in cluster.leading_keys() {
        let Some(term) = cluster.leader_term(&key) else {
            continue;
        };
        for (name, log) in cluster
            .broker
            .leader_logs(resource_id(&key))
            .unwrap_or_default()
        {
            statuses.push(LogStatus {
                resource: key.clone(),
                log: name,
                leader: true,
                leader_epoch: term.leader_epoch,
                log_start_offset: log.log_start_offset(),
                log_end_offset: log.log_end_offset(),
                high_watermark: log.high_watermark(),
            });
        }
    }
    let followed = cluster
        .follower_high_watermarks
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    for ((key, log), high_watermark) in followed {
        if cluster.leader_term(&key).is_some() {
            continue;
        }
        statuses.push(LogStatus {
            leader_epoch: view
                .resources
                .get(&key)
                .map_or(0, |state| state.value.leader_epoch),
            resource: key,
            log,
            leader: false,
            log_start_offset: 0,
            log_end_offset: 0,
            high_watermark,
        });
    }
    statuses
}

type FrameStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<StreamFrame, Status>> + Send>>;

#[tonic::async_trait]
impl Forwarding for Service {
    async fn forward(
        &self,
        request: Request<HttpRequest>,
    ) -> Result<Response<HttpResponse>, Status> {
        let handler = self
            .0
            .http
            .get()
            .ok_or_else(|| Status::unavailable("the broker is starting"))?;
        let request = request.into_inner();
        let http_request = to_http_request(request)?;
        let response = handler(http_request).await;
        Ok(Response::new(from_http_response(response)))
    }

    type ForwardStreamStream = FrameStream;

    async fn forward_stream(
        &self,
        request: Request<tonic::Streaming<StreamFrame>>,
    ) -> Result<Response<Self::ForwardStreamStream>, Status> {
        use futures_util::StreamExt;

        let cluster = self.0.cluster()?;
        let mut incoming = request.into_inner();
        let open = match incoming.next().await {
            Some(Ok(StreamFrame {
                frame: Some(Frame::Open(open)),
            })) => open,
            _ => return Err(Status::invalid_argument("the first frame must be `open`")),
        };
        let config = cluster.broker.config();
        if config.tls.is_some() {
            // NOTE: the leader opens the stream on its own listener, which
            // with TLS would need a client certificate check of itself.
            return Err(Status::unimplemented(
                "streams are not forwarded to a broker that serves REST over TLS; \
                 connect to the leader directly",
            ));
        }
        let (outgoing, frames) = streams::response_channel();
        tokio::spawn(streams::serve_forwarded_stream(
            config.listen,
            open,
            incoming,
            outgoing,
        ));
        Ok(Response::new(Box::pin(frames)))
    }

    async fn commit_meta(
        &self,
        request: Request<CommitMetaRequest>,
    ) -> Result<Response<CommitMetaResponse>, Status> {
        let cluster = self.0.cluster()?;
        let event: MetaEvent =
            serde_json::from_slice(&request.into_inner().event).map_err(|err| {
                Status::invalid_argument(format!("undecodable metadata event: {err}"))
            })?;
        let response = match cluster.broker.commit_forwarded_meta(event).await {
            Ok(offset) => CommitMetaResponse {
                offset,
                failure: None,
            },
            Err(err) => CommitMetaResponse {
                offset: 0,
                failure: Some(error_to_failure(&err)),
            },
        };
        Ok(Response::new(response))
    }

    async fn append_to_queue(
        &self,
        request: Request<AppendToQueueRequest>,
    ) -> Result<Response<AppendToQueueResponse>, Status> {
        let cluster = self.0.cluster()?;
        let request = request.into_inner();
        let batch = crate::log::decode_batch(&request.batch)
            .map_err(|err| Status::invalid_argument(format!("undecodable batch: {err}")))?;
        let result = cluster
            .broker
            .append_to_led_queue(
                &request.queue,
                request.queue_id,
                batch.records,
                request.producer_id,
                request.first_sequence,
            )
            .await;
        Ok(Response::new(AppendToQueueResponse {
            failure: result.err().map(|err| error_to_failure(&err)),
        }))
    }
}

fn to_http_request(request: HttpRequest) -> Result<warp::http::Request<Bytes>, Status> {
    let mut builder = warp::http::Request::builder()
        .method(request.method.as_str())
        .uri(request.path_and_query.as_str());
    for header in &request.headers {
        builder = builder.header(header.name.as_str(), header.value.as_ref());
    }
    builder = builder.header(HOPS_HEADER, request.hops.to_string());
    builder
        .body(request.body)
        .map_err(|err| Status::invalid_argument(format!("invalid forwarded request: {err}")))
}

fn from_http_response(response: warp::http::Response<Bytes>) -> HttpResponse {
    let (parts, body) = response.into_parts();
    HttpResponse {
        status: parts.status.as_u16() as u32,
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| Header {
                name: name.to_string(),
                value: Bytes::copy_from_slice(value.as_bytes()),
            })
            .collect(),
        body,
    }
}
