//! gRPC clients for the other brokers, one lazily connected channel per
//! address, each call carrying the cluster secret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::cluster::proto::forwarding_client::ForwardingClient;
use crate::cluster::proto::replication_client::ReplicationClient;

/// Metadata entry that carries the cluster's gRPC token.
pub const SECRET_HEADER: &str = "x-ferry-cluster-secret";

/// Time limit for connecting to another broker.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Adds the cluster token to every call.
#[derive(Clone)]
pub struct AddSecret {
    token: MetadataValue<tonic::metadata::Ascii>,
}

impl tonic::service::Interceptor for AddSecret {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert(SECRET_HEADER, self.token.clone());
        Ok(request)
    }
}

/// A replication client for one broker.
pub type ReplicationPeer = ReplicationClient<InterceptedService<Channel, AddSecret>>;

/// A forwarding client for one broker.
pub type ForwardingPeer = ForwardingClient<InterceptedService<Channel, AddSecret>>;

/// Channels to the other brokers by gRPC address.
pub struct Peers {
    secret: AddSecret,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Peers {
    /// Creates a pool whose calls carry `grpc_token`.
    pub fn new(grpc_token: &str) -> Arc<Peers> {
        let token = grpc_token
            .parse()
            .expect("the gRPC token is hex, a valid metadata value");
        Arc::new(Peers {
            secret: AddSecret { token },
            channels: Mutex::new(HashMap::new()),
        })
    }

    fn channel(&self, address: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|err| {
                Status::invalid_argument(format!("invalid broker address {address}: {err}"))
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .initial_stream_window_size(crate::cluster::rpc::WINDOW_BYTES)
            .initial_connection_window_size(crate::cluster::rpc::WINDOW_BYTES * 2);
        let channel = endpoint.connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    /// Returns a replication client for the broker at `address`.
    pub fn replication(&self, address: &str) -> Result<ReplicationPeer, Status> {
        let channel = self.channel(address)?;
        Ok(
            ReplicationClient::with_interceptor(channel, self.secret.clone())
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        )
    }

    /// Returns a forwarding client for the broker at `address`.
    pub fn forwarding(&self, address: &str) -> Result<ForwardingPeer, Status> {
        let channel = self.channel(address)?;
        Ok(
            ForwardingClient::with_interceptor(channel, self.secret.clone())
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        )
    }
}
